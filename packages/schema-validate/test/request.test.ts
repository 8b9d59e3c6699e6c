import t from 'tap'
import { ORDERS_30, ORDERS_31, json, ordersApp } from './helpers.js'

for (const [version, openapi] of [['3.0', ORDERS_30], ['3.1', ORDERS_31]] as const) {
  t.test(`OpenAPI ${version}: a body that keeps the contract goes through; one that breaks it is 400 naming each violation`, async (t) => {
    const app = await ordersApp({ openapi })
    const ok = await app.inject({ method: 'POST', url: '/orders', ...json({ item: 'lamp', qty: 2, address: { city: 'Lyon' } }) })
    t.equal(ok.statusCode, 201)
    t.same(ok.json(), { id: 1, item: 'lamp', qty: 2, address: { city: 'Lyon' } })
    t.match(ok.headers['x-decisions'], /schema-validate:allow:PORTCULLIS_SCHEMA_OK/)

    const bad = await app.inject({ method: 'POST', url: '/orders', ...json({ item: '', qty: 0 }) })
    t.equal(bad.statusCode, 400)
    t.match(bad.headers['content-type'], /^application\/problem\+json/)
    const problem = bad.json()
    t.equal(problem.code, 'PORTCULLIS_SCHEMA_INVALID')
    t.same(problem.errors.map((e: { in: string, pointer: string, rule: string }) => [e.in, e.pointer, e.rule]), [
      ['body', '/item', 'minLength'],
      ['body', '/qty', 'minimum']
    ])
    t.match(bad.headers['x-decisions'], /schema-validate:deny:PORTCULLIS_SCHEMA_INVALID/)

    const missing = await app.inject({ method: 'POST', url: '/orders', ...json({ qty: 1 }) })
    t.same(missing.json().errors, [{ in: 'body', pointer: '/item', rule: 'required', message: 'is required' }])
  })

  t.test(`OpenAPI ${version}: unknown body properties are refused on writes (mass assignment), nested ones too`, async (t) => {
    const app = await ordersApp({ openapi })
    const admin = await app.inject({ method: 'POST', url: '/orders', ...json({ item: 'x', qty: 1, admin: true }) })
    t.equal(admin.statusCode, 400)
    t.same(admin.json().errors, [{ in: 'body', pointer: '/admin', rule: 'additionalProperties', message: 'is not a property the contract declares' }])
    const nested = await app.inject({ method: 'POST', url: '/orders', ...json({ item: 'x', qty: 1, address: { city: 'Lyon', owner: 'root' } }) })
    t.same(nested.json().errors.map((e: { pointer: string }) => e.pointer), ['/address/owner'])
    const free = await app.inject({ method: 'POST', url: '/orders', ...json({ item: 'x', qty: 1, metadata: { anything: 1, goes: [2] } }) })
    t.equal(free.statusCode, 201, 'a free-form object (no properties declared) stays free')
    // allOf: the branches together declare the properties, none refuses the other's.
    const patched = await app.inject({ method: 'PATCH', url: '/orders/7', payload: JSON.stringify({ item: 'x', qty: 1, note: null }), headers: { 'content-type': 'application/merge-patch+json' } })
    t.equal(patched.statusCode, 200, patched.body)
    const extra = await app.inject({ method: 'PATCH', url: '/orders/7', payload: JSON.stringify({ item: 'x', qty: 1, role: 'admin' }), headers: { 'content-type': 'application/merge-patch+json' } })
    t.same(extra.json().errors.map((e: { pointer: string }) => e.pointer), ['/role'])
  })

  t.test(`OpenAPI ${version}: parameters are read as their types; a value sent twice where one is expected is refused`, async (t) => {
    const app = await ordersApp({ openapi })
    const ok = await app.inject({ url: '/orders?limit=10&status=open&tag=a', headers: { 'x-tenant': 'acme', cookie: 'session=abcdefgh12' } })
    t.equal(ok.statusCode, 200, ok.body)
    t.same(ok.json().query, { limit: 10, status: 'open', tag: ['a'] }, 'validated values: a number, and a list where the document has one')
    const twice = await app.inject({ url: '/orders?limit=10&limit=20' })
    t.equal(twice.statusCode, 400)
    t.same(twice.json().errors.map((e: { in: string, pointer: string, rule: string }) => [e.in, e.pointer, e.rule]), [['querystring', '/limit', 'type']])
    const tags = await app.inject({ url: '/orders?tag=a&tag=b' })
    t.same(tags.json().query, { tag: ['a', 'b'] })
    const wrong = await app.inject({ url: '/orders?limit=abc&status=lost', headers: { 'x-tenant': 'ACME', cookie: 'session=short' } })
    t.same(wrong.json().errors.map((e: { in: string, pointer: string }) => `${e.in}${e.pointer}`).sort(), ['cookies/session', 'headers/x-tenant', 'querystring/limit', 'querystring/status'])
    const id = await app.inject({ url: '/orders/x1' })
    t.same(id.json().errors.map((e: { in: string, pointer: string, rule: string }) => [e.in, e.pointer, e.rule]), [['params', '/id', 'type']], 'the document\'s name for the parameter')
    t.equal((await app.inject({ url: '/orders/0' })).statusCode, 400, 'minimum')
    t.equal((await app.inject({ url: '/orders/4294967296' })).statusCode, 400, 'format int32')
    t.same((await app.inject({ url: '/orders/42' })).json().params, { orderId: '42' }, 'the route still sees its own parameter')
    t.equal((await app.inject({ url: '/orders?limit=1e400' })).statusCode, 400, 'a number too large to represent')
    const empty = await app.inject({ url: '/orders?&' })
    t.equal(empty.statusCode, 200, 'a query string with nothing in it is an empty query')
    t.same(empty.json().query, {})
  })
}
