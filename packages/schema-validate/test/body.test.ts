import t from 'tap'
import { Readable } from 'node:stream'
import Fastify from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { portcullisSchemaValidate } from '../src/index.js'
import { ORDERS_30, json, ordersApp } from './helpers.js'

const order = { item: 'lamp', qty: 1 }

t.test('content types: the document\'s list, whatever the case, parameters and whitespace; anything else is 415', async (t) => {
  const app = await ordersApp({ openapi: ORDERS_30 })
  const variants = ['application/json', 'Application/JSON', 'application/json; charset=utf-8', 'APPLICATION/JSON ;charset=UTF-8']
  for (const type of variants) {
    t.equal((await app.inject({ method: 'POST', url: '/orders', payload: JSON.stringify({ ...order, admin: true }), headers: { 'content-type': type } })).statusCode, 400, `${type}: still validated`)
    t.equal((await app.inject({ method: 'POST', url: '/orders', payload: JSON.stringify(order), headers: { 'content-type': type } })).statusCode, 201, `${type}: accepted`)
  }
  const text = await app.inject({ method: 'POST', url: '/orders', payload: 'item=lamp&qty=1', headers: { 'content-type': 'text/plain' } })
  t.equal(text.statusCode, 415)
  t.equal(text.json().code, 'PORTCULLIS_SCHEMA_UNSUPPORTED_CONTENT_TYPE')
  const patch = await app.inject({ method: 'PATCH', url: '/orders/1', ...json(order) })
  t.equal(patch.statusCode, 415, 'PATCH takes merge-patch+json only')
  const none = await app.inject({ method: 'GET', url: '/orders', payload: 'x', headers: { 'content-type': 'text/plain' } })
  t.equal(none.statusCode, 415, 'an operation without a request body takes none')
  const malformed = await app.inject({ method: 'POST', url: '/orders', payload: JSON.stringify(order), headers: { 'content-type': 'json' } })
  t.equal(malformed.statusCode, 415)
})

t.test('a request with two Content-Type fields is refused, whichever comes first', async (t) => {
  const app = await ordersApp({ openapi: ORDERS_30 })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const { port } = app.server.address() as { port: number }
  const body = JSON.stringify(order)
  const response = await fetch(`http://127.0.0.1:${port}/orders`, {
    method: 'POST',
    body,
    headers: [['content-type', 'application/json'], ['content-type', 'text/plain']]
  })
  // fetch joins repeated fields with a comma: the server sees one malformed field, or two.
  t.equal(response.status, 415)
  const raw = await rawRequest(port, `POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`)
  t.match(raw, /^HTTP\/1\.1 400 /)
  t.match(raw, /PORTCULLIS_SCHEMA_AMBIGUOUS_CONTENT_TYPE/)
})

t.test('size: an operation\'s x-portcullis-body-limit, the plugin\'s bodyLimit and a route\'s own, each 413', async (t) => {
  const app = await ordersApp({ openapi: ORDERS_30, bodyLimit: 2048 })
  const big = { ...order, item: 'x'.repeat(40), metadata: { pad: 'y'.repeat(600) } }
  const over = await app.inject({ method: 'POST', url: '/orders', ...json(big) })
  t.equal(over.statusCode, 413, 'createOrder allows 512 bytes')
  t.match(over.headers['content-type'], /^application\/problem\+json/)
  t.equal((await app.inject({ method: 'PATCH', url: '/orders/1', payload: JSON.stringify(big), headers: { 'content-type': 'application/merge-patch+json' } })).statusCode, 200, 'updateOrder falls back on 2048')
  const huge = JSON.stringify({ ...order, metadata: { pad: 'z'.repeat(3000) } })
  t.equal((await app.inject({ method: 'PATCH', url: '/orders/1', payload: huge, headers: { 'content-type': 'application/merge-patch+json' } })).statusCode, 413)

  const routed = Fastify()
  await routed.register(portcullisCore)
  await routed.register(portcullisSchemaValidate, {})
  routed.post('/small', { config: { schemaValidate: { bodyLimit: 16, body: { type: 'object' } } } }, async () => 'ok')
  routed.route({ method: ['POST', 'PUT'], url: '/two', config: { schemaValidate: { body: { type: 'object' } } }, bodyLimit: 64, handler: async () => 'ok' })
  t.equal((await routed.inject({ method: 'POST', url: '/small', ...json({ a: 'more than sixteen bytes' }) })).statusCode, 413)
  t.equal((await routed.inject({ method: 'POST', url: '/small', ...json({ a: 1 }) })).statusCode, 200)
  t.equal((await routed.inject({ method: 'PUT', url: '/two', ...json({ a: 'x'.repeat(80) }) })).statusCode, 413, 'a route\'s own smaller bodyLimit stands')
})

