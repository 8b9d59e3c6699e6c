import t from 'tap'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance } from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { portcullisSchemaValidate, type SchemaValidateOptions } from '../src/index.js'
import { ORDERS_31, json } from './helpers.js'

const SPLIT = fileURLToPath(new URL('./fixtures/split/api.yaml', import.meta.url))

async function appWith (options: SchemaValidateOptions): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisSchemaValidate, options)
  return app
}

t.test('a document split over files: the files it refers to are read, and their schemas enforced', async (t) => {
  const app = await appWith({ openapi: SPLIT })
  app.post('/pets', async (_request, reply) => reply.code(201).send({ name: 'Rex' }))
  t.equal((await app.inject({ method: 'POST', url: '/pets', ...json({ name: 'Rex', owner: { email: 'ann@example.com' } }) })).statusCode, 201)
  const bad = await app.inject({ method: 'POST', url: '/pets', ...json({ name: 'Rex', owner: { email: 'not an address', admin: true } }) })
  t.same(bad.json().errors.map((e: { pointer: string, rule: string }) => `${e.pointer} ${e.rule}`).sort(), ['/owner/admin additionalProperties', '/owner/email format'])
})

t.test('the document as an object is used as given, and left unchanged', async (t) => {
  const document = {
    openapi: '3.0.3',
    info: { title: 'inline', version: '1' },
    paths: { '/ping': { get: { parameters: [{ name: 'n', in: 'query', schema: { type: 'integer', nullable: true } }], responses: { 200: { description: 'pong' } } } } }
  }
  const before = JSON.stringify(document)
  const app = await appWith({ openapi: document })
  app.get('/ping', async () => 'pong')
  t.equal((await app.inject({ url: '/ping?n=2' })).statusCode, 200)
  t.equal((await app.inject({ url: '/ping?n=two' })).statusCode, 400)
  t.equal(JSON.stringify(document), before)
})

t.test('a document that cannot be used fails startup with a message that says why', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    [42, /schemaValidate\.openapi must be the path of an OpenAPI 3\.0 or 3\.1 document/],
    ['https://example.com/openapi.yaml', /never fetched over the network/],
    ['/nowhere/openapi.yaml', /schemaValidate\.openapi: the OpenAPI document could not be read: .*nowhere/],
    [{ swagger: '2.0', info: { title: 'x', version: '1' }, paths: {} }, /an OpenAPI 3\.0\.x or 3\.1\.x document/],
    [{ openapi: '3.1.0', info: { title: 'x' }, paths: {} }, /not valid OpenAPI 3\.1:[\s\S]*version/],
    [{ info: { title: 'x', version: '1' }, paths: {} }, /\(no version\)/],
    [{ openapi: '3.2.0', info: { title: 'x', version: '1' }, paths: {} }, /schemaValidate\.openapi \(openapi\) must be an OpenAPI 3\.0\.x or 3\.1\.x document/],
    [{ openapi: '3.0.3', info: { title: 'x', version: '1' }, paths: { '/a': { post: { 'x-portcullis-body-limit': 'big', responses: { 200: { description: 'ok' } } } } } }, /paths\.\/a\.post\.x-portcullis-body-limit must be a whole number of bytes/],
    [{ openapi: '3.1.0', info: { title: 'x', version: '1' }, paths: { '/a': { get: { responses: { 200: { description: 'ok', content: { 'application/json': { schema: { $ref: 'http://127.0.0.1:9/schema.json' } } } } } } } } }, /could not be read/]
  ]
  for (const [openapi, message] of cases) {
    const app = Fastify()
    await app.register(portcullisCore)
    await t.rejects(async () => { await app.register(portcullisSchemaValidate, { openapi: openapi as string }).ready() }, message, String(JSON.stringify(openapi)).slice(0, 80))
  }
})

t.test('OpenAPI 3.1: JSON Schema 2020-12 as it is (type lists, const, prefixItems)', async (t) => {
  const document = {
    openapi: '3.1.0',
    info: { title: 'x', version: '1' },
    paths: {
      '/shapes': {
        post: {
          requestBody: {
            content: {
              'application/json': {
                schema: {
                  type: 'object',
                  properties: {
                    kind: { const: 'point' },
                    at: { type: 'array', prefixItems: [{ type: 'number' }, { type: 'number' }], items: false },
                    label: { type: ['string', 'null'] },
                    style: { $ref: '#/components/schemas/Style', description: 'how it looks' }
                  }
                }
              }
            }
          },
          responses: { 204: { description: 'ok' } }
        }
      }
    },
    components: { schemas: { Style: { type: 'object', properties: { color: { enum: ['red', 'blue'] } } } } }
  }
  const app = await appWith({ openapi: document })
  app.post('/shapes', async (_request, reply) => reply.code(204).send())
  t.equal((await app.inject({ method: 'POST', url: '/shapes', ...json({ kind: 'point', at: [1, 2], label: null, style: { color: 'red' } }) })).statusCode, 204)
  const bad = await app.inject({ method: 'POST', url: '/shapes', ...json({ kind: 'line', at: [1, 2, 3], style: { color: 'red', width: 2 } }) })
  t.same(bad.json().errors.map((e: { pointer: string }) => e.pointer).sort(), ['/at', '/kind', '/style/width'])
})

