import { test } from 'tap'
import Fastify from 'fastify'
import fp from 'fastify-plugin'
import fastifyCors from '@fastify/cors'
import { chainOf, createPrincipal, setPrincipal } from '@portcullis/core'
import { createApiKey, portcullisAuthn } from '@portcullis/authn'
import { portcullisAuthz } from '@portcullis/authz'
import { portcullis, portcullisSecurityHeaders, replacement } from '../src/index.js'

const key = createApiKey({ id: 'k1', owner: { id: 'alice', type: 'user', roles: ['user'] } })
const authn = { methods: { key: { type: 'api-key' as const, keys: [key.record] } } }

test('helmet: security headers on every answer, rejections included, computed once', async (t) => {
  const app = Fastify()
  await app.register(portcullis, { helmet: true, authn })
  app.get('/orders', async () => ['o1'])
  app.get('/page', { config: { helmet: false, authn: false } }, async () => 'no headers here')
  const ok = await app.inject({ url: '/orders', headers: { 'x-api-key': key.key } })
  t.equal(ok.statusCode, 200)
  t.equal(ok.headers['x-content-type-options'], 'nosniff')
  t.equal(ok.headers['strict-transport-security'], 'max-age=31536000; includeSubDomains')
  t.match(ok.headers['content-security-policy'], /default-src 'self'/)
  const refused = await app.inject('/orders')
  t.equal(refused.statusCode, 401)
  t.equal(refused.headers['x-content-type-options'], 'nosniff', 'a refusal has them too')
  const missing = await app.inject('/nowhere')
  t.equal(missing.headers['x-frame-options'], 'SAMEORIGIN', 'and a 404')
  t.equal((await app.inject('/page')).headers['x-content-type-options'], undefined, 'config.helmet: false turns them off for a route')

  const tuned = Fastify()
  await tuned.register(portcullis, { helmet: { contentSecurityPolicy: false, strictTransportSecurity: { maxAge: 600 } } })
  tuned.get('/', async () => 'ok')
  const res = await tuned.inject('/')
  t.equal(res.headers['content-security-policy'], undefined)
  t.equal(res.headers['strict-transport-security'], 'max-age=600; includeSubDomains')
  const strict = Fastify()
  await strict.register(portcullis, { helmet: { contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: "'none'" } } } })
  strict.get('/', async () => 'ok')
  t.equal((await strict.inject('/')).headers['content-security-policy'], "default-src 'none'", 'a directive may be one value')
})

test('helmet: options that cannot be computed once, or that helmet refuses, fail startup', async (t) => {
  const perRequest = Fastify()
  perRequest.register(portcullis, { helmet: { contentSecurityPolicy: { directives: { scriptSrc: ["'self'", () => "'nonce-x'"] } } } })
  await t.rejects(async () => perRequest.ready(), { message: /^portcullis|^helmet\.contentSecurityPolicy\.directives\.scriptSrc must be fixed values: the security headers are computed once, not per request/ })
  const invalid = Fastify()
  invalid.register(portcullis, { helmet: { contentSecurityPolicy: { directives: { 'default-src': ['bad value;'] } } } })
  await t.rejects(async () => invalid.ready(), { message: /^helmet must be valid helmet options: / })
  const notAnObject = Fastify()
  notAnObject.register(portcullis, { helmet: 'on' as never })
  await t.rejects(async () => notAnObject.ready(), { message: /^helmet must be helmet's options, an object \(true for its defaults\)/ })
  const alone = Fastify()
  alone.register((await import('@portcullis/core')).portcullisCore)
  alone.register(portcullisSecurityHeaders, {})
  alone.get('/', async () => 'ok')
  t.equal((await alone.inject('/')).headers['x-content-type-options'], 'nosniff', 'the plugin is usable on its own')
})

test('cors: a preflight is answered before authentication, and refusals carry the origin header', async (t) => {
  const app = Fastify()
  await app.register(portcullis, { cors: { origin: ['https://app.example.com'], methods: ['GET', 'POST'] }, authn })
  app.get('/orders', async () => ['o1'])
  app.options('/orders', { config: { authn: false } }, async () => ({ allow: 'GET, POST' }))
  const preflight = await app.inject({ method: 'OPTIONS', url: '/orders', headers: { origin: 'https://app.example.com', 'access-control-request-method': 'POST' } })
  t.equal(preflight.statusCode, 204, 'answered with no credentials')
  t.equal(preflight.headers['access-control-allow-origin'], 'https://app.example.com')
  t.equal(preflight.headers['access-control-allow-methods'], 'GET, POST')
  const refused = await app.inject({ url: '/orders', headers: { origin: 'https://app.example.com' } })
  t.equal(refused.statusCode, 401)
  t.equal(refused.headers['access-control-allow-origin'], 'https://app.example.com', 'the browser can read the 401')
  const stranger = await app.inject({ url: '/orders', headers: { origin: 'https://evil.example', 'x-api-key': key.key } })
  t.equal(stranger.headers['access-control-allow-origin'], undefined, 'another origin is not allowed')
  const plainOptions = await app.inject({ method: 'OPTIONS', url: '/orders' })
  t.same(plainOptions.json(), { allow: 'GET, POST' }, 'an OPTIONS request that is not a preflight reaches its route')
})

test('cors: options that would open the API to every site, or move CORS after authentication, fail startup', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    [{}, /^portcullis\.cors\.origin must be the origins allowed to call/],
    [{ origin: '*', credentials: true }, /^portcullis\.cors\.origin must be a list of origins when credentials is true/],
    [{ origin: true, credentials: true }, /^portcullis\.cors\.origin must be a list of origins when credentials is true/],
    [{ origin: ['https://a.example', '*'], credentials: true }, /credentials is true/],
    [{ origin: ['https://a.example'], hook: 'preHandler' }, /^portcullis\.cors\.hook must be left out: CORS runs at onRequest, before authentication/],
    [[], /^portcullis\.cors must be @fastify\/cors options, an object with at least origin/]
  ]
  for (const [cors, message] of cases) {
    const app = Fastify()
    app.register(portcullis, { cors: cors as never })
    await t.rejects(async () => app.ready(), { message }, JSON.stringify(cors))
  }
  const twice = Fastify()
  twice.register(fastifyCors, { origin: '*' })
  twice.register(portcullis, { cors: { origin: '*' } })
  await t.rejects(async () => twice.ready(), { message: /^@fastify\/cors is registered already; give its options to portcullis\.cors instead/ })
})

