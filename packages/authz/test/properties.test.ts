import { test } from 'tap'
import { Readable } from 'node:stream'
import { gunzipSync, gzipSync } from 'node:zlib'
import Fastify, { type FastifyInstance, type RouteHandlerMethod } from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { as, build } from './helpers.js'
import { MASK, portcullisAuthz, type AuthzOptions, type PropertyRules } from '../src/index.js'

const roles: AuthzOptions['roles'] = { user: {}, support: {}, auditor: {}, intern: {}, admin: { inherits: ['user'] } }

const order = { id: '7', item: 'lamp', qty: 2, owner: 'alice', card: { last4: '4242', holder: 'Alice' }, notes: [{ by: 'bob', text: 'fragile', internal: true }] }

const properties: PropertyRules = {
  user: { write: ['item', 'qty', 'notes.*.text'], read: ['id', 'item', 'qty', 'card', 'notes.*.text'], mask: ['card.holder'] },
  support: { read: ['id', 'owner', 'card'], mask: ['card'] },
  auditor: { mask: ['owner', 'card.holder', 'qty.units', 'notes.*.by'] },
  intern: { read: ['id'], mask: ['owner'] },
  admin: { write: ['*'], read: ['*'] }
}

async function appWith (handler: RouteHandlerMethod, rules: PropertyRules = properties, options: AuthzOptions = {}): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(portcullisCore)
  app.addHook('onRequest', async (request) => {
    const { createPrincipal, setPrincipal } = await import('@portcullis/core')
    const spec = request.headers['x-test-principal']
    if (typeof spec !== 'string') return
    const [id, list = ''] = spec.split(';')
    setPrincipal(request, createPrincipal({ id: id as string, type: 'user', method: 'test', roles: list.split(',').filter(Boolean) }))
  })
  await app.register(portcullisAuthz, { roles, ...options })
  app.get('/orders/7', { config: { authz: { properties: rules } } }, handler)
  return app
}

test('write allowlists refuse fields the role may not set, naming them (mass assignment)', async (t) => {
  const app = await build({ roles }, { 'POST /orders': { anyRole: ['user'], properties } })
  const post = (who: string, payload: unknown) => app.inject({ method: 'POST', url: '/orders', headers: as(who), payload: payload as object })
  t.equal((await post('alice;user', { item: 'lamp', qty: 1, notes: [{ text: 'hi' }] })).statusCode, 200)
  const res = await post('alice;user', { item: 'lamp', owner: 'bob', notes: [{ text: 'hi', by: 'bob' }], 'a/b~': 1 })
  t.equal(res.statusCode, 403)
  t.equal(res.json().code, 'PORTCULLIS_AUTHZ_PROPERTY_NOT_WRITABLE')
  t.same(res.json().errors.map((e: { pointer: string }) => e.pointer), ['/owner', '/notes/0/by', '/a~1b~0'])
  t.notMatch(res.body, /bob/, 'values are not echoed')
  t.equal((await post('alice;user', { item: { name: 'lamp' } })).statusCode, 200, 'an allowed field covers what is under it')
  t.equal((await post('alice;user', { notes: 'x' })).statusCode, 403, 'a field whose parts are listed cannot be replaced whole')
  t.equal((await post('bob;admin', { item: 'x', owner: 'carol', status: 'paid' })).statusCode, 200)
  t.equal((await post('sam;support', { item: 'x' })).statusCode, 403, 'a role without write rules may set nothing')
  const upload = (who: string) => app.inject({ method: 'POST', url: '/orders', headers: { ...as(who), 'content-type': 'application/octet-stream' }, payload: Buffer.from('raw') })
  const raw = await upload('alice;user')
  t.equal(raw.statusCode, 403, 'a body with no fields to check is refused')
  t.same(raw.json().errors.map((e: { pointer: string }) => e.pointer), [''])
  t.equal((await upload('bob;admin')).statusCode, 200, 'unless the role may write everything')
  const scalar = await app.inject({ method: 'POST', url: '/orders', headers: { ...as('alice;user'), 'content-type': 'application/json' }, payload: '"lamp"' })
  t.equal(scalar.statusCode, 403, 'a JSON body that is a plain value sets no allowed field')
  const many = await post('alice;user', Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`f${i}`, i])))
  t.equal(many.json().errors.length, 10, 'the answer names at most ten fields')
  t.same(app.reached, ['POST /orders', 'POST /orders', 'POST /orders', 'POST /orders'])
})

