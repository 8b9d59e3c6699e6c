import { randomUUID } from 'node:crypto'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify'
import httpProxy from '@fastify/http-proxy'
import replyFrom from '@fastify/reply-from'
import { BadGateway, GatewayTimeout, recordUpstream } from '@portcullis/core'
import type { AuditLogOptions } from '@portcullis/audit-log'
import { RedisStore, type RateLimitStore } from '@portcullis/rate-limit'
import { documentRoutes, portcullisSchemaValidate, shapeOf } from '@portcullis/schema-validate'
import { Redis } from 'ioredis'
import { portcullis } from './plugin.js'
import type { MtlsOptions } from '@portcullis/mtls'
import { validateGatewayConfig, type GatewayConfig, type RateLimitStoreConfig, type UpstreamRoute, type ValidGatewayConfig, type ValidUpstream } from './config.js'
import { readPem, serverHttpsOptions, upstreamConnectOptions } from './tls.js'
import { compileResourcePath, upstreamResourceLoader } from './resources.js'

/**
 * Builds the standalone gateway: the Portcullis chain, health endpoints and one proxy per
 * upstream. It is not listening yet: call `listen()` on the result.
 *
 * Every response carries `X-Request-Id` (a UUID, also in the logs) unless `core.requestIdHeader`
 * says otherwise. `/healthz` answers 200 while the gateway serves. Once `close()` is called, no connection is
 * accepted, requests in flight finish, and their responses carry `Connection: close` so that
 * keep-alive clients go away and the close completes without waiting for idle timeouts.
 */
export async function buildGateway (config: GatewayConfig, serverOptions: FastifyServerOptions = {}): Promise<FastifyInstance> {
  const { server, core, authn, ipRules, mtls, ipRateLimit, rateLimit, rateLimitStore, authz, audit, upstreams } = validateGatewayConfig(config)
  // Every file is read before anything starts: a missing one fails startup, naming its option.
  const https = server.tls === undefined ? undefined : await serverHttpsOptions(server.tls)
  const mtlsOptions = mtls === undefined ? undefined : await readMtls(mtls)
  const auditOptions = audit === undefined ? undefined : await readAudit(audit)
  // Upstream certificates are always verified: @fastify/reply-from would otherwise turn that off
  // for https upstreams, and anyone on the path could answer for one.
  const connects = await Promise.all(upstreams.map(async (upstream, i) => ({
    connect: { rejectUnauthorized: true, ...(upstream.tls === undefined ? {} : await upstreamConnectOptions(upstream.tls, `upstreams[${i}].tls`)) }
  })))
  // Requests still being routed while closing are served, not answered with Fastify's own 503
  // (which is not problem+json); the onSend hook below ends their connections.
  // Request ids are UUIDs, unique across instances, and are returned as X-Request-Id.
  const app = Fastify({ genReqId: () => randomUUID(), ...serverOptions, ...(https === undefined ? {} : { https }), return503OnClosing: false }) as unknown as FastifyInstance
  let closing = false
  app.addHook('preClose', async () => { closing = true })
  app.addHook('onSend', (_request, reply, _payload, done) => {
    if (closing) reply.header('connection', 'close')
    done()
  })

  // Both stages count in one store: Redis when the configuration names one.
  const store = rateLimitStore === undefined ? undefined : redisStore(app, rateLimitStore)
  const withStore = <T extends object>(options: T): T => store === undefined ? options : { ...options, store }
  await app.register(portcullis, {
    core: { requestIdHeader: 'x-request-id', ...core },
    ...(ipRules === undefined ? {} : { ipRules }),
    ...(mtlsOptions === undefined ? {} : { mtls: mtlsOptions }),
    ...(ipRateLimit === undefined ? {} : { ipRateLimit: withStore(ipRateLimit) }),
    ...(authn === undefined ? {} : { authn }),
    ...(rateLimit === undefined ? {} : { rateLimit: withStore(rateLimit) }),
    ...(authz === undefined ? {} : { authz }),
    ...(auditOptions === undefined ? {} : { audit: auditOptions })
  })
  // Contracts are read first, so that a fault in one names the upstream it belongs to.
  const routes = await Promise.all(upstreams.map(async (upstream, i) => await routesOf(upstream, `upstreams[${i}].openapi`)))
  // Step 8, one contract per upstream that has one, each speaking for the paths under its prefix.
  for (const upstream of upstreams) {
    if (upstream.openapi !== undefined) await app.register(portcullisSchemaValidate, { ...upstream.validation, openapi: upstream.openapi, prefix: upstream.prefix })
  }
  // Health checks come from load balancers, which hold no credentials (nor client certificates) and poll often.
  // They are not audited either (their failures still are).
  app.get('/healthz', { config: { authn: false, mtls: false, authz: false, rateLimit: false, audit: false } }, async () => ({ status: 'ok' }))

  for (const [i, upstream] of upstreams.entries()) {
    const declared = routes[i] as UpstreamRoute[]
    const undici = { headersTimeout: upstream.timeout, bodyTimeout: upstream.timeout, ...connects[i] }
    const answered = recordAnswer(upstream.url)
    const failed = recordFailure(upstream.url)
    if (declared.length > 0) await app.register(declaredRoutes, { prefix: upstream.prefix, upstream: { ...upstream, routes: declared }, undici, answered, failed })
    await app.register(httpProxy, {
      upstream: upstream.url,
      prefix: upstream.prefix,
      rewritePrefix: upstream.rewritePrefix,
      undici,
      // reply-from's types speak of every kind of server; these are for HTTP/1, which the gateway is.
      replyOptions: { onResponse: answered, onError: failed } as never
    })
  }
  return app
}

