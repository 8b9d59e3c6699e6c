import t from 'tap'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import { createPrincipal, portcullisCore, setPrincipal } from '@portcullis/core'
import { groupIp, MemoryStore, portcullisRateLimit, RedisStore, type RateLimitOptions, type RateLimitStore, type RedisScriptClient } from '../src/index.js'

/**
 * An app with core, an ip stage, a stand-in for authn (the `x-user` header names the principal,
 * `x-plan` its plan; `x-fail` refuses it as a failed login would), and a principal stage.
 */
async function build (principal: RateLimitOptions | null, ip: RateLimitOptions | null = null, core = {}): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(portcullisCore, core)
  if (ip !== null) await app.register(portcullisRateLimit, { ...ip, stage: 'ip' })
  app.addHook('onRequest', async (request, reply) => {
    if (request.headers['x-fail'] !== undefined) return await reply.code(401).send({ failed: true })
    const id = request.headers['x-user']
    if (typeof id !== 'string') return
    const plan = request.headers['x-plan']
    const credentialId = request.headers['x-credential']
    setPrincipal(request, createPrincipal({
      id, type: 'user', method: 'test', ...(typeof plan === 'string' ? { plan } : {}), ...(typeof credentialId === 'string' ? { credentialId } : {})
    }))
  })
  if (principal !== null) await app.register(portcullisRateLimit, principal)
  app.get('/api/orders', async () => ({ ok: true }))
  app.get('/api/orders/:id', async (request) => ({ id: (request.params as { id: string }).id }))
  app.get('/health', { config: { rateLimit: false } }, async () => ({ ok: true }))
  app.get('/api/reports', { config: { rateLimit: [{ name: 'reports', limit: 1, window: '1h', key: ['principal', 'route'] }] } }, async () => ({ ok: true }))
  return app
}

const user = (id: string, extra: Record<string, string> = {}) => ({ headers: { 'x-user': id, ...extra } })

t.test('per principal: the 4th request in the window is 429 with Retry-After and the IETF headers; others unaffected', async (t) => {
  const app = await build({ limits: [{ name: 'minute', algorithm: 'fixed-window', limit: 3, window: '1m' }] })
  const first = await app.inject({ url: '/api/orders', ...user('alice') })
  t.equal(first.statusCode, 200)
  t.equal(first.headers['ratelimit-policy'], '"minute";q=3;w=60')
  t.match(first.headers.ratelimit, /^"minute";r=2;t=\d+$/)
  await app.inject({ url: '/api/orders', ...user('alice') })
  await app.inject({ url: '/api/orders/7?x=1', ...user('alice') })
  const refused = await app.inject({ url: '/api/orders', ...user('alice') })
  t.equal(refused.statusCode, 429)
  t.match(refused.headers['content-type'], /^application\/problem\+json/)
  t.equal(refused.json().code, 'PORTCULLIS_RATE_LIMIT_EXCEEDED')
  const retry = Number(refused.headers['retry-after'])
  t.ok(retry >= 1 && retry <= 60, `Retry-After: ${retry}`)
  t.equal(refused.headers.ratelimit, `"minute";r=0;t=${retry}`)
  t.equal(refused.headers['ratelimit-policy'], '"minute";q=3;w=60')
  t.equal((await app.inject({ url: '/api/orders', ...user('bob') })).statusCode, 200, 'bob is counted apart')
  t.match((await app.inject({ url: '/api/orders' })).headers.ratelimit, /^"minute";r=2;/, 'a request without a principal is counted by its address')
  t.equal((await app.inject({ url: '/health', ...user('alice') })).statusCode, 200, 'a route marked rateLimit: false is never limited')
  t.equal((await app.inject({ url: '/health', ...user('alice') })).headers.ratelimit, undefined)
})