test('a request without a body is not refused by write rules; write rules alone leave responses be', async (t) => {
  const app = await build({ roles }, { 'DELETE /orders/:id': { anyRole: ['user'], properties }, 'PUT /orders/:id': { anyRole: ['user'], properties: { user: { write: ['item'] } } } })
  t.equal((await app.inject({ method: 'DELETE', url: '/orders/1', headers: as('alice;user') })).statusCode, 200)
  const put = await app.inject({ method: 'PUT', url: '/orders/1', headers: as('alice;user'), payload: { item: 'x' } })
  t.same(put.json().body, { item: 'x' })
  t.ok(put.json().headers, 'fields no read rule names are sent')
})

test('a "__proto__" field in a filtered JSON response stays a field', async (t) => {
  const app = await appWith(async (_request, reply) => reply.type('application/json').send('{"id":"7","__proto__":{"admin":true},"x":1}'), { user: { read: ['id', '__proto__'] } })
  const res = await app.inject({ url: '/orders/7', headers: { 'x-test-principal': 'a;user' } })
  t.equal(res.body, '{"id":"7","__proto__":{"admin":true}}')
})

test('read allowlists and masks shape the response per role', async (t) => {
  const app = await appWith(async () => order)
  const read = async (who: string) => (await app.inject({ url: '/orders/7', headers: { 'x-test-principal': who } })).json()
  t.same(await read('alice;user'), { id: '7', item: 'lamp', qty: 2, card: { last4: '4242', holder: MASK }, notes: [{ text: 'fragile' }] })
  t.same(await read('sam;support'), { id: '7', owner: 'alice', card: MASK })
  t.same(await read('sam;support,user'), { id: '7', item: 'lamp', qty: 2, owner: 'alice', card: { last4: '4242', holder: 'Alice' }, notes: [{ text: 'fragile' }] },
    'roles add up: a field is masked only if every role that masks masks it')
  t.same(await read('bob;admin'), order, 'admin includes user, but admin has no masks')
  t.same(await read('ivy;intern'), { id: '7' }, 'a field that may not be read is left out, not masked: even its name is hidden')
  t.same(await read('eve;guest'), {}, 'a principal none of whose roles is named reads nothing')
  t.same(await read('ann;auditor'), { ...order, owner: MASK, qty: MASK, card: { last4: '4242', holder: MASK }, notes: [{ ...order.notes[0], by: MASK }] },
    'masks alone leave every field readable; a plain value where a masked field was expected is masked whole')
})

test('lists are filtered item by item, and errors pass untouched', async (t) => {
  const app = await appWith(async (request, reply) => {
    if (request.headers['x-fail'] !== undefined) return reply.code(409).send({ message: 'conflict', owner: 'alice' })
    return [order, order]
  }, { user: { read: ['*.id', '*.notes.*.by'] }, support: { read: ['notes'] } })
  const list = (await app.inject({ url: '/orders/7', headers: { 'x-test-principal': 'a;user' } })).json()
  t.same(list, [{ id: '7', notes: [{ by: 'bob' }] }, { id: '7', notes: [{ by: 'bob' }] }])
  t.same((await app.inject({ url: '/orders/7', headers: { 'x-test-principal': 'a;support' } })).json(), [null, null], 'items the role may not see become null: positions hold')
  const failed = await app.inject({ url: '/orders/7', headers: { 'x-test-principal': 'a;user', 'x-fail': '1' } })
  t.same(failed.json(), { message: 'conflict', owner: 'alice' }, 'only 2xx responses are representations to filter')
})

test('named keys get what "any key" allows, at every depth', async (t) => {
  const prices = { eur: { amount: 10, currency: 'EUR', cost: 4, history: [{ at: 1, by: 'x' }] }, usd: { amount: 11, currency: 'USD', cost: 5, history: [] }, gbp: 12 }
  const app = await appWith(async () => ({ prices }), { user: { read: ['prices.*.amount', 'prices.*.history.*.at', 'prices.eur.currency', 'prices.eur.history.*.by'] } })
  t.same((await app.inject({ url: '/orders/7', headers: { 'x-test-principal': 'a;user' } })).json(), {
    prices: { eur: { amount: 10, currency: 'EUR', history: [{ at: 1, by: 'x' }] }, usd: { amount: 11, history: [] } }
  }, 'a plain value where only fields under it may be read is left out')
})

