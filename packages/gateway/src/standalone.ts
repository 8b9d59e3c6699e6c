import { randomUUID } from 'node:crypto'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions, type onRequestHookHandler, type onResponseHookHandler } from 'fastify'
import { decisionsOf, problemClientErrorHandler, type Decision } from '@portcullis/core'
import type { AuditLogOptions, AuditWriter } from '@portcullis/audit-log'
import { RedisStore, type RateLimitStore } from '@portcullis/rate-limit'
import { documentRoutes, portcullisSchemaValidate, shapeOf } from '@portcullis/schema-validate'
import { Redis } from 'ioredis'
import { Agent, type Dispatcher } from 'undici'
import { portcullis } from './plugin.js'
import type { MtlsOptions } from '@portcullis/mtls'
import { validateGatewayConfig, type GatewayConfig, type RateLimitStoreConfig, type UpstreamRoute, type ValidGatewayConfig, type ValidUpstream } from './config.js'
import { readPem, serverHttpsOptions, upstreamConnectOptions } from './tls.js'
import { compileResourcePath, upstreamResourceLoader } from './resources.js'
import { limitBodies, listenerOptions } from './limits.js'
import { observeGateway } from './metrics-listener.js'
import type { ChainObserver } from './observe.js'
import { compileForwarding, proxyHandler, type Forwarding, type ProxyTarget } from './proxy.js'

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
  const { server } = valid
  const app = Fastify({
    genReqId: () => randomUUID(),
    clientErrorHandler: problemClientErrorHandler(valid.core.problemTypeBase),
    ...serverOptions,
    // The configuration's limits, over any in serverOptions.
    requestTimeout: server.requestTimeout,
    keepAliveTimeout: server.keepAliveTimeout,
    bodyLimit: server.bodyLimit,
    http: listenerOptions(server),
    ...(https === undefined ? {} : { https: { ...https, ...listenerOptions(server) } }),
    return503OnClosing: false
  }) as unknown as FastifyInstance
  const state = { closing: false }
  app.addHook('preClose', async () => { state.closing = true })
  // Both stages count in one store: Redis when the configuration names one.
  const store = valid.rateLimitStore === undefined ? undefined : redisStore(app, valid.rateLimitStore)
  const { observer, metrics } = observeGateway(valid.observe, store)
  if (metrics !== null) {
    app.addHook('onListen', async () => { await metrics.listen() })
    app.addHook('onClose', async () => { await metrics.close() })
  }
  await addChain(app, valid, files, { state, observer, ...(store === undefined ? {} : { store }) })
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
  /** Where the chain's metrics and spans go: one observer for every version. */
  observer?: ChainObserver | null
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
  /** The most connections open to the upstream at once; requests beyond wait for one. */
  connections: number
  /** One request at a time on each connection: an upstream never sees a request queued behind another. */
  pipelining: number
  connect: Record<string, unknown>
}

/** Connections to one upstream, at most (as @fastify/reply-from's default was). */
const UPSTREAM_CONNECTIONS = 128

/** The response header of a shadow chain that says what it decided: `allow`, or `deny <code>`. */
export const SHADOW_OUTCOME_HEADER = 'x-portcullis-shadow-outcome'

/**
 * Registers the whole chain of a checked configuration on `app`: the Portcullis plugins in the
 * recommended order, contracts, the health endpoint and one proxy per upstream.
 */
