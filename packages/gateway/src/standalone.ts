import { randomUUID } from 'node:crypto'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions, type onRequestHookHandler, type onResponseHookHandler } from 'fastify'
import httpProxy from '@fastify/http-proxy'
import replyFrom from '@fastify/reply-from'
import { BadGateway, decisionsOf, GatewayTimeout, recordUpstream, type Decision } from '@portcullis/core'
import type { AuditLogOptions, AuditWriter } from '@portcullis/audit-log'
import { RedisStore, type RateLimitStore } from '@portcullis/rate-limit'
import { documentRoutes, portcullisSchemaValidate, shapeOf } from '@portcullis/schema-validate'
import { Redis } from 'ioredis'
import type { Dispatcher } from 'undici'
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
  const valid = validateGatewayConfig(config)
  // Every file is read before anything starts: a missing one fails startup, naming its option.
  const https = valid.server.tls === undefined ? undefined : await serverHttpsOptions(valid.server.tls)
  const files = await readChainFiles(valid)
  // Requests still being routed while closing are served, not answered with Fastify's own 503
  // (which is not problem+json); the onSend hook added by addChain ends their connections.
  // Request ids are UUIDs, unique across instances, and are returned as X-Request-Id.
  const app = Fastify({ genReqId: () => randomUUID(), ...serverOptions, ...(https === undefined ? {} : { https }), return503OnClosing: false }) as unknown as FastifyInstance
  const state = { closing: false }
  app.addHook('preClose', async () => { state.closing = true })
  // Both stages count in one store: Redis when the configuration names one.
  const store = valid.rateLimitStore === undefined ? undefined : redisStore(app, valid.rateLimitStore)
  await addChain(app, valid, files, { state, ...(store === undefined ? {} : { store }) })
  return app
}

/** The files a configuration names, read: the mtls CA, the audit signing key, upstream TLS. */
export interface ChainFiles {
  mtls: MtlsOptions | undefined
  audit: AuditLogOptions | undefined
  connects: Array<{ connect: Record<string, unknown> }>
}

/** Reads every file the chain's plugins take as text, naming the option of one that is missing. */
export async function readChainFiles (valid: ValidGatewayConfig): Promise<ChainFiles> {
  const mtls = valid.mtls === undefined ? undefined : await readMtls(valid.mtls)
  const audit = valid.audit === undefined ? undefined : await readAudit(valid.audit)
  // Upstream certificates are always verified: @fastify/reply-from would otherwise turn that off
  // for https upstreams, and anyone on the path could answer for one.
  const connects = await Promise.all(valid.upstreams.map(async (upstream, i) => ({
    connect: { rejectUnauthorized: true, ...(upstream.tls === undefined ? {} : await upstreamConnectOptions(upstream.tls, `upstreams[${i}].tls`)) }
  })))
  return { mtls, audit, connects }
}

/** What the chains of one gateway share, whichever policy version built them. */
export interface SharedState {
  /** Set once the gateway closes: responses then end their connections. */
  state: { closing: boolean }
  /** Where both rate-limit stages count; each chain makes its own without one. */
  store?: RateLimitStore
  /** The audit log every chain writes to, in place of opening the audit section's sinks. */
  auditWriter?: AuditWriter
  /** The policy version the chain serves: every decision is stamped with it. */
  version?: string
  /**
   * What the chain is for: `serve` (the default) proxies; `canary` serves requests handed over
   * by the active version after authentication, so the per-address limit, already counted there,
   * is left out; `shadow` only decides: its routes answer 204 without calling any upstream, it
   * writes no audit record and knows no client certificate.
   */
  purpose?: 'serve' | 'canary' | 'shadow'
  /** Runs once the principal is known (see the meta-plugin's `onPrincipal`). */
  onPrincipal?: onRequestHookHandler
  /** Runs once a request is answered, after its audit record is written. */
  onResponse?: onResponseHookHandler
  /**
   * The connection pool to an upstream, given its settings: versions that keep an upstream's
   * settings keep its pool, so an update opens no connection. Each chain has its own without it.
   */
  dispatcherFor?: (settings: UpstreamDispatch) => Dispatcher
}

/** What the connections to an upstream are made with. */
export interface UpstreamDispatch {
  url: string
  headersTimeout: number
  bodyTimeout: number
  connect: Record<string, unknown>
}

/** The response header of a shadow chain that says what it decided: `allow`, or `deny <code>`. */
export const SHADOW_OUTCOME_HEADER = 'x-portcullis-shadow-outcome'

/**
 * Registers the whole chain of a checked configuration on `app`: the Portcullis plugins in the
 * recommended order, contracts, the health endpoint and one proxy per upstream.
 */