t.test('in an app where no route has limits of its own, both stages still count every request', async (t) => {
  // No route config to look up: the stages take their limits without it.
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisRateLimit, { stage: 'ip', limits: [{ name: 'ip', algorithm: 'fixed-window', limit: 4, window: '1m' }] })
  app.addHook('onRequest', async (request) => {
    setPrincipal(request, createPrincipal({ id: 'alice', type: 'user', method: 'test', plan: String(request.headers['x-plan']) }))
  })
  await app.register(portcullisRateLimit, {
    limits: [{ name: 'user', algorithm: 'fixed-window', limit: 3, window: '1m' }],
    plans: { free: [{ name: 'free', algorithm: 'fixed-window', limit: 1, window: '1m' }] }
  })
  app.get('/api/orders', async () => ({ ok: true }))
  const free = await app.inject({ url: '/api/orders', headers: { 'x-plan': 'free' } })
  t.equal(String(free.headers.ratelimit).replace(/;t=\d+/g, ''), '"ip";r=3, "free";r=0', 'the plan\'s limits, after the ip stage\'s')
  t.equal((await app.inject({ url: '/api/orders', headers: { 'x-plan': 'free' } })).statusCode, 429)
  const pro = await app.inject({ url: '/api/orders', headers: { 'x-plan': 'pro' } })
  t.equal(String(pro.headers.ratelimit).replace(/;t=\d+/g, ''), '"ip";r=1, "user";r=2', 'a plan without limits of its own has the defaults')
  t.equal((await app.inject({ url: '/api/orders', headers: { 'x-plan': 'pro' } })).statusCode, 200)
  t.equal((await app.inject({ url: '/api/orders', headers: { 'x-plan': 'pro' } })).statusCode, 429, 'the ip limit, 4 a minute, refuses the 5th')
})

t.test('per IP before authn: failed logins count, and a forged X-Forwarded-For changes nothing', async (t) => {
  const app = await build(null, { limits: [{ name: 'ip', algorithm: 'fixed-window', limit: 3, window: '1m' }] })
  const statuses = []
  for (let i = 0; i < 4; i++) {
    statuses.push((await app.inject({ url: '/api/orders', headers: { 'x-fail': '1', 'x-forwarded-for': `203.0.113.${i}` } })).statusCode)
  }
  t.same(statuses, [401, 401, 401, 429], 'failed logins use up the address\'s limit; the forged header is ignored')
  const address = (remoteAddress: string) => app.inject({ url: '/api/orders', remoteAddress })
  t.equal((await address('2001:db8:1:2::1')).statusCode, 200)
  await address('2001:db8:1:2::2')
  await address('2001:db8:1:2:ffff::3')
  t.equal((await address('2001:db8:1:2::4')).statusCode, 429, 'addresses of one /64 are one client')
  t.equal((await address('2001:db8:1:3::1')).statusCode, 200, 'another /64 is another client')
  t.equal((await address('::ffff:192.0.2.9')).statusCode, 200)
  await address('192.0.2.9')
  await address('192.0.2.9')
  t.equal((await address('::ffff:192.0.2.9')).statusCode, 429, 'an IPv4-mapped address is its IPv4 address')
  t.equal(groupIp('2001:db8:1:2:3:4:5:6', 48), '2001:db8:1:0:0:0:0:0/48')
  t.equal(groupIp('2001:db8::1', 128), '2001:db8::1')
  t.equal(groupIp('not-an-address:', 64), 'not-an-address:')
})

t.test('through a trusted proxy, the client behind it is counted', async (t) => {
  const app = await build(null, { limits: [{ name: 'ip', limit: 1, window: '1m' }] }, { trustedProxies: ['127.0.0.1/32'] })
  t.equal((await app.inject({ url: '/api/orders', headers: { 'x-forwarded-for': '198.51.100.1' } })).statusCode, 200)
  t.equal((await app.inject({ url: '/api/orders', headers: { 'x-forwarded-for': '198.51.100.2' } })).statusCode, 200)
  t.equal((await app.inject({ url: '/api/orders', headers: { 'x-forwarded-for': '198.51.100.1' } })).statusCode, 429)
})

