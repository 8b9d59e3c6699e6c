// One benchmark server, run as a child of run.mjs so that the load generator never shares its
// event loop. Usage: node bench/server.mjs <scenario>. Reports { port } to the parent over IPC,
// then answers each 'cpu?' message with { cpu: { user, system } }: its CPU time so far, in µs.
// Scenario settings that run.mjs makes per run (keys) arrive as JSON in BENCH_SERVER_OPTIONS.
import Fastify from 'fastify'
import { portcullis } from '@portcullis/gateway'
import { portcullisCore, SnapshotHolder } from '@portcullis/core'
import { portcullisAuthn } from '@portcullis/authn'
import { portcullisAuthz } from '@portcullis/authz'
import { MemoryStore, RedisStore } from '@portcullis/rate-limit'
import { Redis } from 'ioredis'
import pino from 'pino'
import { readServerOptions, reportToParent, requireOption } from './common.mjs'
import { ORDERS_DOCUMENT } from './orders.mjs'

// Must match the claims of the token run.mjs signs.
const JWT_ISSUER = 'https://idp.bench.local/'
const JWT_AUDIENCE = 'orders-api'

// Each scenario registers its plugins on the app; the route is added after, identically for all.
const SCENARIOS = {
  baseline: async () => {},
  core: async (app) => {
    const snapshot = new SnapshotHolder({ version: 'v1', value: {} })
    await app.register(portcullis, { core: { trustedProxies: ['127.0.0.1/32'], snapshot } })
  },
  'jwt-es256': async (app, options) => {
    const key = requireOption(options, 'publicKey')
    await registerJwt(app, { kid: 'k1', algorithms: ['ES256'], key })
  },
  'jwt-hs256': async (app, options) => {
    const key = Buffer.from(requireOption(options, 'secret'), 'base64url')
    await registerJwt(app, { kid: 'k1', algorithms: ['HS256'], key })
  },
  authz: async (app, options) => {
    await SCENARIOS['jwt-es256'](app, options)
    await app.register(portcullisAuthz, { roles: { user: {}, admin: { inherits: ['user'] } } })
  },
  'authz-cel': async (app, options) => SCENARIOS.authz(app, options),
  // The core server plus a limit by client IP that never refuses (a billion an hour), so that
  // every request is checked and counted; without header fields, then with them.
  'rate-limit-memory': async (app) => registerLimited(app, new MemoryStore(), 'none'),
  'rate-limit-headers': async (app) => registerLimited(app, new MemoryStore(), 'ietf'),
  'rate-limit-redis': async (app, options) => {
    const client = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { enableOfflineQueue: false, maxRetriesPerRequest: 0, enableAutoPipelining: true })
    await new Promise((resolve, reject) => { client.once('ready', resolve); client.once('error', reject) })
    app.addHook('onClose', async () => { await client.quit() })
    // failMode closed: a Redis that stops answering fails the run instead of measuring memory.
    await registerLimited(app, new RedisStore({ client, prefix: requireOption(options, 'redisPrefix'), failMode: 'closed', timeoutMs: 1000 }), 'none')
  }
}

SCENARIOS['schema-validate'] = async (app) => {
  const snapshot = new SnapshotHolder({ version: 'v1', value: {} })
  await app.register(portcullis, { core: { trustedProxies: ['127.0.0.1/32'], snapshot }, schemaValidate: { openapi: ORDERS_DOCUMENT } })
}

// The audit log on the core server, writing to the file run.mjs names.
async function registerAudited (app, options, extra) {
  const snapshot = new SnapshotHolder({ version: 'v1', value: {} })
  await app.register(portcullis, {
    core: { trustedProxies: ['127.0.0.1/32'], snapshot },
    audit: { sinks: [{ type: 'file', path: requireOption(options, 'auditFile') }], ...extra }
  })
}
SCENARIOS['audit-log'] = async (app, options) => registerAudited(app, options, {})
SCENARIOS['audit-log-chain'] = async (app, options) => registerAudited(app, options, { chain: true })
// What a plain log line per request costs: pino, asynchronous, to a file, with about what an
// access log holds.
SCENARIOS['pino-line'] = async (app, options) => {
  await SCENARIOS.core(app)
  const logger = pino(pino.destination({ dest: requireOption(options, 'auditFile'), sync: false }))
  app.addHook('onResponse', (request, reply, done) => {
    logger.info({ reqId: request.id, method: request.method, url: request.url, route: request.routeOptions.url, ip: request.clientIp, statusCode: reply.statusCode, responseTime: reply.elapsedTime }, 'request completed')
    done()
  })
}

