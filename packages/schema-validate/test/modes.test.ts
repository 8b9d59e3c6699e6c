import t from 'tap'
import Fastify from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { portcullisSchemaValidate } from '../src/index.js'
import { ORDERS_30, json, ordersApp } from './helpers.js'

t.test('report mode: a request that breaks the contract goes on, recorded as would-deny', async (t) => {
  const app = await ordersApp({ openapi: ORDERS_30, mode: 'report' })
  app.get('/shadow', async () => 'reached')
  const bad = await app.inject({ method: 'POST', url: '/orders', ...json({ item: 'x', qty: 0, admin: true }) })
  t.equal(bad.statusCode, 201)
  t.match(bad.headers['x-decisions'], /schema-validate:would-deny:PORTCULLIS_SCHEMA_INVALID/)
  const unknown = await app.inject({ url: '/shadow' })
  t.equal(unknown.body, 'reached')
  t.match(unknown.headers['x-decisions'], /would-deny:PORTCULLIS_SCHEMA_UNKNOWN_OPERATION/)
  const type = await app.inject({ method: 'POST', url: '/orders', payload: 'x', headers: { 'content-type': 'text/plain' } })
  t.equal(type.statusCode, 201)
  t.match(type.headers['x-decisions'], /would-deny:PORTCULLIS_SCHEMA_UNSUPPORTED_CONTENT_TYPE/)
})

t.test('one route in report mode while the rest enforce: a new contract rolled out route by route', async (t) => {
  const app = await ordersApp({ openapi: ORDERS_30 })
  app.put('/orders/:id/notes', { config: { schemaValidate: { mode: 'report', body: { type: 'object', properties: { text: { type: 'string', maxLength: 5 } } } } } }, async () => 'kept')
  const reported = await app.inject({ method: 'PUT', url: '/orders/1/notes', ...json({ text: 'far too long', extra: 1 }) })
  t.equal(reported.body, 'kept')
  t.match(reported.headers['x-decisions'], /would-deny:PORTCULLIS_SCHEMA_INVALID/)
  t.equal((await app.inject({ method: 'POST', url: '/orders', ...json({ item: 'x', qty: 0 }) })).statusCode, 400)
})

t.test('plain JSON Schemas per route, without a document: the same strictness', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisSchemaValidate, {})
  const body = { type: 'object', required: ['name'], properties: { name: { type: 'string' }, tags: { type: 'array', items: [{ type: 'string' }] } } }
  app.post('/users/:id', {
    config: {
      schemaValidate: {
        params: { type: 'object', properties: { id: { type: 'integer' } } },
        querystring: { type: 'object', properties: { notify: { type: 'boolean' } } },
        headers: { type: 'object', properties: { 'x-request-id': { type: 'string', maxLength: 8 } } },
        body
      }
    }
  }, async (request) => ({ params: request.params, query: request.query }))
  const ok = await app.inject({ method: 'POST', url: '/users/5?notify=true', ...json({ name: 'ann', tags: ['a'] }) })
  t.same(ok.json(), { params: { id: 5 }, query: { notify: true } })
  const bad = await app.inject({ method: 'POST', url: '/users/x?notify=maybe', ...json({ name: 1, role: 'admin' }, { 'x-request-id': 'far-too-long' }) })
  t.same(bad.json().errors.map((e: { in: string, pointer: string }) => `${e.in}${e.pointer}`).sort(), ['body/name', 'body/role', 'headers/x-request-id', 'params/id', 'querystring/notify'])
  t.equal((await app.inject({ method: 'POST', url: '/users/5', payload: 'x', headers: { 'content-type': 'text/plain' } })).statusCode, 415, 'JSON only, unless contentTypes says otherwise')
})

