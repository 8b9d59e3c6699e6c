import t from 'tap'
import { Readable } from 'node:stream'
import Fastify from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { portcullisSchemaValidate, essenceOf, shapeOf } from '../src/index.js'
import { Compiler, pointer } from '../src/operations.js'
import { convertSchema } from '../src/schema.js'
import { strip } from '../src/strip.js'
import { inspect } from '../src/inspect.js'
import { ORDERS_30, json, ordersApp } from './helpers.js'

t.test('media ranges: the exact type first, then type/*, then */*; a body on the catch-all is still inspected', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisSchemaValidate, {})
  app.addContentTypeParser('*', { parseAs: 'string' }, (_request, body, done) => { done(null, body) })
  app.post('/family', { config: { schemaValidate: { body: { type: 'string', maxLength: 3 }, contentTypes: ['text/*'] } } }, async () => 'ok')
  app.post('/any', { config: { schemaValidate: { body: {}, contentTypes: ['application/xml', '*/*'] } } }, async () => 'ok')
  app.post('/none', async () => 'ok')
  t.equal((await app.inject({ method: 'POST', url: '/family', payload: 'abc', headers: { 'content-type': 'text/csv' } })).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/family', payload: 'abcd', headers: { 'content-type': 'text/csv' } })).statusCode, 400, 'checked by the text/* schema')
  t.equal((await app.inject({ method: 'POST', url: '/family', payload: 'a', headers: { 'content-type': 'image/png' } })).statusCode, 415)
  t.equal((await app.inject({ method: 'POST', url: '/any', payload: 'a', headers: { 'content-type': 'image/png' } })).statusCode, 200)
  const poisoned = await app.inject({ method: 'POST', url: '/any', payload: '{"__proto__":{"x":1}}', headers: { 'content-type': 'application/vnd.acme+json' } })
  t.equal(poisoned.json().code, 'PORTCULLIS_SCHEMA_PROTOTYPE_POISONING', 'JSON taken by */* is inspected as JSON')
  t.equal((await app.inject({ method: 'POST', url: '/any', payload: 'x', headers: { 'transfer-encoding': 'chunked' } })).statusCode, 415, 'a body without a content type')
  t.equal((await app.inject({ method: 'POST', url: '/none', payload: 'x', headers: { 'content-type': 'text/plain' } })).statusCode, 200, 'a route without any say is left alone')
})

t.test('a chunked body is checked as any other; a top-level number JSON cannot hold is refused', async (t) => {
  const app = await ordersApp({ openapi: ORDERS_30 })
  const chunked = await app.inject({ method: 'POST', url: '/orders', payload: Readable.from(['{"item":"x",', '"qty":0}']), headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } })
  t.same(chunked.json().errors.map((e: { pointer: string }) => e.pointer), ['/qty'])
  const plain = Fastify()
  await plain.register(portcullisCore)
  await plain.register(portcullisSchemaValidate, {})
  plain.post('/n', { config: { schemaValidate: { body: {} } } }, async () => 'ok')
  t.equal((await plain.inject({ method: 'POST', url: '/n', payload: '1e400', headers: { 'content-type': 'application/json' } })).statusCode, 400)
  t.equal((await plain.inject({ method: 'POST', url: '/n', payload: '12', headers: { 'content-type': 'application/json' } })).statusCode, 200)
})

t.test('a route with parameter schemas and no body schema takes no body', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisSchemaValidate, {})
  app.post('/q', { config: { schemaValidate: { querystring: { type: 'object', properties: { n: { type: 'integer', format: 'int64' } } } } } }, async (request) => request.query)
  t.same((await app.inject({ method: 'POST', url: '/q?n=3' })).json(), { n: 3 })
  t.equal((await app.inject({ method: 'POST', url: '/q?n=3', ...json({}) })).statusCode, 415)
  t.equal((await app.inject({ method: 'POST', url: '/q?n=9007199254740993' })).statusCode, 400, 'int64 beyond what a number holds exactly')
})