export async function addChain (app: FastifyInstance, valid: ValidGatewayConfig, files: ChainFiles, shared: SharedState): Promise<void> {
  const { core, authn, ipRules, authz, upstreams } = valid
  const { state, store, auditWriter, version, purpose = 'serve', onPrincipal, onResponse, dispatcherFor } = shared
  const shadow = purpose === 'shadow'
  const ipRateLimit = purpose === 'canary' ? undefined : valid.ipRateLimit
  const rateLimit = valid.rateLimit
  app.addHook('onSend', (_request, reply, _payload, done) => {
    if (state.closing) reply.header('connection', 'close')
    done()
  })
  const withStore = <T extends object>(options: T): T => store === undefined ? options : { ...options, store }
  const audit = shadow
    ? undefined
    : files.audit === undefined || auditWriter === undefined
      ? files.audit
      : { ...withoutWriterOptions(files.audit), writer: auditWriter, policySwaps: false }
  await app.register(portcullis, {
    core: { requestIdHeader: 'x-request-id', ...core, ...(version === undefined ? {} : { snapshot: { current: Object.freeze({ version, value: null }) } }) },
    ...(ipRules === undefined ? {} : { ipRules }),
    ...(files.mtls === undefined || shadow ? {} : { mtls: files.mtls }),
    ...(ipRateLimit === undefined ? {} : { ipRateLimit: withStore(ipRateLimit) }),
    ...(authn === undefined ? {} : { authn }),
    ...(rateLimit === undefined ? {} : { rateLimit: withStore(rateLimit) }),
    ...(authz === undefined ? {} : { authz }),
    ...(audit === undefined ? {} : { audit }),
    ...(onPrincipal === undefined ? {} : { onPrincipal })
  })
  if (onResponse !== undefined) app.addHook('onResponse', onResponse)
  if (shadow) {
    app.addHook('onSend', (request, reply, _payload, done) => {
      reply.header(SHADOW_OUTCOME_HEADER, outcomeOf(decisionsOf(request)))
      done()
    })
  }
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
    const settings = { url: upstream.url, headersTimeout: upstream.timeout, bodyTimeout: upstream.timeout, ...(files.connects[i] as { connect: Record<string, unknown> }) }
    const { url: _url, ...options } = settings
    const undici = dispatcherFor === undefined ? options : dispatcherFor(settings)
    const answered = recordAnswer(upstream.url)
    const failed = recordFailure(upstream.url)
    // A public upstream asks for no credentials: authentication and authorization are off on its routes.
    const open: Record<string, false> = upstream.public ? { authn: false, authz: false } : {}
    if (declared.length > 0) await app.register(declaredRoutes, { prefix: upstream.prefix, upstream: { ...upstream, routes: declared }, undici, answered, failed, open, shadow })
    if (shadow) {
      await app.register(async (scope) => {
        scope.addContentTypeParser('*', (_request, payload, done) => { done(null, payload) })
        scope.all('/', { config: open }, decided)
        scope.all('/*', { config: open }, decided)
      }, { prefix: upstream.prefix })
      continue
    }
    await app.register(httpProxy, {
      upstream: upstream.url,
      prefix: upstream.prefix,
      rewritePrefix: upstream.rewritePrefix,
      undici,
      config: open,
      // reply-from's types speak of every kind of server; these are for HTTP/1, which the gateway is.
      replyOptions: { onResponse: answered, onError: failed } as never
    })
  }
}

// With a shared writer, the sinks and chain are the writer's.
function withoutWriterOptions ({ sinks: _sinks, chain: _chain, onSinkFailure: _onSinkFailure, ...rest }: AuditLogOptions): AuditLogOptions {
  return rest
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
export function redisStore (app: FastifyInstance, { redis }: RateLimitStoreConfig): RateLimitStore {
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
async function declaredRoutes (app: FastifyInstance, { upstream, undici, answered, failed, open, shadow }: { upstream: ValidUpstream, undici: Record<string, unknown> | Dispatcher, answered: Answered, failed: Failed, open: Record<string, false>, shadow: boolean }): Promise<void> {
  if (!shadow) await app.register(replyFrom, { base: upstream.url, undici })
  // Bodies other than JSON and text go upstream as streams, as they do through the proxy.
  app.addContentTypeParser('*', (_request, payload, done) => { done(null, payload) })
  const heads = new Set(upstream.routes.filter((route) => ([] as string[]).concat(route.method).includes('HEAD')).map((route) => route.path))
  for (const route of upstream.routes) {
    const methods = ([] as string[]).concat(route.method)
    app.route({
      // A GET route answers HEAD too: in the same route rather than one Fastify adds beside it,
      // which halves what a large policy costs to compile.
      method: methods.includes('GET') && !heads.has(route.path) ? [...methods, 'HEAD'] : methods,
      exposeHeadRoute: false,
      url: route.path,
      config: {
        ...open,
        ...(route.authz === undefined ? {} : { authz: ruleOf(route, upstream) }),
        ...(route.rateLimit === undefined ? {} : { rateLimit: route.rateLimit })
      },
      handler: shadow
        ? decided
        : function proxy (request, reply) {
          return reply.from(upstream.rewritePrefix + request.url.slice(upstream.prefix.length), { onResponse: answered, onError: failed } as never)
        }
    })
  }
}

// What a shadow chain answers once every check let a request through: nothing goes upstream.
async function decided (_request: FastifyRequest, reply: FastifyReply): Promise<void> {
  await reply.code(204).send()
}

/** What a request's decisions came to: `allow`, or `deny` and the code of the first denial. */
export function outcomeOf (decisions: readonly Decision[]): string {
  for (const decision of decisions) if (decision.outcome === 'deny') return `deny ${decision.reason}`
  return 'allow'
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