t.test('an address counted per route; plans alone leave principals without a plan unlimited', async (t) => {
  const app = await build(
    { plans: { free: [{ name: 'free', limit: 1, window: '1m' }] } },
    { limits: [{ name: 'ip-route', limit: 2, window: '1m', key: ['ip', 'route'] }] }
  )
  const from = (url: string, extra: Record<string, string> = {}) => app.inject({ url, remoteAddress: '192.0.2.40', headers: { 'x-user': 'erin', ...extra } })
  t.same([(await from('/api/orders')).statusCode, (await from('/api/orders')).statusCode, (await from('/api/orders')).statusCode], [200, 200, 429])
  const other = await from('/api/orders/7')
  t.equal(other.statusCode, 200, 'another route of the same address has its own count')
  t.equal(other.headers['ratelimit-policy'], '"ip-route";q=2;w=60', 'a principal without a plan meets no principal limit')
  t.equal((await from('/api/orders/8', { 'x-plan': 'free' })).statusCode, 200)
  t.equal((await app.inject({ url: '/api/orders/9', remoteAddress: '192.0.2.41', headers: { 'x-user': 'erin', 'x-plan': 'free' } })).statusCode, 429, 'the free plan: one a minute')
})

t.test('both stages: their headers are one list; plans choose the limits; route rules replace them', async (t) => {
  const app = await build({
    limits: [{ name: 'daily', algorithm: 'fixed-window', limit: 1000, window: '1d' }, { name: 'free', limit: 2, window: '1m' }],
    plans: { pro: [{ name: 'pro', limit: 5, window: '1m', burst: 5 }] },
    headers: 'legacy'
  }, { limits: [{ name: 'ip', limit: 100, window: '1m' }] })
  const first = await app.inject({ url: '/api/orders', ...user('alice') })
  t.equal(first.headers['ratelimit-policy'], '"ip";q=100;w=60, "daily";q=1000;w=86400, "free";q=2;w=60')
  t.match(first.headers.ratelimit, /^"ip";r=99;t=1, "daily";r=999;t=\d+, "free";r=1;t=\d+$/)
  t.same([first.headers['x-ratelimit-limit'], first.headers['x-ratelimit-remaining']], ['2', '1'], 'legacy headers: the limit closest to refusing')
  await app.inject({ url: '/api/orders', ...user('alice') })
  const refused = await app.inject({ url: '/api/orders', ...user('alice') })
  t.equal(refused.statusCode, 429)
  t.match(refused.headers.ratelimit, /^"ip";r=97;t=\d, "daily";r=998;t=\d+, "free";r=0;t=\d+$/, 'the 429 carries every stage\'s items')
  t.equal(refused.headers['x-ratelimit-remaining'], '0')
  t.ok(Number(refused.headers['x-ratelimit-reset']) >= 1)
  const pro = []
  for (let i = 0; i < 6; i++) pro.push((await app.inject({ url: '/api/orders', ...user('carol', { 'x-plan': 'pro' }) })).statusCode)
  t.same(pro, [200, 200, 200, 200, 200, 429], 'the pro plan has its own limits')
  t.equal((await app.inject({ url: '/api/orders', ...user('dave', { 'x-plan': 'unknown' }) })).statusCode, 200, 'an unknown plan gets the default limits')
  t.equal((await app.inject({ url: '/api/reports', ...user('alice') })).statusCode, 200, 'a route with its own rules is not held to the defaults')
  for (const variant of ['/api/reports?page=2', '/api/%72eports']) {
    const again = await app.inject({ url: variant, ...user('alice') })
    t.equal(again.statusCode, 429, `${variant} counts against the same bucket`)
    t.match(again.headers.ratelimit, /"reports";r=0;/, 'the route\'s own limit refused it')
  }
})

