// One server of the whole-chain benchmark, run as a child of chain.mjs so that the load generator
// never shares its event loop. Usage: node bench/chain-server.mjs <kind>, where kind is one of
// KINDS below. Reports { port } over IPC, then answers 'cpu?' with its CPU time (see common.mjs).
// Settings made per run (the public key, the upstream, the audit file) arrive as JSON in
// BENCH_SERVER_OPTIONS.
import { createServer } from 'node:http'
import Fastify from 'fastify'
import fastifyJwt from '@fastify/jwt'
import fastifyRateLimit from '@fastify/rate-limit'
import fastifyHttpProxy from '@fastify/http-proxy'
import { buildGateway, portcullis } from '@portcullis/gateway'
import pino from 'pino'
import { JWT_AUDIENCE, JWT_ISSUER, readServerOptions, reportToParent, requireOption } from './common.mjs'
import { ADDRESS_SCHEMA, newOrderSchema, ORDERS_DOCUMENT } from './orders.mjs'

// What every server answers, itself or through its upstream.
const order = (id) => ({ id, item: 'lamp', quantity: 1 })
const created = (body) => ({ id: '43', item: body.item, qty: body.qty })
// A limit nobody reaches in a run (a billion an hour): every request is checked and counted.
const NEVER_REFUSING = { limit: 1_000_000_000, window: '1h' }
const ORDERS_RULE = { anyRole: ['user'] }
const ROLES = { user: {}, admin: { inherits: ['user'] } }
// No time limit on loading plugins: under callgrind, loading the chain takes longer than Fastify's default 10 s.
const SERVER_OPTIONS = { logger: false, pluginTimeout: 0 }

function jwtMethod (options) {
  return { type: 'jwt', issuer: JWT_ISSUER, audience: JWT_AUDIENCE, keys: [{ kid: 'k1', algorithms: ['ES256'], key: requireOption(options, 'publicKey') }] }
}

function addOrderRoutes (app, routeOptions = {}) {
  app.get('/orders/:id', { ...routeOptions }, async (request) => order(request.params.id))
  app.post('/orders', { ...routeOptions }, async (request) => created(request.body))
}

const KINDS = {
  // Fastify with the two routes and nothing else.
  bare: async () => {
    const app = Fastify(SERVER_OPTIONS)
    addOrderRoutes(app)
    return app
  },
  // The whole chain in process, through the meta-plugin: authentication by a JWT (ES256), a
  // limit by principal, a role check, the OpenAPI contract on bodies, an audit record per request.
  chain: async (options) => {
    const app = Fastify(SERVER_OPTIONS)
    await app.register(portcullis, {
      core: {},
      authn: { methods: { jwt: jwtMethod(options) } },
      rateLimit: { limits: [{ name: 'principal', ...NEVER_REFUSING }] },
      authz: { roles: ROLES },
      schemaValidate: { openapi: ORDERS_DOCUMENT },
      audit: { sinks: [{ type: 'file', path: requireOption(options, 'auditFile') }] }
    })
    addOrderRoutes(app, { config: { authz: ORDERS_RULE } })
    return app
  },
  // The same concerns composed by hand from the usual Fastify plugins: @fastify/jwt (default
  // options: the signature is verified on every request), a role check, @fastify/rate-limit by
  // principal, Fastify's own body schema, and one pino line per request.
  composed: async (options) => {
    const app = Fastify(SERVER_OPTIONS)
    await app.register(fastifyJwt, {
      secret: { public: requireOption(options, 'publicKey') },
      verify: { algorithms: ['ES256'], allowedIss: JWT_ISSUER, allowedAud: JWT_AUDIENCE }
    })
    app.addHook('onRequest', async (request) => {
      await request.jwtVerify()
      if (!Array.isArray(request.user.roles) || !request.user.roles.includes('user')) {
        throw Object.assign(new Error('Forbidden'), { statusCode: 403 })
      }
    })
    await app.register(fastifyRateLimit, { max: NEVER_REFUSING.limit, timeWindow: '1 hour', keyGenerator: (request) => request.user.sub })
    const logger = pino(pino.destination({ dest: requireOption(options, 'auditFile'), sync: false }))
    app.addHook('onResponse', (request, reply, done) => {
      logger.info({ reqId: request.id, method: request.method, url: request.url, route: request.routeOptions.url, ip: request.ip, principal: request.user?.sub, statusCode: reply.statusCode, responseTime: reply.elapsedTime }, 'request completed')
      done()
    })
    app.get('/orders/:id', async (request) => order(request.params.id))
    app.post('/orders', { schema: { body: newOrderSchema(ADDRESS_SCHEMA) } }, async (request) => created(request.body))
    return app
  },
  // The upstream of the proxies: node:http, as little work per request as it can do.
  upstream: async () => upstreamServer(),
  // Plain @fastify/http-proxy in front of the upstream, with no policy at all.
  proxy: async (options) => {
    const app = Fastify(SERVER_OPTIONS)
    await app.register(fastifyHttpProxy, { upstream: requireOption(options, 'upstream'), prefix: '/api' })
    return app
  },
  // The standalone gateway with the chain of `chain` as configuration, in front of the upstream.
  gateway: async (options) => buildGateway({
    authn: { methods: { jwt: jwtMethod(options) } },
    rateLimit: { limits: [{ name: 'principal', ...NEVER_REFUSING }] },
    authz: { roles: ROLES },
    audit: { sinks: [{ type: 'file', path: requireOption(options, 'auditFile') }] },
    upstreams: [{
      prefix: '/api',
      url: requireOption(options, 'upstream'),
      routes: [{ method: 'GET', path: '/orders/:id', authz: ORDERS_RULE }, { method: 'POST', path: '/orders', authz: ORDERS_RULE }],
      openapi: ORDERS_DOCUMENT
    }]
  }, SERVER_OPTIONS)
}

// Answers GET /orders/:id and POST /orders as the Fastify servers do; anything else is 404.
function upstreamServer () {
  const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    if (req.method === 'GET' && req.url.startsWith('/orders/')) {
      send(res, 200, order(req.url.slice(8)))
    } else if (req.method === 'POST' && req.url === '/orders') {
      const chunks = []
      req.on('data', (chunk) => chunks.push(chunk))
      req.on('end', () => {
        try {
          send(res, 200, created(JSON.parse(Buffer.concat(chunks).toString('utf8'))))
        } catch {
          send(res, 400, { error: 'bad json' })
        }
      })
    } else {
      send(res, 404, { error: 'not found' })
    }
  })
  return {
    listen: () => new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve())),
    address: () => server.address()
  }
}

function send (res, status, value) {
  const body = JSON.stringify(value)
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

async function main () {
  const kind = process.argv[2]
  if (!Object.hasOwn(KINDS, kind)) throw new Error(`unknown server "${kind}"; known: ${Object.keys(KINDS).join(', ')}`)
  const server = await KINDS[kind](readServerOptions())
  if (kind === 'upstream') {
    await server.listen()
    reportToParent(server.address().port)
    return
  }
  await server.listen({ host: '127.0.0.1', port: 0 })
  reportToParent(server.server.address().port)
}

main().catch((err) => {
  console.error(`chain bench server: ${err.stack ?? err}`)
  process.exit(1)
})
