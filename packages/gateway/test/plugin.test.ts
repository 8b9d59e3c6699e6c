import { test } from 'tap'
import Fastify from 'fastify'
import { createPrincipal, setPrincipal, SnapshotHolder } from '@portcullis/core'
import { createApiKey } from '@portcullis/authn'
import { portcullis, RECOMMENDED_ORDER } from '../src/index.js'

test('the meta-plugin installs core: decorations, client IP, snapshot pin and problem+json', async (t) => {
  const snapshot = new SnapshotHolder({ version: 'v7', value: {} })
  const app = Fastify()
  await app.register(portcullis, { core: { trustedProxies: ['10.0.0.0/8'], snapshot } })
  app.get('/who', async (request) => {
    setPrincipal(request, createPrincipal({ id: 'svc', type: 'service', method: 'test' }))
    return { ip: request.clientIp, version: request.policySnapshot?.version, principal: request.principal?.id }
  })
  const res = await app.inject({ url: '/who', remoteAddress: '10.0.0.2', headers: { 'x-forwarded-for': '198.51.100.9' } })
  t.same(res.json(), { ip: '198.51.100.9', version: 'v7', principal: 'svc' })
  const missing = await app.inject('/missing')
  t.equal(missing.statusCode, 404)
  t.equal(missing.headers['content-type'], 'application/problem+json; charset=utf-8')
  t.equal(missing.json().code, 'PORTCULLIS_CORE_NOT_FOUND')
  t.ok(app.hasPlugin('@portcullis/core'))
})

test('the meta-plugin works with no options at all', async (t) => {
  const app = Fastify()
  await app.register(portcullis)
  app.get('/', async (request) => ({ ip: request.clientIp }))
  t.same((await app.inject('/')).json(), { ip: '127.0.0.1' })
})

test('options for parts it does not have are refused, not ignored', async (t) => {
  const app = Fastify()
  app.register(portcullis, { validation: { strict: true } } as never)
  await t.rejects(async () => app.ready(), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: /^portcullis\.validation is not a known option; allowed: core, helmet, ipRules, userAgents, cors, deprecation, mtls, ipRateLimit, authn, rateLimit, authz, schemaValidate, masking, audit, observe, onPrincipal$/ })
  const bad = Fastify()
  bad.register(portcullis, { core: { trustedProxies: ['localhost'] } })
  await t.rejects(async () => bad.ready(), { message: /core\.trustedProxies\[0\]: "localhost" is not an IP address/ })
})

test('authn joins the chain after core when configured', async (t) => {
  const key = createApiKey({ id: 'k1', owner: { id: 'svc', type: 'service' } })
  const app = Fastify()
  await app.register(portcullis, { core: {}, authn: { methods: { key: { type: 'api-key', keys: [key.record] } } } })
  app.get('/who', async (request) => ({ id: request.principal?.id, ip: request.clientIp }))
  app.get('/open', { config: { authn: false } }, async () => 'open')
  t.equal((await app.inject('/who')).statusCode, 401)
  t.same((await app.inject({ url: '/who', headers: { 'x-api-key': key.key } })).json(), { id: 'svc', ip: '127.0.0.1' })
  t.equal((await app.inject('/open')).statusCode, 200)
  t.ok(app.hasPlugin('@portcullis/authn'))
  const without = Fastify()
  await without.register(portcullis)
  t.notOk(without.hasPlugin('@portcullis/authn'), 'not registered without options')
})

test('IP rules, authn and authz run in the recommended order', async (t) => {
  const key = createApiKey({ id: 'k1', owner: { id: 'alice', type: 'user', roles: ['user'] } })
  const app = Fastify()
  await app.register(portcullis, {
    ipRules: { deny: ['192.0.2.0/24'] },
    authn: { methods: { key: { type: 'api-key', keys: [key.record] } } },
    authz: { roles: { user: {}, admin: { inherits: ['user'] } } }
  })
  app.get('/orders', { config: { authz: { anyRole: ['user'] } } }, async (request) => ({ decisions: request.decisions?.map((d) => d.plugin) }))
  app.delete('/orders/:id', { config: { authz: { anyRole: ['admin'] } } }, async () => 'deleted')
  const headers = { 'x-api-key': key.key }
  t.same((await app.inject({ url: '/orders', headers })).json(), { decisions: ['@portcullis/authz/ip-rules', '@portcullis/authn', '@portcullis/authz'] }, 'one decision per step, in order')
  t.equal((await app.inject({ url: '/orders' })).statusCode, 401, 'authn refuses before authz is asked')
  t.equal((await app.inject({ method: 'DELETE', url: '/orders/1', headers })).statusCode, 403)
  const blocked = await app.inject({ url: '/orders', headers, remoteAddress: '192.0.2.5' })
  t.equal(blocked.statusCode, 403, 'the IP rule refuses before credentials are even looked at')
  t.equal(blocked.json().code, 'PORTCULLIS_AUTHZ_IP_DENIED')
})