t.test('anonymous requests, 404s and OPTIONS are counted, by address', async (t) => {
  const app = await build({ limits: [{ name: 'minute', limit: 2, window: '1m', key: ['credential', 'plan', 'tenant'] }], headers: 'none' })
  t.equal((await app.inject({ url: '/nowhere' })).statusCode, 404)
  t.equal((await app.inject({ method: 'OPTIONS', url: '/api/orders' })).statusCode, 404)
  const refused = await app.inject({ url: '/api/orders' })
  t.equal(refused.statusCode, 429)
  t.equal(refused.headers.ratelimit, undefined, 'headers: none sends no RateLimit fields')
  t.ok(Number(refused.headers['retry-after']) >= 1, 'but a 429 keeps Retry-After')
  t.equal((await app.inject({ url: '/api/orders', ...user('alice') })).statusCode, 200, 'a principal is counted by its own credential')
  const key = user('alice', { 'x-credential': 'key-1' })
  await app.inject({ url: '/api/orders', ...key })
  await app.inject({ url: '/api/orders', ...key })
  t.equal((await app.inject({ url: '/api/orders', ...key })).statusCode, 429, 'by its credential id when it has one')
  t.equal((await app.inject({ url: '/api/orders', ...user('alice', { 'x-credential': 'key-2' }) })).statusCode, 200, 'another key of the same principal is counted apart')
})

t.test('tenant and plan keys; report mode lets requests through and records would-deny', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  app.addHook('onRequest', async (request) => {
    setPrincipal(request, createPrincipal({ id: String(request.headers['x-user']), type: 'user', method: 'test', tenant: 'acme', plan: 'free' }))
  })
  await app.register(portcullisRateLimit, { mode: 'report', limits: [{ name: 'tenant', limit: 1, window: '1m', key: ['tenant', 'plan'] }] })
  app.get('/', async (request) => ({ decisions: request.decisions }))
  await app.inject({ url: '/', headers: { 'x-user': 'a' } })
  const over = await app.inject({ url: '/', headers: { 'x-user': 'b' } })
  t.equal(over.statusCode, 200, 'report mode never refuses')
  t.same(over.json().decisions.map((d: { outcome: string, reason: string, rule: string }) => [d.outcome, d.reason, d.rule]), [['would-deny', 'PORTCULLIS_RATE_LIMIT_EXCEEDED', 'tenant']], 'b shares acme\'s free-plan limit')
})

t.test('concurrency: a slot per request in flight, given back when it ends', async (t) => {
  const app = await build({ limits: [{ name: 'inflight', algorithm: 'concurrency', limit: 1 }] })
  let release: () => void = () => {}
  app.get('/slow', async () => { await new Promise<void>((resolve) => { release = resolve }); return { ok: true } })
  const slow = app.inject({ url: '/slow', ...user('alice') })
  await sleep(20)
  const meanwhile = await app.inject({ url: '/api/orders', ...user('alice') })
  t.equal(meanwhile.statusCode, 429)
  t.equal(meanwhile.headers['ratelimit-policy'], '"inflight";q=1;qu="concurrent-requests"')
  release()
  t.equal((await slow).statusCode, 200)
  t.equal((await app.inject({ url: '/api/orders', ...user('alice') })).statusCode, 200, 'the slot is free once the response is sent')
})

t.test('concurrency on one route: the route gives its slots back, other routes hold none', async (t) => {
  const app = await build({ limits: [{ name: 'minute', limit: 100, window: '1m' }] })
  let release: () => void = () => {}
  app.get('/export', { config: { rateLimit: [{ name: 'exports', algorithm: 'concurrency', limit: 1, key: 'tenant' }] } }, async () => {
    await new Promise<void>((resolve) => { release = resolve })
    return { ok: true }
  })
  const first = app.inject({ url: '/export', ...user('alice') })
  await sleep(20)
  t.equal((await app.inject({ url: '/export', ...user('bob') })).statusCode, 429, 'one export at a time for the tenant')
  t.equal((await app.inject({ url: '/api/orders', ...user('bob') })).statusCode, 200, 'other routes are not held')
  release()
  t.equal((await first).statusCode, 200)
  const again = app.inject({ url: '/export', ...user('bob') })
  await sleep(20)
  release()
  t.equal((await again).statusCode, 200, 'the slot was given back')
})