t.test('rejectUnknownProperties: all, writes or none', async (t) => {
  const extra = json({ item: 'x', qty: 1, admin: true })
  const none = await ordersApp({ openapi: ORDERS_30, rejectUnknownProperties: 'none' })
  t.equal((await none.inject({ method: 'POST', url: '/orders', ...extra })).statusCode, 201, 'none: the document decides alone')
  const all = Fastify()
  await all.register(portcullisCore)
  await all.register(portcullisSchemaValidate, { rejectUnknownProperties: 'all' })
  const schema = { config: { schemaValidate: { body: { type: 'object', properties: { a: { type: 'string' } } } } } }
  all.delete('/x', schema, async () => 'ok')
  all.post('/open', { config: { schemaValidate: { body: { type: 'object', properties: { a: { type: 'string' } }, additionalProperties: true } } } }, async () => 'ok')
  t.equal((await all.inject({ method: 'DELETE', url: '/x', ...json({ a: 'x', b: 1 }) })).statusCode, 400, 'all: even a DELETE body')
  t.equal((await all.inject({ method: 'POST', url: '/open', ...json({ a: 'x', b: 1 }) })).statusCode, 200, 'a schema that says additionalProperties is left as it says')
  const writes = Fastify()
  await writes.register(portcullisCore)
  await writes.register(portcullisSchemaValidate, {})
  writes.delete('/x', schema, async () => 'ok')
  t.equal((await writes.inject({ method: 'DELETE', url: '/x', ...json({ a: 'x', b: 1 }) })).statusCode, 200, 'writes: not a DELETE body')
})

t.test('a 400 lists at most maxErrors violations, and never echoes what was sent', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisSchemaValidate, { maxErrors: 3 })
  const properties = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`f${i}`, { type: 'integer' }]))
  app.post('/many', { config: { schemaValidate: { body: { type: 'object', properties } } } }, async () => 'ok')
  const secret = 'sk_live_do_not_echo'
  const payload = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`f${i}`, secret]))
  const response = await app.inject({ method: 'POST', url: '/many', ...json({ ...payload, ['k'.repeat(5000)]: 1 }) })
  t.equal(response.json().errors.length, 3)
  t.notMatch(response.body, secret)
  const long = await app.inject({ method: 'POST', url: '/many', ...json({ ['k'.repeat(5000)]: 1 }) })
  t.ok(long.json().errors[0].pointer.length <= 202, 'a pointer to a long property name is cut short')
})

t.test('options are checked at startup, each fault naming the option and what it takes', async (t) => {
  const cases: Array<[object, RegExp]> = [
    [{ nope: 1 }, /schemaValidate\.nope/],
    [{ prefix: 'api' }, /schemaValidate\.prefix/],
    [{ prefix: '/api/' }, /schemaValidate\.prefix/],
    [{ unknownOperations: 'deny' }, /schemaValidate\.unknownOperations/],
    [{ unknownOperations: { api: 'allow' } }, /path prefixes starting with a slash/],
    [{ unknownOperations: { '/api': 'maybe' } }, /unknownOperations\['\/api'\]/],
    [{ rejectUnknownProperties: true }, /rejectUnknownProperties must be writes, all or none/],
    [{ bodyLimit: -1 }, /schemaValidate\.bodyLimit/],
    [{ maxDepth: 0 }, /schemaValidate\.maxDepth/],
    [{ maxErrors: 1.5 }, /schemaValidate\.maxErrors/],
    [{ responses: 'strict' }, /schemaValidate\.responses must be off, report or enforce/],
    [{ stripResponses: 'yes' }, /schemaValidate\.stripResponses/],
    [{ mode: 'audit' }, /schemaValidate\.mode/]
  ]
  for (const [options, message] of cases) {
    const app = Fastify()
    await app.register(portcullisCore)
    await t.rejects(async () => { await app.register(portcullisSchemaValidate, options as never).ready() }, message, JSON.stringify(options))
  }
  const route = Fastify()
  await route.register(portcullisCore)
  await route.register(portcullisSchemaValidate, {})
  t.throws(() => route.post('/x', { config: { schemaValidate: { mode: 'loud' } as never } }, async () => 'x'), /route POST \/x config\.schemaValidate\.mode/)
  t.throws(() => route.post('/y', { config: { schemaValidate: { bodyLimit: 'big' } as never } }, async () => 'x'), /config\.schemaValidate\.bodyLimit/)
  t.throws(() => route.post('/z', { config: { schemaValidate: { bodys: {} } as never } }, async () => 'x'), /config\.schemaValidate\.bodys/)
})