test('JSON sent as text or as a stream (as proxied responses are) is filtered too', async (t) => {
  const text = JSON.stringify(order)
  const app = await appWith(async (request, reply) => {
    reply.type('application/vnd.orders+json; charset=utf-8').header('etag', '"v1"')
    const kind = request.headers['x-kind']
    if (kind === 'buffer') return reply.send(Buffer.from(text))
    if (kind === 'stream') return reply.header('content-length', text.length).send(Readable.from([text.slice(0, 10), Buffer.from(text.slice(10))]))
    return reply.send(text)
  })
  for (const kind of ['text', 'buffer', 'stream']) {
    const res = await app.inject({ url: '/orders/7', headers: { 'x-test-principal': 's;support', 'x-kind': kind } })
    t.same(res.json(), { id: '7', owner: 'alice', card: MASK }, kind)
    t.equal(res.headers['content-length'], String(res.rawPayload.length), `${kind}: the length is the filtered body's`)
    t.equal(res.headers.etag, undefined, `${kind}: the validator of the unfiltered body is dropped`)
  }
})

test('a response that cannot be filtered is not sent', async (t) => {
  const app = await appWith(async (request, reply) => {
    const kind = request.headers['x-kind']
    if (kind === 'html') return reply.type('text/html').send('<p>alice</p>')
    if (kind === 'gzip') return reply.type('application/json').header('content-encoding', 'gzip').send(gzipSync(JSON.stringify(order)))
    if (kind === 'broken') return reply.type('application/json').send('{"id": ')
    if (kind === 'empty') return reply.code(204).send()
    if (kind === 'untyped') return reply.send('{"id": "7"}')
    return reply.type('application/json').send(Readable.from([Buffer.alloc(5 * 1024 * 1024, 32)]))
  })
  for (const kind of ['html', 'gzip', 'broken', 'untyped', 'huge']) {
    const res = await app.inject({ url: '/orders/7', headers: { 'x-test-principal': 'a;user', 'x-kind': kind } })
    t.equal(res.statusCode, 500, kind)
    t.equal(res.json().code, 'PORTCULLIS_AUTHZ_RESPONSE_UNFILTERABLE', kind)
    t.notMatch(res.body, /alice/, kind)
  }
  t.equal((await app.inject({ url: '/orders/7', headers: { 'x-test-principal': 'a;user', 'x-kind': 'empty' } })).statusCode, 204)
})

test('report mode records what read rules would hide and sends the response whole', async (t) => {
  const decisions: unknown[] = []
  const app = await appWith(async (request, reply) => {
    return request.headers['x-kind'] === 'text' ? reply.type('application/json').send(JSON.stringify({ id: '7' })) : order
  }, properties, { mode: 'report' })
  app.addHook('onResponse', async (request) => { decisions.push(...(request.decisions ?? []).map((d) => `${d.outcome} ${d.reason}`)) })
  t.same((await app.inject({ url: '/orders/7', headers: { 'x-test-principal': 's;support' } })).json(), order)
  await app.inject({ url: '/orders/7', headers: { 'x-test-principal': 's;support', 'x-kind': 'text' } })
  t.same(decisions, ['allow PORTCULLIS_AUTHZ_OK', 'allow PORTCULLIS_AUTHZ_CONDITIONS_OK', 'would-deny PORTCULLIS_AUTHZ_PROPERTY_HIDDEN', 'allow PORTCULLIS_AUTHZ_OK', 'allow PORTCULLIS_AUTHZ_CONDITIONS_OK'],
    'nothing would be hidden from the second response')
  decisions.length = 0
  t.same((await app.inject({ url: '/orders/7' })).json(), order)
  t.same(decisions, ['would-deny PORTCULLIS_AUTHZ_UNAUTHENTICATED', 'would-deny PORTCULLIS_AUTHZ_PROPERTY_HIDDEN'], 'without a principal, conditions are not evaluated and nothing is readable')
})