test('rate limits join the chain: by address before authn, by principal after it', async (t) => {
  const key = createApiKey({ id: 'k1', owner: { id: 'alice', type: 'user' } })
  const app = Fastify()
  await app.register(portcullis, {
    ipRateLimit: { limits: [{ name: 'ip', algorithm: 'fixed-window', limit: 3, window: '1m' }] },
    authn: { methods: { key: { type: 'api-key', keys: [key.record] } } },
    rateLimit: { limits: [{ name: 'user', algorithm: 'fixed-window', limit: 1, window: '1m' }] }
  })
  app.get('/orders', async (request) => ({ decisions: request.decisions?.map((d) => `${d.plugin} ${d.reason}`) }))
  const headers = { 'x-api-key': key.key }
  t.same((await app.inject({ url: '/orders', headers })).json().decisions, [
    '@portcullis/rate-limit PORTCULLIS_RATE_LIMIT_OK', '@portcullis/authn PORTCULLIS_AUTHN_OK', '@portcullis/rate-limit PORTCULLIS_RATE_LIMIT_OK'
  ], 'the address is counted before authn, the principal after')
  const second = await app.inject({ url: '/orders', headers })
  t.equal(second.statusCode, 429)
  t.match(second.headers.ratelimit, /^"ip";r=1;t=\d+, "user";r=0;t=\d+$/)
  t.equal((await app.inject({ url: '/orders' })).statusCode, 401, 'a failed login still counts against the address')
  t.equal((await app.inject({ url: '/orders' })).statusCode, 429, 'and is refused once the address is over its limit')
  const staged = Fastify()
  staged.register(portcullis, { rateLimit: { stage: 'ip', limits: [] } as never })
  await t.rejects(async () => staged.ready(), { message: /^portcullis\.rateLimit\.stage must be left out: the rateLimit part always runs at stage principal/ })
})

test('the recommended order is complete and consistent', async (t) => {
  t.same([...new Set(RECOMMENDED_ORDER.map((s) => s.step))], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 'every step, in order')
  t.equal(new Set(RECOMMENDED_ORDER.map((s) => s.key)).size, RECOMMENDED_ORDER.length, 'option keys are unique')
  t.equal(RECOMMENDED_ORDER[0]?.key, 'core', 'core pins the request first')
  t.equal(RECOMMENDED_ORDER[1]?.key, 'helmet', 'security headers are set before anything can refuse')
  const hookRank = ['onRequest', 'preParsing', 'preValidation', 'preHandler', 'handler', 'onSend', 'onResponse']
  const ranks = RECOMMENDED_ORDER.map((s) => hookRank.indexOf(s.hook))
  t.same(ranks, [...ranks].sort((a, b) => a - b), 'steps follow the order in which Fastify runs hooks')
  t.ok(Object.isFrozen(RECOMMENDED_ORDER) && RECOMMENDED_ORDER.every((s) => Object.isFrozen(s)))
})

test('onPrincipal runs between authentication and the limits by principal; anything but a hook is refused', async (t) => {
  const key = createApiKey({ id: 'k', owner: { id: 'alice', type: 'user' } })
  const seen: Array<string | null> = []
  const app = Fastify()
  await app.register(portcullis, {
    authn: { methods: { keys: { type: 'api-key', keys: [key.record] } } },
    rateLimit: { limits: [{ name: 'user', limit: 5, window: '1m' }] },
    onPrincipal: async (request, reply) => { seen.push(request.principal?.id ?? null); seen.push(reply.getHeader('ratelimit') === undefined ? 'before limits' : 'after limits') }
  })
  app.get('/', async () => 'ok')
  t.equal((await app.inject({ url: '/', headers: { 'x-api-key': key.key } })).statusCode, 200)
  t.same(seen, ['alice', 'before limits'])
  const bad = Fastify()
  await t.rejects(async () => { await bad.register(portcullis, { onPrincipal: 'hook' as never }) }, { message: /portcullis\.onPrincipal must be an onRequest hook function/ })
})