t.test('one route for two operations with different limits: each method has its own', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisSchemaValidate, { openapi: ORDERS_30, bodyLimit: 2048 })
  app.route({ method: ['GET', 'POST'], url: '/orders', handler: async () => 'ok' })
  const payload = JSON.stringify({ ...order, metadata: { pad: 'y'.repeat(600) } })
  const over = await app.inject({ method: 'POST', url: '/orders', payload, headers: { 'content-type': 'application/json' } })
  t.equal(over.statusCode, 413)
  t.equal(over.json().code, 'PORTCULLIS_SCHEMA_BODY_TOO_LARGE')
  t.equal((await app.inject({ method: 'POST', url: '/orders', ...json(order) })).statusCode, 200)
})

t.test('nesting deeper than maxDepth is 400 before any schema is looked at', async (t) => {
  const app = await ordersApp({ openapi: ORDERS_30, maxDepth: 4 })
  const deep = { ...order, metadata: { a: { b: { c: {} } } } }
  const refused = await app.inject({ method: 'POST', url: '/orders', ...json(deep) })
  t.equal(refused.statusCode, 400)
  t.equal(refused.json().code, 'PORTCULLIS_SCHEMA_BODY_TOO_DEEP')
  t.same(refused.json().errors, [{ in: 'body', pointer: '/metadata/a/b/c', rule: 'depth', message: 'is nested too deeply' }])
  t.equal((await app.inject({ method: 'POST', url: '/orders', ...json({ ...order, metadata: { a: { b: 1 } } }) })).statusCode, 201)
  const defaults = await ordersApp({ openapi: ORDERS_30, bodyLimit: 1e6 })
  const nested = '['.repeat(100_000) + ']'.repeat(100_000)
  const response = await defaults.inject({ method: 'PATCH', url: '/orders/1', payload: nested, headers: { 'content-type': 'application/merge-patch+json' } })
  t.equal(response.statusCode, 400, 'a hundred thousand levels: refused, no stack blown')
})

t.test('prototype poisoning in the body or the query is 400, and pollutes nothing', async (t) => {
  // Fastify's own JSON parser refuses __proto__ already; with it told to let them through, the plugin still does.
  for (const onProtoPoisoning of ['error', 'ignore'] as const) {
    const app = await ordersApp({ openapi: ORDERS_30 }, { onProtoPoisoning, onConstructorPoisoning: onProtoPoisoning })
    for (const payload of ['{"__proto__":{"polluted":1},"item":"x","qty":1}', '{"item":"x","qty":1,"address":{"constructor":{"prototype":{"polluted":1}}}}']) {
      const response = await app.inject({ method: 'POST', url: '/orders', payload, headers: { 'content-type': 'application/json' } })
      t.equal(response.statusCode, 400, `${onProtoPoisoning}: ${payload}`)
      if (onProtoPoisoning === 'ignore') t.equal(response.json().code, 'PORTCULLIS_SCHEMA_PROTOTYPE_POISONING')
    }
    const query = await app.inject({ url: '/orders?__proto__=x&limit=1' })
    t.equal(query.statusCode, 400)
    t.equal(query.json().code, 'PORTCULLIS_SCHEMA_PROTOTYPE_POISONING')
    t.same(query.json().errors, [{ in: 'querystring', pointer: '/__proto__', rule: 'prototype', message: 'is a property name that is never accepted' }])
  }
  t.equal(({} as { polluted?: unknown }).polluted, undefined)
  const app = await ordersApp({ openapi: ORDERS_30 })
  t.equal((await app.inject({ method: 'POST', url: '/orders', ...json({ ...order, metadata: { constructor: 'Acme builders' } }) })).statusCode, 201, 'a field named constructor holding data is data')
})