test('a part can be turned off with false, and core cannot be', async (t) => {
  const app = Fastify()
  await app.register(portcullis, { authn: false, helmet: false })
  app.get('/', async () => 'ok')
  t.equal((await app.inject('/')).statusCode, 200)
  t.notOk(app.hasPlugin('@portcullis/authn'))
  const noCore = Fastify()
  noCore.register(portcullis, { core: false as never })
  await t.rejects(async () => noCore.ready(), { message: /^portcullis\.core must be core's options: every other part depends on it/ })
})

test('a part can be replaced by a plugin of your own, which takes its place in the order', async (t) => {
  const headerAuthn = fp(async (app, options: { header: string }) => {
    app.addHook('onRequest', async (request) => {
      const user = request.headers[options.header]
      if (typeof user === 'string') setPrincipal(request, createPrincipal({ id: user, type: 'user', method: 'header', roles: ['user'] }))
    })
  }, { name: 'header-authn' })
  const app = Fastify()
  await app.register(portcullis, {
    authn: replacement(headerAuthn, { header: 'x-user' }),
    authz: { roles: { user: {} }, defaultRule: { anyRole: ['user'] } }
  })
  app.get('/orders', async (request) => ({ who: request.principal?.id }))
  t.same((await app.inject({ url: '/orders', headers: { 'x-user': 'bob' } })).json(), { who: 'bob' })
  t.equal((await app.inject('/orders')).statusCode, 401, 'authz refuses the request the replacement did not authenticate')
  t.same(chainOf(app).map((part) => part.name), ['@portcullis/core', 'portcullis.authn (replacement)', '@portcullis/authz'])

  const own = Fastify()
  await own.register(portcullis, { authn: replacement(portcullisAuthn, authn) })
  t.same(chainOf(own).map((part) => part.name), ['@portcullis/core', '@portcullis/authn'], 'a Portcullis plugin as replacement claims its own place')

  const encapsulated = Fastify()
  encapsulated.register(portcullis, { authn: replacement(async () => {}) })
  await t.rejects(async () => encapsulated.ready(), { message: /^portcullis\.authn must be a replacement wrapped with fastify-plugin/ })
})

test('registering a part twice, or out of order, fails startup with the fix', async (t) => {
  const twice = Fastify()
  twice.register(portcullis, { authn })
  twice.register(portcullisAuthn, authn)
  await t.rejects(async () => twice.ready(), { message: /^@portcullis\/authn is registered twice in the same context; register it once \(the meta-plugin portcullis registers it already when given its options\)/ })

  const metaTwice = Fastify()
  metaTwice.register(portcullis)
  metaTwice.register(portcullis)
  await t.rejects(async () => metaTwice.ready(), { message: /^@portcullis\/core is registered twice/ })

  const late = Fastify()
  late.register(portcullis, { authz: { roles: { user: {} } } })
  late.register(portcullisAuthn, authn)
  await t.rejects(async () => late.ready(), { message: /^@portcullis\/authn \(step 5\) is registered after @portcullis\/authz \(step 7\); Fastify runs onRequest hooks in the order they are added/ })

  const byHand = Fastify()
  byHand.register(portcullis, { authn })
  byHand.register(portcullisAuthz, { roles: { user: {} } })
  await t.resolves(async () => byHand.ready(), 'a later step registered after the meta-plugin is in order')
})