/** The mtls section with its CA file read: the plugin takes PEM text. */
async function readMtls ({ ca, ...options }: NonNullable<ValidGatewayConfig['mtls']>): Promise<MtlsOptions> {
  return ca === undefined ? options : { ...options, ca: (await readPem(ca, 'mtls.ca')).toString('latin1') }
}

// How long startup waits for the rate-limit store's Redis to connect before serving without it.
const REDIS_CONNECT_WAIT_MS = 2000

/**
 * The Redis store of the rate limits, on a connection of its own. Commands are never queued while
 * Redis is away: a check fails at once and the store's fail mode decides. The connection's state
 * changes are logged by address only, since the URL may hold a password.
 */
function redisStore (app: FastifyInstance, { redis }: RateLimitStoreConfig): RateLimitStore {
  // Connected when the gateway is ready, not before: building one opens nothing.
  const client = new Redis(redis.url, { lazyConnect: true, connectTimeout: REDIS_CONNECT_WAIT_MS, enableOfflineQueue: false, maxRetriesPerRequest: 0 })
  const where = { redis: new URL(redis.url).host }
  // Logged when it changes, not on every reconnection attempt.
  let reachable: boolean | null = null
  client.on('ready', () => {
    reachable = true
    app.log.info(where, 'rate-limit store connected')
  })
  client.on('error', (err: Error) => {
    if (reachable === false) return
    reachable = false
    app.log.warn({ ...where, err: { message: err.message } }, 'rate-limit store unreachable')
  })
  // A gateway that starts with Redis up counts in it from its first request; one that starts
  // without it serves anyway, in its fail mode, and moves to Redis once Redis answers.
  app.addHook('onReady', async () => {
    try {
      await client.connect()
    } catch {}
  })
  app.addHook('onClose', async () => { client.disconnect() })
  const { url: _url, ...options } = redis
  return new RedisStore({ client, ...options })
}

/**
 * The routes an upstream declares, and one for each operation of its contract that none of them
 * covers: the contract's operations are routes of their own, with bodies parsed to be checked.
 */
async function routesOf (upstream: ValidUpstream, path: string): Promise<UpstreamRoute[]> {
  if (upstream.openapi === undefined) return upstream.routes
  const declared = new Set(upstream.routes.flatMap((route) => ([] as string[]).concat(route.method).map((method) => `${method} ${shapeOf(route.path)}`)))
  const added: UpstreamRoute[] = []
  for (const { method, path: routePath } of await documentRoutes(upstream.openapi, path)) {
    const key = `${method} ${shapeOf(routePath)}`
    // GET routes answer HEAD already; TRACE is never proxied.
    if (declared.has(key) || method === 'TRACE' || (method === 'HEAD' && declared.has(`GET ${shapeOf(routePath)}`))) continue
    declared.add(key)
    added.push({ method, path: routePath })
  }
  return [...upstream.routes, ...added]
}

/**
 * The routes an upstream declares, each a Fastify route of its own so that rules key on its
 * pattern; the request goes upstream as it arrived, with the prefix rewritten.
 */
async function declaredRoutes (app: FastifyInstance, { upstream, undici, answered, failed }: { upstream: ValidUpstream, undici: Record<string, unknown>, answered: Answered, failed: Failed }): Promise<void> {
  await app.register(replyFrom, { base: upstream.url, undici })
  // Bodies other than JSON and text go upstream as streams, as they do through the proxy.
  app.addContentTypeParser('*', (_request, payload, done) => { done(null, payload) })
  for (const route of upstream.routes) {
    app.route({
      method: route.method as string[],
      url: route.path,
      config: {
        ...(route.authz === undefined ? {} : { authz: ruleOf(route, upstream) }),
        ...(route.rateLimit === undefined ? {} : { rateLimit: route.rateLimit })
      },
      handler (request, reply) {
        return reply.from(upstream.rewritePrefix + request.url.slice(upstream.prefix.length), { onResponse: answered, onError: failed } as never)
      }
    })
  }
}

// A declared resource becomes the rule's loader, asking the same upstream within the same timeout.
function ruleOf (route: UpstreamRoute, upstream: ValidUpstream): UpstreamRoute['authz'] {
  if (route.resource === undefined) return route.authz
  const parts = compileResourcePath(route.resource, route.path, 'resource')
  return { ...route.authz, resource: upstreamResourceLoader(upstream.url, parts, upstream.timeout) } as UpstreamRoute['authz']
}

type Answered = (request: FastifyRequest, reply: FastifyReply, res: { statusCode: number, stream: unknown }) => void
type Failed = (reply: FastifyReply, context: { error: Error & { statusCode?: number } }) => void

// What the upstream answered is recorded for the audit log, then sent on as reply-from would.
function recordAnswer (address: string): Answered {
  return (request, reply, res) => {
    recordUpstream(request, address, res.statusCode)
    reply.send(res.stream)
  }
}

// The proxy's failures are the upstream's: connect and response timeouts are 504, anything else
// (refused or reset connections, unknown hosts, malformed answers) 502. The cause is logged here;
// the client only sees the generic problem.
function recordFailure (address: string): Failed {
  return (reply, { error }) => {
    recordUpstream(reply.request, address, null)
    reply.log.warn({ err: error }, 'upstream request failed')
    reply.send(error.statusCode === 504 ? new GatewayTimeout() : new BadGateway())
  }
}

/** The audit section with its signing key read: the plugin takes PEM text. */
async function readAudit (audit: NonNullable<ValidGatewayConfig['audit']>): Promise<AuditLogOptions> {
  const chain = audit.chain
  if (typeof chain !== 'object' || chain.signingKey === undefined) return audit as AuditLogOptions
  return { ...audit, chain: { ...chain, signingKey: (await readPem(chain.signingKey, 'audit.chain.signingKey')).toString('latin1') } }
}