t.test('a limit changed by a new policy keeps its count: no reset, no double count', async (t) => {
  const store = new MemoryStore()
  const before = await build({ store, limits: [{ name: 'minute', algorithm: 'fixed-window', limit: 5, window: '1m' }] })
  for (let i = 0; i < 3; i++) await before.inject({ url: '/api/orders', ...user('alice') })
  const after = await build({ store, limits: [{ name: 'minute', algorithm: 'fixed-window', limit: 4, window: '1m' }] })
  t.equal((await after.inject({ url: '/api/orders', ...user('alice') })).statusCode, 200, 'the 4th of 4')
  t.equal((await after.inject({ url: '/api/orders', ...user('alice') })).statusCode, 429, 'the 5th is over the new limit')
})

t.test('a store that cannot answer: 503 when failing closed, an error from the store otherwise', async (t) => {
  const dead = new Redis({ host: '127.0.0.1', port: 1, lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null })
  const closed = new RedisStore({ client: dead as unknown as RedisScriptClient, failMode: 'closed' })
  const app = await build({ store: closed, limits: [{ name: 'minute', limit: 5, window: '1m' }] })
  const refused = await app.inject({ url: '/api/orders', ...user('alice') })
  t.equal(refused.statusCode, 503)
  t.equal(refused.json().code, 'PORTCULLIS_RATE_LIMIT_STORE_UNAVAILABLE')
  const broken: RateLimitStore = { consume: () => { throw new Error('broken store') }, release: () => {} }
  const other = await build({ store: broken, limits: [{ name: 'minute', limit: 5, window: '1m' }] })
  t.equal((await other.inject({ url: '/api/orders', ...user('alice') })).statusCode, 500, 'a store that throws fails the request, closed')
})

t.test('three instances sharing one Redis: with a limit of 100, at most 100 admitted over real HTTP', async (t) => {
  const clients = [new Redis(), new Redis(), new Redis()]
  t.teardown(() => Promise.all(clients.map(async (c) => await c.quit())))
  await Promise.all(clients.map(async (c) => { if (c.status !== 'ready') await once(c, 'ready') }))
  const prefix = `portcullis:test:rl:${process.pid}:${Date.now()}:`
  const apps = await Promise.all(clients.map(async (client) => await build({
    store: new RedisStore({ client: client as unknown as RedisScriptClient, prefix, timeoutMs: 2000 }),
    limits: [{ name: 'hour', algorithm: 'fixed-window', limit: 100, window: '1h' }]
  })))
  const urls = await Promise.all(apps.map(async (app) => await app.listen({ host: '127.0.0.1', port: 0 })))
  t.teardown(() => Promise.all(apps.map(async (app) => { await app.close() })))
  // 30 clients at once, spread over the instances, 300 requests in all.
  const statuses: number[] = []
  await Promise.all(Array.from({ length: 30 }, async (_, client) => {
    for (let i = 0; i < 10; i++) {
      const response = await fetch(`${urls[(client + i) % 3] as string}/api/orders`, { headers: { 'x-user': 'alice' } })
      await response.arrayBuffer()
      statuses.push(response.status)
    }
  }))
  const admitted = statuses.filter((s) => s === 200).length
  t.equal(admitted, 100, `${admitted} of ${statuses.length} admitted`)
  t.equal(statuses.filter((s) => s === 429).length, 200, 'every other one refused with 429')
})