// The reference: exactly this much CPU work per request, spun on the clock (the server has its
// core to itself, so the time spun is CPU time). Must match REFERENCE_MICROS in run.mjs.
const REFERENCE_NANOS = 3000n
SCENARIOS['reference-3us'] = async (app) => {
  await SCENARIOS.core(app)
  app.addHook('onRequest', (_request, _reply, done) => {
    const end = process.hrtime.bigint() + REFERENCE_NANOS
    while (process.hrtime.bigint() < end);
    done()
  })
}

async function registerLimited (app, store, headers) {
  const snapshot = new SnapshotHolder({ version: 'v1', value: {} })
  await app.register(portcullis, {
    core: { trustedProxies: ['127.0.0.1/32'], snapshot },
    ipRateLimit: { store, headers, limits: [{ name: 'ip', limit: 1_000_000_000, window: '1h' }] }
  })
}

// The route's rule, read by authz where it is registered and ignored elsewhere.
const ORDERS_RULE = { anyRole: ['user'], allScopes: ['orders:read'] }
// Scenarios whose route has another rule. The condition holds for the token run.mjs signs
// (sub alice) on /orders/42, and fails on /orders/0, which run.mjs checks is refused.
const RULES = {
  'authz-cel': { ...ORDERS_RULE, when: 'request.params.id != "0" && principal.id != ""' }
}

async function registerJwt (app, key) {
  await app.register(portcullisCore)
  await app.register(portcullisAuthn, {
    methods: { jwt: { type: 'jwt', issuer: JWT_ISSUER, audience: JWT_AUDIENCE, keys: [key] } }
  })
}

async function buildApp (scenario, options) {
  const app = Fastify({ logger: false })
  await SCENARIOS[scenario](app, options)
  app.get('/orders/:id', { config: { authz: RULES[scenario] ?? ORDERS_RULE } }, async (request) => {
    return { id: request.params.id, item: 'lamp', quantity: 1 }
  })
  // The schema-validate scenario posts orders; every server has the route, as an app would.
  app.post('/orders', { config: { authz: ORDERS_RULE } }, async (request) => ({ id: '43', item: request.body.item, qty: request.body.qty }))
  await app.ready()
  if (scenario === 'core' || /^(rate-limit|reference|schema|audit|pino)/.test(scenario)) assertCoreSetup(app)
  return app
}

// Guards against measuring a misconfigured plugin: the forwarded header the load sends must
// actually be honored, otherwise client-IP resolution would take its cheap early exit.
function assertCoreSetup (app) {
  const { resolveClientIp, snapshot } = app.portcullisCore
  const ip = resolveClientIp('127.0.0.1', { 'x-forwarded-for': '198.51.100.7' })
  if (ip !== '198.51.100.7') throw new Error(`core resolves the client IP to ${ip}, expected 198.51.100.7`)
  if (snapshot?.current.version !== 'v1') throw new Error('core has no policy snapshot installed')
}

async function main () {
  const scenario = process.argv[2]
  if (!Object.hasOwn(SCENARIOS, scenario)) {
    throw new Error(`unknown scenario "${scenario}"; known: ${Object.keys(SCENARIOS).join(', ')}`)
  }
  if (typeof process.send !== 'function') throw new Error('server.mjs must be started by run.mjs (needs an IPC channel)')
  const app = await buildApp(scenario, readServerOptions())
  await app.listen({ host: '127.0.0.1', port: 0 })
  reportToParent(app.server.address().port)
}

main().catch((err) => {
  console.error(`bench server: ${err.stack ?? err}`)
  process.exit(1)
})