test('bad property rules fail at startup naming them', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    [[], /config\.authz\.properties must be an object of role names/],
    [{}, /config\.authz\.properties must be an object of role names/],
    [{ user: { write: 'item' } }, /properties\.user\.write must be a list of field paths/],
    [{ user: { read: ['a..b'] } }, /properties\.user\.read must be a list of field paths/],
    [{ user: { mask: ['a b'] } }, /properties\.user\.mask must be a list of field paths/],
    [{ user: { hide: ['a'] } }, /hide/],
    [{ usr: { read: ['a'] } }, /naming declared roles only: user, support, auditor, intern, admin \(got "usr"\)/]
  ]
  for (const [rules, message] of cases) {
    const app = Fastify()
    await app.register(portcullisCore)
    await app.register(portcullisAuthz, { roles })
    await t.rejects(async () => {
      app.get('/x', { config: { authz: { properties: rules } as never } }, async () => 'x')
      await app.ready()
    }, { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, JSON.stringify(rules))
  }
})

test('step 9 keeps its place, and step 11 filters objects before any onSend hook', async (t) => {
  const seen: string[] = []
  const app = await appWith(async () => order)
  // Registered after authz, as a compression plugin would be: it must get the filtered body.
  app.addHook('onSend', async (_request, reply, payload) => {
    if (typeof payload !== 'string') return payload
    reply.header('content-encoding', 'gzip')
    return gzipSync(payload)
  })
  app.addHook('preHandler', async (request) => { seen.push(String(request.headers['x-test-principal'])) })
  app.post('/orders', { config: { authz: { properties } } }, async () => ({ ok: true }))
  app.get('/orders/text', { config: { authz: { properties } } }, async (_request, reply) => reply.type('application/json').send(JSON.stringify(order)))
  const res = await app.inject({ url: '/orders/7', headers: { 'x-test-principal': 'sam;support' } })
  t.equal(res.statusCode, 200)
  t.same(JSON.parse(gunzipSync(res.rawPayload).toString()), { id: '7', owner: 'alice', card: MASK })
  const denied = await app.inject({ method: 'POST', url: '/orders', headers: { 'x-test-principal': 'sam;support' }, payload: { item: 'x' } })
  t.equal(denied.statusCode, 403)
  t.same(seen, ['sam;support'], 'the app\'s preHandler never ran for the denied request')
  // Text is filtered at the route's onSend, after the app's: compressed, it cannot be read.
  const text = await app.inject({ url: '/orders/text', headers: { 'x-test-principal': 'sam;support' } })
  t.equal(text.statusCode, 500, 'a body compressed before it could be filtered is not sent')
  const problem = gunzipSync(text.rawPayload).toString()
  t.equal(JSON.parse(problem).code, 'PORTCULLIS_AUTHZ_RESPONSE_UNFILTERABLE')
  t.notMatch(problem, /Alice|4242/)
})

test('read rules are hooks of the routes that have them, after the app\'s preSerialization hooks', async (t) => {
  const app = await appWith(async () => order)
  app.get('/plain', { config: { authz: false } }, async () => order)
  // The route's own hooks, one alone and one in a list, stay and run before the read rules.
  app.get('/own', {
    preSerialization: [async (_request, reply, payload) => { reply.header('x-own-1', 'yes'); return payload }],
    onSend: async (_request, reply, payload) => { reply.header('x-own-2', 'yes'); return payload },
    config: { authz: { properties } }
  }, async () => order)
  let wrapped = 0
  app.addHook('preSerialization', async (request, _reply, payload) => {
    if (request.url !== '/orders/7') return payload
    wrapped++
    return { data: payload }
  })
  await app.ready()
  t.same((await app.inject('/plain')).json(), order, 'a route without read rules is left alone')
  const own = await app.inject({ url: '/own', headers: { 'x-test-principal': 'olga;intern' } })
  t.same(own.json(), { id: '7' })
  t.match(own.headers, { 'x-own-1': 'yes', 'x-own-2': 'yes' })
  const res = await app.inject({ url: '/orders/7', headers: { 'x-test-principal': 'olga;intern' } })
  t.equal(wrapped, 1)
  t.same(res.json(), {}, 'an envelope the rules do not name is hidden whole: fails closed')
  const head = await app.inject({ method: 'HEAD', url: '/orders/7', headers: { 'x-test-principal': 'olga;intern' } })
  t.equal(head.statusCode, 200)
  t.equal(head.headers['content-length'], '2', 'HEAD is filtered like GET: its length is the filtered body\'s')
})