t.test('bad options fail at startup, naming the option and what is allowed', async (t) => {
  const cases: Array<[RateLimitOptions, RegExp]> = [
    [{ stage: 'edge' as 'ip' }, /^rateLimit\.stage must be ip or principal/],
    [{ headers: 'draft' as 'ietf' }, /^rateLimit\[principal\]\.headers must be ietf, legacy or none/],
    [{ ipv6Prefix: 12 }, /^rateLimit\[principal\]\.ipv6Prefix must be a whole number from 32 to 128/],
    [{ store: {} as RateLimitStore }, /^rateLimit\[principal\]\.store must be a MemoryStore, a RedisStore/],
    [{ limits: {} as [] }, /^rateLimit\[principal\]\.limits must be a list of limits/],
    [{ limits: [null as never] }, /^rateLimit\[principal\]\.limits\[0\] must be a limit/],
    [{ limits: [{ name: 'a', limit: 1, window: 1 }, { name: 'a', limit: 2, window: 1 }] }, /^rateLimit\[principal\]\.limits\[1\]\.name must be a name no other limit/],
    [{ limits: [{ name: 'a', limit: 1, window: 1, key: 'cookie' as 'ip' }] }, /^rateLimit\[principal\]\.limits\[0\]\.key must be one of ip, principal, credential, plan, tenant, route/],
    [{ limits: [{ name: 'a', limit: 1, window: 1, key: ['ip', 'ip'] }] }, /without repeats/],
    [{ stage: 'ip', limits: [{ name: 'a', limit: 1, window: 1, key: 'principal' }] }, /^rateLimit\[ip\]\.limits\[0\]\.key must be one of ip, route/],
    [{ stage: 'ip', plans: {} }, /^rateLimit\[ip\]\.plans must be used at the principal stage only/],
    [{ plans: null as never }, /^rateLimit\[principal\]\.plans must be an object/],
    [{ unknown: 1 } as RateLimitOptions, /rateLimit/]
  ]
  for (const [options, message] of cases) {
    const app = Fastify()
    await app.register(portcullisCore)
    app.register(portcullisRateLimit, options)
    await t.rejects(async () => { await app.ready() }, { message }, JSON.stringify(options))
  }
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisRateLimit, { limits: [] })
  t.throws(() => app.get('/x', { config: { rateLimit: [{ name: 'x', limit: 0, window: 1 }] } }, async () => 'x'),
    { message: /^route GET \/x config\.rateLimit\[0\]\.limit must be a whole number/ }, 'a route with a bad limit is refused as it is added')
})

t.test('a limit name used at both stages is refused at startup: the two would share counts in one store', async (t) => {
  const store = new MemoryStore()
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisRateLimit, { stage: 'ip', store, limits: [{ name: 'default', limit: 10, window: '1m' }] })
  await t.rejects(async () => {
    await app.register(portcullisRateLimit, { store, limits: [{ name: 'other', limit: 5, window: '1m' }, { name: 'default', limit: 5, window: '1m' }] })
  }, /rateLimit\[principal\]\.limits\[1\]\.name must be a name the ip stage does not use too/)
  const routes = Fastify()
  await routes.register(portcullisCore)
  await routes.register(portcullisRateLimit, { stage: 'ip', limits: [{ name: 'ip', limit: 10, window: '1m' }] })
  await routes.register(portcullisRateLimit, { limits: [{ name: 'user', limit: 5, window: '1m' }] })
  t.throws(() => routes.get('/x', { config: { rateLimit: [{ name: 'ip', limit: 1, window: '1m' }] } }, async () => 'x'), /config\.rateLimit\[0\]\.name must be a name the ip stage does not use too/)
  routes.get('/y', { config: { rateLimit: [{ name: 'user', limit: 1, window: '1m' }] } }, async () => 'y')
  t.equal((await routes.inject({ url: '/y' })).statusCode, 200, 'one name within a stage, in its defaults and a route\'s own list, is allowed')
})