t.test('a route\'s own schema may refer to its own $defs; the referenced object is closed where it is used', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisSchemaValidate, {})
  const body = { $ref: '#/$defs/item', $defs: { item: { type: 'object', properties: { name: { type: 'string' } } } } }
  app.post('/items', { config: { schemaValidate: { body } } }, async () => 'ok')
  t.equal((await app.inject({ method: 'POST', url: '/items', ...json({ name: 'a' }) })).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/items', ...json({ name: 1 }) })).statusCode, 400)
  t.same((await app.inject({ method: 'POST', url: '/items', ...json({ name: 'a', admin: true }) })).json().errors.map((e: { pointer: string }) => e.pointer), ['/admin'])
})

t.test('parameters the document describes with content, not schema, are checked as text', async (t) => {
  const document = {
    openapi: '3.0.3',
    info: { title: 'x', version: '1' },
    paths: { '/search': { get: { parameters: [{ name: 'filter', in: 'query', required: true, content: { 'application/json': { schema: { type: 'object' } } } }], responses: { 200: { description: 'ok' } } } } }
  }
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisSchemaValidate, { openapi: document })
  app.get('/search', async () => 'ok')
  t.equal((await app.inject({ url: '/search?filter=%7B%22a%22%3A1%7D' })).statusCode, 200)
  t.equal((await app.inject({ url: '/search' })).statusCode, 400, 'required')
})

t.test('responses: lists stripped item by item, 2XX and default, other methods of the route unchecked', async (t) => {
  const document = {
    openapi: '3.1.0',
    info: { title: 'x', version: '1' },
    paths: {
      '/things': {
        get: { responses: { '2XX': { description: 'ok', content: { 'application/json': { schema: { type: 'array', items: { type: 'object', properties: { id: { type: 'integer' } } } } } } } } },
        post: { responses: { default: { description: 'any', content: { 'application/json': { schema: { type: 'object', properties: { id: { type: 'integer' } }, required: ['id'] } }, 'text/plain': {} } } } }
      },
      '/bare': { get: { responses: { 200: { description: 'any JSON', content: { 'application/json': {} } } } } }
    }
  }
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisSchemaValidate, { openapi: document, stripResponses: true, responses: 'enforce', unknownOperations: 'allow' })
  app.route({
    method: ['GET', 'POST', 'DELETE'],
    url: '/things',
    handler: async (request, reply) => {
      if (request.method === 'GET') return await reply.code(203).send([{ id: 1, secret: 's' }, { id: 2 }])
      if (request.method === 'DELETE') return { anything: true }
      return 42
    }
  })
  t.same((await app.inject({ url: '/things' })).json(), [{ id: 1 }, { id: 2 }], '203 matched by 2XX')
  t.same((await app.inject({ method: 'DELETE', url: '/things' })).json(), { anything: true }, 'DELETE is no operation, and allowed: unchecked')
  t.equal((await app.inject({ method: 'POST', url: '/things' })).statusCode, 502, 'a number where the default response is an object')
  const bare = Fastify()
  await bare.register(portcullisCore)
  await bare.register(portcullisSchemaValidate, { openapi: document, responses: 'enforce', unknownOperations: 'allow' })
  bare.get('/bare', async () => ({ whatever: [1] }))
  t.same((await bare.inject({ url: '/bare' })).json(), { whatever: [1] }, 'a media type without a schema: any body')
})