t.test('numbers JSON cannot hold are refused wherever they are', async (t) => {
  const app = await ordersApp({ openapi: ORDERS_30 })
  const typed = await app.inject({ method: 'POST', url: '/orders', payload: '{"item":"x","qty":1e400}', headers: { 'content-type': 'application/json' } })
  t.equal(typed.statusCode, 400)
  t.same(typed.json().errors.map((e: { pointer: string }) => e.pointer), ['/qty'])
  const free = await app.inject({ method: 'POST', url: '/orders', payload: '{"item":"x","qty":1,"metadata":{"n":-1e999}}', headers: { 'content-type': 'application/json' } })
  t.equal(free.statusCode, 400)
  t.same(free.json().errors, [{ in: 'body', pointer: '/metadata/n', rule: 'number', message: 'is a number too large to represent' }])
})

t.test('a required body that is missing is 400; a JSON body the app left as text is read to be checked', async (t) => {
  const app = await ordersApp({ openapi: ORDERS_30 })
  const missing = await app.inject({ method: 'POST', url: '/orders' })
  t.equal(missing.statusCode, 400)
  t.same(missing.json().errors, [{ in: 'body', pointer: '', rule: 'required', message: 'a body is required' }])
  t.equal((await app.inject({ method: 'PATCH', url: '/orders/1' })).statusCode, 200, 'an optional body may be left out')

  const text = Fastify()
  await text.register(portcullisCore)
  await text.register(portcullisSchemaValidate, {})
  text.removeAllContentTypeParsers()
  text.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => { done(null, body) })
  text.post('/raw', { config: { schemaValidate: { body: { type: 'object', required: ['a'] } } } }, async (request) => ({ forwarded: Buffer.isBuffer(request.body) }))
  t.equal((await text.inject({ method: 'POST', url: '/raw', ...json({ b: 1 }) })).statusCode, 400)
  t.same((await text.inject({ method: 'POST', url: '/raw', ...json({ a: 1 }) })).json(), { forwarded: true }, 'checked, and passed on as it came')
  const broken = await text.inject({ method: 'POST', url: '/raw', payload: '{"a":', headers: { 'content-type': 'application/json' } })
  t.same(broken.json().errors, [{ in: 'body', pointer: '', rule: 'json', message: 'is not valid JSON' }])
})

t.test('a body still unread (a stream): JSON is refused, since it cannot be checked; an upload goes on', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisSchemaValidate, {})
  app.addContentTypeParser('*', (_request, payload, done) => { done(null, payload) })
  app.post('/checked', { config: { schemaValidate: { body: { type: 'object' }, contentTypes: ['application/vnd.acme+json'] } } }, async () => 'read')
  app.post('/upload', { config: { schemaValidate: { body: {}, contentTypes: ['application/octet-stream'] } } }, async (request) => {
    let size = 0
    for await (const chunk of request.body as Readable) size += (chunk as Buffer).length
    return { size }
  })
  const unread = await app.inject({ method: 'POST', url: '/checked', payload: '{}', headers: { 'content-type': 'application/vnd.acme+json' } })
  t.equal(unread.statusCode, 415, 'JSON left unread cannot be checked')
  const upload = await app.inject({ method: 'POST', url: '/upload', payload: Buffer.alloc(100), headers: { 'content-type': 'application/octet-stream' } })
  t.same(upload.json(), { size: 100 }, 'an upload goes on unread')
})

async function rawRequest (port: number, text: string): Promise<string> {
  const { connect } = await import('node:net')
  return await new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.end(text))
    let answer = ''
    socket.on('data', (chunk) => { answer += chunk.toString() })
    socket.on('end', () => resolve(answer))
    socket.on('error', reject)
  })
}