t.test('a large document with many references: loaded, compiled once, and each operation enforced', async (t) => {
  const resources = 120
  const document = largeDocument(resources)
  const started = process.hrtime.bigint()
  const app = await appWith({ openapi: document })
  for (let i = 0; i < resources; i++) {
    app.get(`/r${i}/items`, async () => [])
    app.post(`/r${i}/items`, async (request) => request.body)
    app.get(`/r${i}/items/:id`, async () => ({}))
    app.put(`/r${i}/items/:id`, async (request) => request.body)
  }
  await app.ready()
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  t.comment(`${resources * 4} operations, ${resources * 3 + 2} component schemas: ready in ${seconds.toFixed(2)} s`)
  for (const i of [0, 57, resources - 1]) {
    const item = { name: `n${i}`, owner: { id: 1, contact: { email: 'a@b.co' } }, tags: [{ label: 'x' }] }
    t.equal((await app.inject({ method: 'POST', url: `/r${i}/items`, ...json(item) })).statusCode, 200)
    const bad = await app.inject({ method: 'PUT', url: `/r${i}/items/3`, ...json({ ...item, owner: { id: 'one', contact: { email: 'a@b.co', extra: 1 } } }) })
    t.same(bad.json().errors.map((e: { pointer: string }) => e.pointer).sort(), ['/owner/contact/extra', '/owner/id'])
    t.equal((await app.inject({ url: `/r${i}/items?page=0` })).statusCode, 400)
  }
})

/** An API of `resources` collections, each item made of shared parts through chains of `$ref`s. */
function largeDocument (resources: number): object {
  const schemas: Record<string, unknown> = {
    Contact: { type: 'object', properties: { email: { type: 'string', format: 'email' } } },
    Owner: { type: 'object', required: ['id'], properties: { id: { type: 'integer' }, contact: { $ref: '#/components/schemas/Contact' } } }
  }
  const paths: Record<string, unknown> = {}
  for (let i = 0; i < resources; i++) {
    schemas[`Tag${i}`] = { type: 'object', properties: { label: { type: 'string' } } }
    schemas[`Base${i}`] = { type: 'object', properties: { name: { type: 'string' }, owner: { $ref: '#/components/schemas/Owner' } } }
    schemas[`Item${i}`] = { allOf: [{ $ref: `#/components/schemas/Base${i}` }, { type: 'object', properties: { tags: { type: 'array', items: { $ref: `#/components/schemas/Tag${i}` } } } }] }
    const item = { $ref: `#/components/schemas/Item${i}` }
    const body = { required: true, content: { 'application/json': { schema: item } } }
    const one = { 200: { description: 'ok', content: { 'application/json': { schema: item } } } }
    paths[`/r${i}/items`] = {
      get: { operationId: `list${i}`, parameters: [{ $ref: '#/components/parameters/page' }], responses: { 200: { description: 'ok', content: { 'application/json': { schema: { type: 'array', items: item } } } } } },
      post: { operationId: `create${i}`, requestBody: body, responses: one }
    }
    paths[`/r${i}/items/{id}`] = {
      parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'integer' } }],
      get: { operationId: `get${i}`, responses: one },
      put: { operationId: `put${i}`, requestBody: body, responses: one }
    }
  }
  return {
    openapi: '3.0.3',
    info: { title: 'Large', version: '1' },
    paths,
    components: { schemas, parameters: { page: { name: 'page', in: 'query', schema: { type: 'integer', minimum: 1 } } } }
  }
}

t.test('the same file in both editions is the same contract', async (t) => {
  const app = await appWith({ openapi: ORDERS_31 })
  app.post('/orders', async () => 'ok')
  t.equal((await app.inject({ method: 'POST', url: '/orders', ...json({ item: 'x', qty: 1, price: 0 }) })).statusCode, 400, 'exclusiveMinimum 0')
  t.equal((await app.inject({ method: 'POST', url: '/orders', ...json({ item: 'x', qty: 1, price: 0.5 }) })).statusCode, 200)
})

t.test('documentRoutes: each operation as a Fastify route', async (t) => {
  const { documentRoutes } = await import('../src/index.js')
  const document = {
    openapi: '3.1.0',
    info: { title: 'x', version: '1' },
    paths: {
      '/a/{order-id}/items/{n}': { parameters: [{ name: 'order-id', in: 'path', required: true, schema: { type: 'string' } }, { name: 'n', in: 'path', required: true, schema: { type: 'integer' } }], get: { responses: { 200: { description: 'ok' } } }, delete: { responses: { 204: { description: 'ok' } } } },
      '/b': { post: { responses: { 201: { description: 'ok' } } } }
    }
  }
  t.same(await documentRoutes(document), [{ method: 'GET', path: '/a/:order_id/items/:n' }, { method: 'DELETE', path: '/a/:order_id/items/:n' }, { method: 'POST', path: '/b' }])
  await t.rejects(documentRoutes({ openapi: '2.0' }, 'upstreams[0].openapi'), /upstreams\[0\]\.openapi/)
})