t.test('units: shapes, essences, pointers, dialect conversion, stripping, inspection', async (t) => {
  t.equal(shapeOf('/orders/{id}/items/'), '/orders/{}/items')
  t.equal(shapeOf('/orders/:orderId(^\\d+)'), '/orders/{}')
  t.equal(shapeOf('/'), '/')
  t.equal(essenceOf(' Text/Plain ;charset=utf-8'), 'text/plain')
  t.equal(essenceOf('text/'), null)
  const document = { components: { schemas: { 'a/b': { type: 'string' }, 't~x': 1 } } }
  t.same(pointer(document, '#/components/schemas/a~1b'), { type: 'string' })
  t.equal(pointer(document, '#/components/schemas/t~0x'), 1)
  t.equal(pointer(document, '#/components/nothing/here'), undefined)
  t.equal(pointer(document, 'other.yaml#/x'), undefined)
  const options = { version: '3.0' as const, base: 'urn:x', closeObjects: false, resolve: () => undefined }
  t.same(convertSchema({ type: 'number', minimum: 1, exclusiveMinimum: false, maximum: 5, exclusiveMaximum: true }, options), { type: 'number', minimum: 1, exclusiveMaximum: 5 })
  t.same(convertSchema({ type: 'string', enum: ['a'], nullable: true, example: 'a', 'x-internal': 1 }, options), { type: ['string', 'null'], enum: ['a', null] })
  t.same(convertSchema({ $ref: '#/components/schemas/A', description: 'ignored in 3.0' }, options), { $ref: 'urn:x#/components/schemas/A' })
  t.same(convertSchema({ items: [{ type: 'string' }], not: { type: 'null' }, dependentSchemas: { a: { required: ['b'] } } }, { ...options, version: '3.1' }),
    { prefixItems: [{ type: 'string' }], not: { type: 'null' }, dependentSchemas: { a: { required: ['b'] } } })
  const value = { keep: [{ a: 1, b: 2 }], drop: 1 }
  strip(value, { type: 'object', properties: { keep: { type: 'array' } } }, () => undefined)
  t.same(value, { keep: [{ a: 1, b: 2 }] }, 'an array without items is kept whole')
  const cyclic = { $ref: '#/A' }
  strip({ x: 1 }, cyclic, () => cyclic)
  const closing = { ...options, version: '3.1' as const, closeObjects: true }
  const loop = { $ref: '#/A' }
  t.same(convertSchema(loop, { ...closing, resolve: () => loop }), { $ref: 'urn:x#/A' }, 'a reference that leads back to itself declares nothing')
  t.same(convertSchema({ allOf: [true, { properties: { a: {} } }] }, closing), { allOf: [true, { properties: { a: {} } }], unevaluatedProperties: false })
  t.same(convertSchema({ $ref: 'https://example.com/s.json' }, closing), { $ref: 'https://example.com/s.json' }, 'only the document\'s own references are rebased')
  const patterned = { x_1: 1, other: 2 }
  strip(patterned, { type: 'object', properties: { a: {} }, patternProperties: { '^x_': {} } }, () => undefined)
  t.same(patterned, { x_1: 1, other: 2 }, 'patternProperties: other properties are let in')
  const closed = { a: 1, b: 2 }
  strip(closed, { type: 'object', properties: { a: {} }, additionalProperties: false }, () => undefined)
  t.same(closed, { a: 1 })
  t.same(inspect('text', 3), null)
  t.same(inspect(Number.NEGATIVE_INFINITY, 3), { kind: 'number', pointer: '' })
  t.same(inspect({ 'a/b~c': [{ n: Number.NaN }] }, 5), { kind: 'number', pointer: '/a~1b~0c/0/n' })
})

t.test('a reference that leads back to itself does not hang startup', async (t) => {
  const document = {
    openapi: '3.0.3',
    info: { title: 'x', version: '1' },
    paths: { '/a': { $ref: '#/paths/~1a' } }
  }
  t.same(new Compiler(32).document(document, '3.0', () => true), [])
})

t.test('a body whose schema bounds every value it accepts is refused by the schema alone, as surely', async (t) => {
  const app = Fastify({ onProtoPoisoning: 'ignore', onConstructorPoisoning: 'ignore' })
  await app.register(portcullisCore)
  await app.register(portcullisSchemaValidate, { maxDepth: 2 })
  const point = { type: 'object', additionalProperties: false, properties: { x: { type: 'integer' }, label: { enum: ['a', 'b'] } } }
  app.post('/points', { config: { schemaValidate: { body: point } } }, async () => 'ok')
  app.post('/lines', { config: { schemaValidate: { body: { type: 'object', additionalProperties: false, properties: { points: { type: 'array', items: point } } } } } }, async () => 'ok')
  const poisoned = await app.inject({ method: 'POST', url: '/points', payload: '{"__proto__":{"x":1},"x":1}', headers: { 'content-type': 'application/json' } })
  t.same(poisoned.json().errors, [{ in: 'body', pointer: '/__proto__', rule: 'additionalProperties', message: 'is not a property the contract declares' }])
  t.equal((await app.inject({ method: 'POST', url: '/points', payload: '{"x":1e400}', headers: { 'content-type': 'application/json' } })).statusCode, 400)
  t.equal((await app.inject({ method: 'POST', url: '/points', ...json({ x: 1, label: 'a' }) })).statusCode, 200)
  const deep = await app.inject({ method: 'POST', url: '/lines', ...json({ points: [{ x: 1 }] }) })
  t.equal(deep.json().code, 'PORTCULLIS_SCHEMA_BODY_TOO_DEEP', 'a schema deeper than maxDepth: the body is walked')
})

