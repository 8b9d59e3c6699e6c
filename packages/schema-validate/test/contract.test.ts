import t from 'tap'
import Fastify from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { portcullisSchemaValidate } from '../src/index.js'
import { ORDERS_30, ordersApp } from './helpers.js'

t.test('a route the document does not have is refused: 404, or 405 with Allow where the path has other methods', async (t) => {
  const app = await ordersApp({ openapi: ORDERS_30 })
  app.get('/debug/env', async () => ({ secret: 'shadow endpoint' }))
  app.delete('/orders/:orderId', async () => ({ deleted: true }))
  const shadow = await app.inject({ url: '/debug/env' })
  t.equal(shadow.statusCode, 404)
  t.equal(shadow.json().code, 'PORTCULLIS_SCHEMA_UNKNOWN_OPERATION')
  t.notMatch(shadow.body, /shadow endpoint/)
  const method = await app.inject({ method: 'DELETE', url: '/orders/7' })
  t.equal(method.statusCode, 405)
  t.equal(method.json().code, 'PORTCULLIS_SCHEMA_METHOD_NOT_ALLOWED')
  t.equal(method.headers.allow, 'GET, PATCH')
  t.match(method.headers['x-decisions'], /schema-validate:deny:PORTCULLIS_SCHEMA_METHOD_NOT_ALLOWED/)
  t.equal((await app.inject({ method: 'HEAD', url: '/orders/7' })).statusCode, 200, 'HEAD follows the GET operation')
  t.equal((await app.inject({ method: 'HEAD', url: '/orders/x' })).statusCode, 400, 'and its parameters')
})

t.test('unknown operations by path prefix, the longest prefix deciding; config.schemaValidate: false exempts a route', async (t) => {
  const app = await ordersApp({ openapi: ORDERS_30, unknownOperations: { '/': 'refuse', '/internal/': 'allow', '/internal/admin/': 'refuse' } })
  app.get('/internal/metrics', async () => ({ up: 1 }))
  app.get('/internal/admin/users', async () => [])
  app.get('/other', async () => 'other')
  app.get('/healthz', { config: { schemaValidate: false } }, async () => ({ ok: true }))
  t.equal((await app.inject({ url: '/internal/metrics' })).statusCode, 200)
  t.equal((await app.inject({ url: '/internal/admin/users' })).statusCode, 404)
  t.equal((await app.inject({ url: '/other' })).statusCode, 404)
  const health = await app.inject({ url: '/healthz' })
  t.equal(health.statusCode, 200)
  t.equal(health.headers['x-decisions'], '[]', 'an exempt route records nothing')
})

t.test('a prefix with no entry for it is refused; without a document, routes are allowed unless told otherwise', async (t) => {
  const app = await ordersApp({ openapi: ORDERS_30, unknownOperations: { '/public/': 'allow' } })
  app.get('/elsewhere', async () => 'x')
  t.equal((await app.inject({ url: '/elsewhere' })).statusCode, 404)
  const plain = Fastify()
  await plain.register(portcullisCore)
  await plain.register(portcullisSchemaValidate, {})
  plain.get('/anything', async () => 'ok')
  t.equal((await plain.inject({ url: '/anything' })).statusCode, 200)
  t.equal((await plain.inject({ url: '/missing' })).statusCode, 404, 'a path no route has is Fastify\'s 404')
})

t.test('the document mounted under a prefix: its /orders is the route /api/orders, and routes elsewhere are left alone', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisSchemaValidate, { openapi: ORDERS_30, prefix: '/api' })
  await app.register(async (api) => {
    api.post('/orders/', async (request) => request.body)
    api.get('/orders', async () => [])
    api.get('/other', async () => 'undocumented')
  }, { prefix: '/api' })
  app.get('/orders', async () => 'not under the prefix')
  app.get('/apiary', async () => 'not under it either')
  t.equal((await app.inject({ method: 'POST', url: '/api/orders/', payload: { item: 'x', qty: 0 } })).statusCode, 400, 'a trailing slash is the same path')
  t.equal((await app.inject({ method: 'POST', url: '/api/orders/', payload: { item: 'x', qty: 1 } })).statusCode, 200)
  t.equal((await app.inject({ url: '/orders' })).body, 'not under the prefix', 'routes outside the prefix are none of the document\'s business')
  t.equal((await app.inject({ url: '/apiary' })).statusCode, 200)
  t.equal((await app.inject({ url: '/api/other' })).statusCode, 404)
})

t.test('two documents under two prefixes: each speaks for its own routes, once', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisSchemaValidate, { openapi: ORDERS_30, prefix: '/shop' })
  await app.register(portcullisSchemaValidate, { openapi: ORDERS_30, prefix: '/legacy', mode: 'report' })
  app.post('/shop/orders', async () => 'shop')
  app.post('/legacy/orders', async () => 'legacy')
  app.addHook('onSend', async (request, reply) => { reply.header('x-decisions', String(request.decisions?.length ?? 0)) })
  const shop = await app.inject({ method: 'POST', url: '/shop/orders', payload: { item: 'x', qty: 0 } })
  t.equal(shop.statusCode, 400)
  const legacy = await app.inject({ method: 'POST', url: '/legacy/orders', payload: { item: 'x', qty: 0 } })
  t.equal(legacy.body, 'legacy', 'report mode under /legacy')
  t.equal(legacy.headers['x-decisions'], '1', 'one decision: the other document said nothing')
})

t.test('behind a catch-all route (a proxy), a documented path with another method is still 405', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisSchemaValidate, { openapi: ORDERS_30, prefix: '/api' })
  app.all('/api/*', async () => 'proxied')
  const method = await app.inject({ method: 'DELETE', url: '/api/orders/7?x=1' })
  t.equal(method.statusCode, 405)
  t.equal(method.headers.allow, 'GET, PATCH')
  t.equal((await app.inject({ method: 'PUT', url: '/api/orders/' })).headers.allow, 'GET, POST')
  t.equal((await app.inject({ url: '/api/orders/7/extra' })).statusCode, 404)
})
