import { test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { PassThrough } from 'node:stream'
import fp from 'fastify-plugin'
import fastifyCors from '@fastify/cors'
import { chainOf, createPrincipal, setPrincipal } from '@portcullis/core'
import { createApiKey, portcullisAuthn } from '@portcullis/authn'
import { portcullisAuthz } from '@portcullis/authz'
import { createChainObserver, portcullis, portcullisSecurityHeaders, replacement } from '../src/index.js'

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
  t.same(chainOf(app).map((part) => part.name), ['@portcullis/core', '@portcullis/gateway/deprecation', 'portcullis.authn (replacement)', '@portcullis/authz'])

  const own = Fastify()
  await own.register(portcullis, { authn: replacement(portcullisAuthn, authn) })
  t.same(chainOf(own).map((part) => part.name), ['@portcullis/core', '@portcullis/gateway/deprecation', '@portcullis/authn'], 'a Portcullis plugin as replacement claims its own place')

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

test('threat protection through the meta-plugin: User-Agent rules, retired routes and masking, in their places', async (t) => {
  const app = Fastify()
  await app.register(portcullis, { userAgents: true, masking: true, authn })
  app.get('/orders/:id', async () => ({ id: '7', email: 'alice@example.com', card: '4111 1111 1111 1111' }))
  app.get('/old', { config: { authn: false, deprecation: { deprecated: '2020-01-01', sunset: '2021-01-01', cutoff: true } } }, async () => 'never')
  const headers = { 'x-api-key': key.key }
  const masked = await app.inject({ url: '/orders/7', headers })
  t.same(masked.json(), { id: '7', email: 'a***@example.com', card: '**** **** **** 1111' })
  const tool = await app.inject({ url: '/orders/7', headers: { ...headers, 'user-agent': 'sqlmap/1.7' } })
  t.equal(tool.statusCode, 403)
  t.equal(tool.json().code, 'PORTCULLIS_GATEWAY_USER_AGENT_DENIED')
  const anonymousTool = await app.inject({ url: '/orders/7', headers: { 'user-agent': 'sqlmap/1.7' } })
  t.equal(anonymousTool.statusCode, 403, 'refused before authentication is asked')
  const gone = await app.inject('/old')
  t.equal(gone.statusCode, 410)
  t.equal(gone.headers.sunset, 'Fri, 01 Jan 2021 00:00:00 GMT')
  t.same(chainOf(app).map((part) => part.name), ['@portcullis/core', '@portcullis/gateway/user-agents', '@portcullis/gateway/deprecation', '@portcullis/authn', '@portcullis/gateway/masking'])
  const noDeprecation = Fastify()
  await noDeprecation.register(portcullis, { deprecation: false })
  t.notOk(noDeprecation.hasPlugin('@portcullis/gateway/deprecation'), 'deprecation: false leaves it out')
})

test('observe: the meta-plugin marks every stage it registers, and apps can share one observer', async (t) => {
  const observer = createChainObserver({ metrics: true }) as NonNullable<ReturnType<typeof createChainObserver>>
  const build = async (): Promise<FastifyInstance> => {
    const app = Fastify()
    await app.register(portcullis, { authn, authz: { roles: { user: {} }, defaultRule: { anyRole: ['user'] } }, masking: true, observe: observer })
    app.get('/orders/:id', async () => ({ id: '7' }))
    return app
  }
  const first = await build()
  const second = await build()
  t.equal((await first.inject({ url: '/orders/7', headers: { 'x-api-key': key.key } })).statusCode, 200)
  t.equal((await second.inject('/orders/7')).statusCode, 401)
  const text = await (observer.registry as NonNullable<typeof observer.registry>).metrics()
  t.match(text, /portcullis_decisions_total\{plugin="@portcullis\/authn",outcome="allow",reason="PORTCULLIS_AUTHN_OK",route="\/orders\/:id"\} 1/)
  t.match(text, /portcullis_decisions_total\{plugin="@portcullis\/authn",outcome="deny",reason="PORTCULLIS_AUTHN_MISSING_CREDENTIALS",route="\/orders\/:id"\} 1/)
  for (const stage of ['core', 'authn', 'authz', 'conditions', 'upstream', 'masking']) {
    t.match(text, new RegExp(`portcullis_stage_duration_seconds_count\\{stage="${stage}"\\} [12]`), `stage ${stage} is timed`)
  }
  const own = Fastify()
  await own.register(portcullis, { observe: { metrics: true } })
  own.get('/', async () => 'ok')
  t.equal((await own.inject('/')).statusCode, 200, 'options make an observer of the app\'s own')
})

test('parts given their options through the meta-plugin: masking\'s own, a staged limit, audit without authn', async (t) => {
  const app = Fastify()
  await app.register(portcullis, { authn: false, masking: { emails: false }, audit: { sinks: [{ type: 'stream', stream: new PassThrough() }] } })
  app.get('/contact', async () => ({ email: 'erin@example.com', card: '4111111111111111' }))
  t.same((await app.inject('/contact')).json(), { email: 'erin@example.com', card: '************1111' }, 'e-mail addresses left as they are, cards masked')
  const staged = Fastify()
  staged.register(portcullis, { ipRateLimit: { stage: 'principal', limits: [] } as never })
  await t.rejects(async () => staged.ready(), { message: /^portcullis\.ipRateLimit\.stage must be left out: the ipRateLimit part always runs at stage ip/ })
})