t.test('units: which schemas bound their values', async (t) => {
  const { bounded } = await import('../src/bounds.js')
  const none = (): undefined => undefined
  const object = (properties: object): object => ({ type: 'object', additionalProperties: false, properties })
  t.ok(bounded({ type: ['string', 'null'] }, 1, none))
  t.ok(bounded({ const: 'x' }, 1, none))
  t.notOk(bounded({ enum: [{ a: 1 }] }, 5, none), 'an enum of objects')
  t.notOk(bounded(true, 5, none))
  t.notOk(bounded({}, 5, none), 'untyped')
  t.notOk(bounded({ type: 'object' }, 5, none), 'free-form')
  t.notOk(bounded(object({ constructor: { type: 'object' } }), 5, none))
  t.notOk(bounded({ ...object({}), patternProperties: { '^x': { type: 'string' } } }, 5, none))
  t.notOk(bounded(object({ a: {} }), 5, none), 'a property of any value')
  t.notOk(bounded({ type: 'array' }, 5, none), 'items of any value')
  t.notOk(bounded({ type: 'array', items: {} }, 5, none))
  t.notOk(bounded({ type: 'array', prefixItems: [{ type: 'string' }], items: false }, 5, none))
  t.notOk(bounded({ type: ['object', 'array'], additionalProperties: false, items: {} }, 5, none))
  t.notOk(bounded({ anyOf: [{ type: 'string' }] }, 5, none))
  t.notOk(bounded({ type: [] }, 5, none))
  t.notOk(bounded({ type: 'date' }, 5, none), 'a type JSON Schema does not have')
  t.ok(bounded({ type: ['object', 'array'], additionalProperties: false, properties: { a: { type: 'string' } }, items: { type: ['object', 'null'], additionalProperties: false } }, 5, none))
  t.ok(bounded({ allOf: [{ type: 'object' }, object({ a: { type: 'string' } })] }, 5, none), 'one bounded part bounds all')
  t.notOk(bounded({ allOf: [{ type: 'object' }] }, 5, none))
  const schemas: Record<string, unknown> = { '#/a': object({ b: { $ref: '#/b', description: 'b' } }), '#/b': object({ n: { type: 'number' } }), '#/loop': object({ next: { $ref: '#/loop' } }) }
  const lookup = (ref: string): unknown => schemas[ref]
  t.ok(bounded({ $ref: '#/a' }, 2, lookup))
  t.notOk(bounded({ $ref: '#/a' }, 1, lookup), 'deeper than allowed')
  t.notOk(bounded({ $ref: '#/loop' }, 50, lookup), 'a schema that refers to itself')
  t.notOk(bounded({ $ref: '#/a', unevaluatedProperties: false }, 5, lookup), 'a reference with keywords of its own')
})

t.test('minLength and maxLength count code points, as JSON Schema says', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisSchemaValidate, {})
  app.post('/names', { config: { schemaValidate: { body: { type: 'object', additionalProperties: false, properties: { short: { type: 'string', maxLength: 2 }, long: { type: 'string', minLength: 2 } } } } } }, async () => 'ok')
  const status = async (body: object): Promise<number> => (await app.inject({ method: 'POST', url: '/names', ...json(body) })).statusCode
  t.equal(await status({ short: '😀😀' }), 200, 'two emoji are two characters, four UTF-16 units')
  t.equal(await status({ short: '😀😀😀' }), 400)
  t.equal(await status({ short: 'abc' }), 400)
  t.equal(await status({ long: '😀' }), 400, 'one emoji is one character')
  t.equal(await status({ long: '😀x' }), 200)
  t.equal(await status({ long: 'ab' }), 200)
  t.equal(await status({ long: '\uD800\uD800' }), 200, 'lone surrogates count one each')
  const refused = await app.inject({ method: 'POST', url: '/names', ...json({ short: 'abc', long: 'a' }) })
  t.same(refused.json().errors.map((e: { pointer: string, message: string }) => `${e.pointer} ${e.message}`), ['/short must NOT have more than 2 characters', '/long must NOT have fewer than 2 characters'])
})