export async function addChain (app: FastifyInstance, valid: ValidGatewayConfig, files: ChainFiles, shared: SharedState): Promise<void> {
  const { core, authn, ipRules, authz, upstreams } = valid
  const { state, store, auditWriter, version, purpose = 'serve', onPrincipal, onResponse, dispatcherFor, observer = null } = shared
  const shadow = purpose === 'shadow'
  limitBodies(app, valid.server.bodyLimit)
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
    ...(valid.helmet === undefined ? {} : { helmet: valid.helmet }),
    ...(ipRules === undefined ? {} : { ipRules }),
    ...(valid.userAgents === undefined ? {} : { userAgents: valid.userAgents }),
    ...(valid.cors === undefined ? {} : { cors: valid.cors }),
    ...(files.mtls === undefined || shadow ? {} : { mtls: files.mtls }),
    ...(ipRateLimit === undefined ? {} : { ipRateLimit: withStore(ipRateLimit) }),
    ...(authn === undefined ? {} : { authn }),
    ...(rateLimit === undefined ? {} : { rateLimit: withStore(rateLimit) }),
    ...(authz === undefined ? {} : { authz }),
    ...(valid.masking === undefined ? {} : { masking: valid.masking }),
    ...(audit === undefined ? {} : { audit }),
    // A shadow decides only: what it would do is counted in trial statistics, not in metrics.
    ...(observer === null || shadow ? {} : { observe: observer }),
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

  // Proxied requests tell the upstream who the client is; only trusted proxies may tell the gateway.
  const forwarding = compileForwarding(core)
  for (const [i, upstream] of upstreams.entries()) {
    const declared = routes[i] as UpstreamRoute[]
    const settings: UpstreamDispatch = {
      url: upstream.url,
      headersTimeout: upstream.timeout,
      bodyTimeout: upstream.timeout,
      connections: UPSTREAM_CONNECTIONS,
      pipelining: 1,
      ...(files.connects[i] as { connect: Record<string, unknown> })
    }
    // A public upstream asks for no credentials: authentication and authorization are off on its routes.
    const open: Record<string, unknown> = {
      ...(upstream.public ? { authn: false, authz: false } : {}),
      ...(upstream.deprecation === undefined ? {} : { deprecation: upstream.deprecation })
    }
    const target = shadow ? null : proxyTarget(app, upstream, settings, dispatcherFor)
    if (declared.length > 0) await app.register(declaredRoutes, { prefix: upstream.prefix, upstream: { ...upstream, routes: declared }, target, forwarding, open })
    if (target === null) {
      await app.register(async (scope) => {
        scope.addContentTypeParser('*', passThrough)
        scope.all('/', { config: open }, decided)
        scope.all('/*', { config: open }, decided)
      }, { prefix: upstream.prefix })
      continue
    }
    // Every other path under the prefix goes upstream too, its body streamed as it arrives.
    const handler = proxyHandler(target, forwarding)
    await app.register(async (scope) => {
      scope.addContentTypeParser('application/json', passThrough)
      scope.addContentTypeParser('*', passThrough)
      scope.route({ method: PROXIED_METHODS, url: '/', config: open, handler })
      scope.route({ method: PROXIED_METHODS, url: '/*', config: open, handler })
    }, { prefix: upstream.prefix })
  }
}

// The methods proxied under a prefix beyond the declared routes (TRACE and CONNECT never are).
const PROXIED_METHODS = ['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS']

// Bodies go upstream as streams, unread by the gateway.
function passThrough (_request: FastifyRequest, payload: unknown, done: (err: Error | null, body?: unknown) => void): void {
  done(null, payload)
}

/**
 * Where an upstream's requests go: the shared pool for its settings, or one of this chain's own,
 * closed with it.
 */
function proxyTarget (app: FastifyInstance, upstream: ValidUpstream, settings: UpstreamDispatch, dispatcherFor: SharedState['dispatcherFor']): ProxyTarget {
  let dispatcher: Dispatcher
  if (dispatcherFor === undefined) {
    const { url: _url, ...options } = settings
    const agent = new Agent(options)
    app.addHook('onClose', async () => { await agent.destroy() })
    dispatcher = agent
  } else {
    dispatcher = dispatcherFor(settings)
  }
  return {
    origin: upstream.url,
    prefix: upstream.prefix,
    rewritePrefix: upstream.rewritePrefix,
    dispatcher,
    headersTimeout: settings.headersTimeout,
    bodyTimeout: settings.bodyTimeout
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
async function declaredRoutes (app: FastifyInstance, { upstream, target, forwarding, open }: { upstream: ValidUpstream, target: ProxyTarget | null, forwarding: Forwarding, open: Record<string, unknown> }): Promise<void> {
  // Bodies other than JSON and text go upstream as streams, as they do under the prefix.
  app.addContentTypeParser('*', passThrough)
  const heads = new Set(upstream.routes.filter((route) => ([] as string[]).concat(route.method).includes('HEAD')).map((route) => route.path))
  // One handler for every route: the request goes upstream as it arrived, the prefix rewritten.
  const handler = target === null ? decided : proxyHandler(target, forwarding)
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
        ...(route.rateLimit === undefined ? {} : { rateLimit: route.rateLimit }),
        ...(route.deprecation === undefined ? {} : { deprecation: route.deprecation })
      },
      handler
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

/** The audit section with its signing key read: the plugin takes PEM text. */
async function readAudit (audit: NonNullable<ValidGatewayConfig['audit']>): Promise<AuditLogOptions> {
  const chain = audit.chain
  if (typeof chain !== 'object' || chain.signingKey === undefined) return audit as AuditLogOptions
  return { ...audit, chain: { ...chain, signingKey: (await readPem(chain.signingKey, 'audit.chain.signingKey')).toString('latin1') } }
}
