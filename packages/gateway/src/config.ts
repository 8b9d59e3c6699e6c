import { readFile } from 'node:fs/promises'
import { dirname, extname, isAbsolute, resolve } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { checkKnownKeys, checkNumber, InvalidOption, invalidOption, type CoreOptions } from '@portcullis/core'
import type { AuditLogOptions, ChainOptions } from '@portcullis/audit-log'
import type { AuthnOptions } from '@portcullis/authn'
import type { AuthzOptions, AuthzRule, IpRulesOptions } from '@portcullis/authz'
import type { RateLimitOptions, RuleOptions } from '@portcullis/rate-limit'
import type { MtlsOptions } from '@portcullis/mtls'
import type { SchemaValidateOptions } from '@portcullis/schema-validate'
import { compileResourcePath, type UpstreamResource } from './resources.js'
import type { CorsOptions } from './cors.js'
import type { SecurityHeadersOptions } from './security-headers.js'
import type { UserAgentsOptions } from './user-agents.js'
import type { MaskingOptions } from './masking.js'
import type { RouteDeprecation } from './deprecation.js'
import { resolveTlsPaths, validateServerTls, validateUpstreamTls, type ServerTlsConfig, type UpstreamTlsConfig } from './tls.js'

/** HTTP methods a declared route may answer. */
export const ROUTE_METHODS: readonly string[] = Object.freeze(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])

/**
 * A route of an upstream that the gateway knows by its pattern, so that rules key on the route
 * Fastify matched (`/orders/:id`), never on the raw URL. Paths under the prefix that no declared
 * route matches still go to the upstream, under the authz default rule.
 */
export interface UpstreamRoute {
  /** One method or a list; GET routes answer HEAD too. */
  method: string | string[]
  /** The path under the upstream's prefix, in Fastify's syntax: `/orders/:id`. */
  path: string
  /** The route's authorization rule (`@portcullis/authz`); `false` marks it public. Needs the `authz` section. */
  authz?: AuthzRule | false
  /**
   * The route's own limits (`@portcullis/rate-limit`), in place of the `rateLimit` section's
   * `limits` and `plans` (which they need), or `false`: the route is never limited.
   */
  rateLimit?: RuleOptions[] | false
  /**
   * The object the route addresses, fetched from the upstream for the route's `authz` rule (as
   * its `resource`): `{ path: '/orders/:id' }`. Lets a configuration file check ownership.
   */
  resource?: UpstreamResource
  /** The route is retiring: `Deprecation` and `Sunset` headers, and with `cutoff`, 410 after the sunset. Over the upstream's. */
  deprecation?: RouteDeprecation
}

/** One upstream service the standalone gateway proxies to. */
export interface UpstreamConfig {
  /** Path prefix on the gateway, such as `/api`. Requests under it go to this upstream. */
  prefix: string
  /** Origin of the upstream: `http://host:port` or `https://host:port`. */
  url: string
  /**
   * What replaces `prefix` in the path sent upstream.
   * @default '' (the prefix is removed)
   */
  rewritePrefix?: string
  /**
   * Milliseconds to wait for the upstream's response headers, and between body chunks, before
   * answering 504.
   * @default 10000
   */
  timeout?: number
  /** Routes with rules of their own. */
  routes?: UpstreamRoute[]
  /**
   * The upstream's API contract (`@portcullis/schema-validate`): an OpenAPI 3.0 or 3.1 document,
   * its paths under `prefix` (`/orders` is the gateway's `/api/orders`). Every operation becomes
   * a declared route; requests are validated against it, and paths or methods it does not have
   * are refused. A relative file path is read from the configuration file's directory.
   */
  openapi?: string | object
  /** How the contract is enforced: `@portcullis/schema-validate` options other than `openapi` and `prefix`. */
  validation?: Omit<SchemaValidateOptions, 'openapi' | 'prefix'>
  /** TLS toward an `https://` upstream: its CA, and the gateway's client certificate (upstream mTLS). */
  tls?: UpstreamTlsConfig
  /**
   * The upstream needs no credentials: authentication and authorization are off on its routes
   * (IP rules, limits, validation and audit still apply). Say so explicitly; a policy document
   * without authn is refused unless every upstream is public.
   * @default false
   */
  public?: boolean
  /** The whole upstream is retiring: every route under its prefix announces it (a route's own `deprecation` wins). */
  deprecation?: RouteDeprecation
}

/** An upstream once checked: every option set, the contract's only if given. */
export type ValidUpstream = Required<Omit<UpstreamConfig, 'openapi' | 'validation' | 'tls' | 'deprecation'>> & Pick<UpstreamConfig, 'openapi' | 'validation' | 'tls' | 'deprecation'>

/** The standalone gateway's configuration document. */
export interface GatewayConfig {
  /** The version of the document format; 1 is the only one yet. @default 1 */
  version?: 1
  /** The JSON Schema an editor checks the document with (`@portcullis/policy/policy.schema.json`); not read. */
  $schema?: string
  server?: {
    host?: string
    port?: number
    /** Listen with TLS, and with `clientCa`, ask clients for certificates (mutual TLS). */
    tls?: ServerTlsConfig
    /**
     * How long a client has to send a whole request, in ms; a slower one gets 408 and its
     * connection is closed (slow-request attacks hold no connection longer). 0 turns it off.
     * @default 30000
     */
    requestTimeout?: number
    /** How long an idle keep-alive connection stays open, in ms. @default 72000 */
    keepAliveTimeout?: number
    /** The largest request line and headers, in bytes; larger ones get 431. @default 16384 */
    maxHeaderSize?: number
    /**
     * The largest request body, in bytes, parsed or streamed to an upstream; a larger one gets
     * 413 before any of it goes upstream.
     * @default 1048576
     */
    bodyLimit?: number
  }
  core?: CoreOptions
  /** Security response headers: helmet's options, or `true` for its defaults. */
  helmet?: true | SecurityHeadersOptions
  /** CORS (`@fastify/cors` options; `origin` required), answered before authentication. */
  cors?: CorsOptions
  /** User-Agent deny lists: `true` for the built-in list of attack tools, or its options. */
  userAgents?: true | UserAgentsOptions
  /** Personal data masked in JSON answers: `true` for e-mail addresses and card numbers, or its options. */
  masking?: true | MaskingOptions
  /** Prometheus metrics, served on a listener of their own, and OpenTelemetry spans. Read at start only. */
  observe?: ObserveConfig
  /**
   * Client certificates (`@portcullis/mtls` options). `ca` is a file here, by default the
   * listener's `server.tls.clientCa`; `crl` files are relative to the configuration file too.
   */
  mtls?: Omit<MtlsOptions, 'ca'> & { ca?: string }
  /** Authentication (`@portcullis/authn` options); without it, no credentials are asked for. */
  authn?: AuthnOptions
  /** IP allow/deny lists (`@portcullis/authz`). */
  ipRules?: IpRulesOptions
  /** The coarse limit by client IP, before authentication (`@portcullis/rate-limit`). */
  ipRateLimit?: Omit<RateLimitOptions, 'stage' | 'plans'>
  /** Limits by principal, plan and route, after authentication (`@portcullis/rate-limit`). */
  rateLimit?: Omit<RateLimitOptions, 'stage'>
  /**
   * Where both rate-limit stages keep their counts: in this process (the default), or in Redis,
   * shared by every gateway instance that uses the same Redis and prefix.
   */
  rateLimitStore?: RateLimitStoreConfig
  /** Authorization (`@portcullis/authz` options); with it, routes without a rule are denied unless `defaultRule` says otherwise. */
  authz?: AuthzOptions
  /**
   * The audit log (`@portcullis/audit-log` options). File sink paths are relative to the
   * configuration file, and so is `chain.signingKey`, a PEM file here.
   */
  audit?: AuditConfig
  upstreams?: UpstreamConfig[]
}

/** The audit log's options as a configuration file gives them: the checkpoint signing key is a file. */
export type AuditConfig = Omit<AuditLogOptions, 'chain'> & { chain?: boolean | (Omit<ChainOptions, 'signingKey'> & { signingKey?: string }) }

/** What the standalone gateway reports, and where. */
export interface ObserveConfig {
  /** Prometheus metrics, scraped from `http://host:port/metrics`, a listener of their own. */
  metrics?: { port: number, host?: string, prefix?: string, buckets?: number[] }
  /** OpenTelemetry spans, through the tracer provider registered in the process (`@opentelemetry/api`). @default false */
  tracing?: boolean
}

/** The rate-limit counts in Redis (`RedisStore` of `@portcullis/rate-limit`). */
export interface RateLimitStoreConfig {
  redis: {
    /** `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS. */
    url: string
    /** Prepended to every key. @default 'portcullis:rl:' */
    prefix?: string
    /** How long a request waits for Redis, in ms. @default 100 */
    timeoutMs?: number
    /** While Redis cannot be reached: `open` counts in this process, `closed` answers 503. @default 'open' */
    failMode?: 'open' | 'closed'
    /** After a failure, how long to go without asking Redis, in ms. @default 1000 */
    retryAfterMs?: number
  }
}

export const DEFAULT_HOST = '127.0.0.1'
export const DEFAULT_PORT = 3000
export const DEFAULT_UPSTREAM_TIMEOUT = 10_000
export const HEALTH_PATHS: readonly string[] = Object.freeze(['/healthz'])

/** The listener's settings once checked, with defaults applied. */
export interface ValidServer { host: string, port: number, tls?: ServerTlsConfig, requestTimeout: number, keepAliveTimeout: number, maxHeaderSize: number, bodyLimit: number }

export const DEFAULT_REQUEST_TIMEOUT = 30_000
export const DEFAULT_KEEP_ALIVE_TIMEOUT = 72_000
export const DEFAULT_MAX_HEADER_SIZE = 16_384
export const DEFAULT_BODY_LIMIT = 1_048_576

/** A configuration document once checked, with defaults applied. */
export type ValidGatewayConfig = Pick<GatewayConfig, 'helmet' | 'cors' | 'userAgents' | 'masking' | 'observe' | 'authn' | 'ipRules' | 'mtls' | 'authz' | 'ipRateLimit' | 'rateLimit' | 'rateLimitStore' | 'audit'> & {
  server: ValidServer
  core: CoreOptions
  upstreams: ValidUpstream[]
}

/** Checks a configuration document and returns it with defaults applied. Throws naming the option. */
export function validateGatewayConfig (input: unknown): ValidGatewayConfig {
  const doc = checkKnownKeys(input, ['version', '$schema', 'server', 'core', 'helmet', 'cors', 'userAgents', 'masking', 'observe', 'authn', 'ipRules', 'mtls', 'ipRateLimit', 'rateLimit', 'rateLimitStore', 'authz', 'audit', 'upstreams'], 'gateway')
  if (doc.version !== undefined && doc.version !== 1) throw invalidOption('version', '1, the version of the document format this gateway reads', doc.version)
  const server = checkKnownKeys(doc.server ?? {}, ['host', 'port', 'tls', 'requestTimeout', 'keepAliveTimeout', 'maxHeaderSize', 'bodyLimit'], 'server')
  const tls = server.tls === undefined ? undefined : validateServerTls(server.tls)
  const mtls = doc.mtls === undefined ? undefined : validateMtls(doc.mtls, tls)
  const host = server.host ?? DEFAULT_HOST
  if (typeof host !== 'string' || host === '') throw invalidOption('server.host', 'a host name or IP address', host)
  const port = server.port ?? DEFAULT_PORT
  if (!Number.isInteger(port) || (port as number) < 0 || (port as number) > 65535) {
    throw invalidOption('server.port', 'an integer from 0 to 65535', port)
  }
  const upstreamList = doc.upstreams ?? []
  if (!Array.isArray(upstreamList)) throw invalidOption('upstreams', 'a list of { prefix, url }', upstreamList)
  const prefixes = new Set<string>()
  const upstreams = upstreamList.map((entry: unknown, i) => {
    const upstream = validateUpstream(entry, `upstreams[${i}]`, { authz: doc.authz !== undefined, ipRateLimit: doc.ipRateLimit !== undefined, rateLimit: doc.rateLimit !== undefined })
    if (prefixes.has(upstream.prefix)) throw new InvalidOption(`upstreams[${i}].prefix "${upstream.prefix}" is used by another upstream`)
    prefixes.add(upstream.prefix)
    return upstream
  })
  // Plugin options are checked in full by the plugins themselves, at registration.
  return {
    server: {
      host,
      port: port as number,
      ...(tls === undefined ? {} : { tls }),
      requestTimeout: checkNumber(server.requestTimeout, DEFAULT_REQUEST_TIMEOUT, 'server.requestTimeout', 'a whole number of ms from 0 (no limit) to 3600000', (n) => Number.isInteger(n) && n >= 0 && n <= 3_600_000),
      keepAliveTimeout: checkNumber(server.keepAliveTimeout, DEFAULT_KEEP_ALIVE_TIMEOUT, 'server.keepAliveTimeout', 'a whole number of ms from 1 to 3600000', (n) => Number.isInteger(n) && n >= 1 && n <= 3_600_000),
      maxHeaderSize: checkNumber(server.maxHeaderSize, DEFAULT_MAX_HEADER_SIZE, 'server.maxHeaderSize', 'a whole number of bytes from 1024 to 1048576', (n) => Number.isInteger(n) && n >= 1024 && n <= 1_048_576),
      bodyLimit: checkNumber(server.bodyLimit, DEFAULT_BODY_LIMIT, 'server.bodyLimit', 'a whole number of bytes, 0 or more', (n) => Number.isSafeInteger(n) && n >= 0)
    },
    core: (doc.core ?? {}) as CoreOptions,
    ...(doc.helmet === undefined ? {} : { helmet: doc.helmet as true | SecurityHeadersOptions }),
    ...(doc.cors === undefined ? {} : { cors: doc.cors as CorsOptions }),
    ...(doc.userAgents === undefined ? {} : { userAgents: doc.userAgents as true | UserAgentsOptions }),
    ...(doc.masking === undefined ? {} : { masking: doc.masking as true | MaskingOptions }),
    ...(doc.observe === undefined ? {} : { observe: validateObserve(doc.observe) }),
    ...(doc.authn === undefined ? {} : { authn: doc.authn as AuthnOptions }),
    ...(doc.ipRules === undefined ? {} : { ipRules: doc.ipRules as IpRulesOptions }),
    ...(mtls === undefined ? {} : { mtls }),
    ...(doc.authz === undefined ? {} : { authz: doc.authz as AuthzOptions }),
    ...(doc.ipRateLimit === undefined ? {} : { ipRateLimit: doc.ipRateLimit as ValidGatewayConfig['ipRateLimit'] }),
    ...(doc.rateLimit === undefined ? {} : { rateLimit: doc.rateLimit as ValidGatewayConfig['rateLimit'] }),
    ...(doc.rateLimitStore === undefined ? {} : { rateLimitStore: validateRateLimitStore(doc) }),
    ...(doc.audit === undefined ? {} : { audit: validateAudit(doc.audit) }),
    upstreams
  }
}

// The observer checks prefix and buckets; here, where the metrics are served.
function validateObserve (input: unknown): ObserveConfig {
  const { metrics, tracing } = checkKnownKeys(input, ['metrics', 'tracing'], 'observe')
  if (tracing !== undefined && typeof tracing !== 'boolean') throw invalidOption('observe.tracing', 'a boolean', tracing)
  if (metrics === undefined) return { ...(tracing === undefined ? {} : { tracing }) }
  const { port, host = DEFAULT_HOST } = checkKnownKeys(metrics, ['port', 'host', 'prefix', 'buckets'], 'observe.metrics')
  if (!Number.isInteger(port) || (port as number) < 0 || (port as number) > 65535) throw invalidOption('observe.metrics.port', 'the port of the metrics listener, an integer from 0 to 65535', port)
  if (typeof host !== 'string' || host === '') throw invalidOption('observe.metrics.host', 'a host name or IP address', host)
  return { metrics: { ...(metrics as ObserveConfig['metrics']), port: port as number, host }, ...(tracing === undefined ? {} : { tracing }) }
}

// The plugin checks the rest of its options; here, only what the configuration file changes.
function validateMtls (input: unknown, tls: ServerTlsConfig | undefined): NonNullable<GatewayConfig['mtls']> {
  const mtls = checkKnownKeys(input, Object.keys(input ?? {}), 'mtls') as NonNullable<GatewayConfig['mtls']>
  if (mtls.ca !== undefined && (typeof mtls.ca !== 'string' || mtls.ca === '')) throw invalidOption('mtls.ca', 'the path of a PEM file of CA certificates', mtls.ca)
  if (mtls.crl !== undefined && (!Array.isArray(mtls.crl) || !mtls.crl.every((file) => typeof file === 'string' && file !== ''))) throw invalidOption('mtls.crl', 'a list of CRL file paths', mtls.crl)
  const ca = mtls.ca ?? tls?.clientCa
  return ca === undefined ? { ...mtls } : { ...mtls, ca }
}

// The plugin checks the rest; here, only the signing key, which is a file in a configuration.
function validateAudit (input: unknown): AuditConfig {
  const audit = checkKnownKeys(input, Object.keys(input ?? {}), 'audit') as AuditConfig
  const chain = audit.chain
  if (typeof chain === 'object' && chain !== null && chain.signingKey !== undefined && (typeof chain.signingKey !== 'string' || chain.signingKey === '')) {
    throw invalidOption('audit.chain.signingKey', 'the path of a PEM file holding the private key that signs checkpoints')
  }
  return { ...audit }
}

function validateRateLimitStore (doc: Record<string, unknown>): RateLimitStoreConfig {
  const { redis } = checkKnownKeys(doc.rateLimitStore, ['redis'], 'rateLimitStore')
  if (redis === undefined) throw invalidOption('rateLimitStore.redis', 'the Redis to count in, such as { url: "redis://127.0.0.1:6379" }', redis)
  const { url, prefix, timeoutMs, failMode, retryAfterMs } = checkKnownKeys(redis, ['url', 'prefix', 'timeoutMs', 'failMode', 'retryAfterMs'], 'rateLimitStore.redis')
  // The URL may hold a password: it is never part of a message.
  if (typeof url !== 'string' || !isRedisUrl(url)) throw invalidOption('rateLimitStore.redis.url', 'a redis:// or rediss:// URL such as "redis://127.0.0.1:6379"')
  if (prefix !== undefined && (typeof prefix !== 'string' || prefix === '')) throw invalidOption('rateLimitStore.redis.prefix', 'a non-empty string', prefix)
  if (timeoutMs !== undefined && !(Number.isInteger(timeoutMs) && (timeoutMs as number) >= 1)) throw invalidOption('rateLimitStore.redis.timeoutMs', 'a whole number of ms, 1 or more', timeoutMs)
  if (failMode !== undefined && failMode !== 'open' && failMode !== 'closed') throw invalidOption('rateLimitStore.redis.failMode', 'open or closed', failMode)
  if (retryAfterMs !== undefined && !(Number.isInteger(retryAfterMs) && (retryAfterMs as number) >= 0)) throw invalidOption('rateLimitStore.redis.retryAfterMs', 'a whole number of ms, 0 or more', retryAfterMs)
  if (doc.ipRateLimit === undefined && doc.rateLimit === undefined) throw invalidOption('rateLimitStore', 'used with ipRateLimit or rateLimit, which count in it', doc.rateLimitStore)
  for (const stage of ['ipRateLimit', 'rateLimit']) {
    const options = doc[stage] as { store?: unknown } | undefined
    if (options?.store !== undefined) throw invalidOption(`${stage}.store`, 'left out when rateLimitStore is set (both stages count in rateLimitStore)')
  }
  return { redis: redis as RateLimitStoreConfig['redis'] }
}

function isRedisUrl (text: string): boolean {
  try {
    const url = new URL(text)
    return (url.protocol === 'redis:' || url.protocol === 'rediss:') && url.hostname !== ''
  } catch {
    return false
  }
}

/** Which sections of the configuration are given: route rules for a missing one would be ignored. */
interface Sections { authz: boolean, ipRateLimit: boolean, rateLimit: boolean }

function validateUpstream (input: unknown, path: string, sections: Sections): ValidUpstream {
  const entry = checkKnownKeys(input, ['prefix', 'url', 'rewritePrefix', 'timeout', 'routes', 'openapi', 'validation', 'tls', 'public', 'deprecation'], path)
  const { prefix, url, rewritePrefix = '', timeout = DEFAULT_UPSTREAM_TIMEOUT, routes = [], openapi, validation, public: isPublic = false } = entry
  if (typeof isPublic !== 'boolean') throw invalidOption(`${path}.public`, 'a boolean', isPublic)
  if (typeof prefix !== 'string' || !/^\/[A-Za-z0-9._~!$&'()*+,;=:@/-]*$/.test(prefix) || prefix.endsWith('/')) {
    throw invalidOption(`${path}.prefix`, 'a path that starts with "/" and does not end with one, such as "/api"', prefix)
  }
  if (HEALTH_PATHS.some((health) => health === prefix || health.startsWith(`${prefix}/`))) {
    throw invalidOption(`${path}.prefix`, `a path that does not cover the health endpoints ${HEALTH_PATHS.join(', ')}`, prefix)
  }
  if (typeof url !== 'string' || !isOrigin(url)) {
    throw invalidOption(`${path}.url`, 'an http:// or https:// origin with no path, query or credentials, such as "http://127.0.0.1:4000"', url)
  }
  if (typeof rewritePrefix !== 'string' || (rewritePrefix !== '' && !rewritePrefix.startsWith('/'))) {
    throw invalidOption(`${path}.rewritePrefix`, 'empty or a path that starts with "/"', rewritePrefix)
  }
  if (!Number.isInteger(timeout) || (timeout as number) < 1 || (timeout as number) > 600_000) {
    throw invalidOption(`${path}.timeout`, 'milliseconds, an integer from 1 to 600000', timeout)
  }
  if (!Array.isArray(routes)) throw invalidOption(`${path}.routes`, 'a list of { method, path, authz? }', routes)
  const seen = new Set<string>()
  const checked = routes.map((route: unknown, i) => validateRoute(route, `${path}.routes[${i}]`, sections, seen))
  // The document and the options themselves are checked by the plugin, when the gateway starts.
  if (openapi !== undefined && typeof openapi !== 'string' && (typeof openapi !== 'object' || openapi === null || Array.isArray(openapi))) {
    throw invalidOption(`${path}.openapi`, 'the path of an OpenAPI document, or the document itself', openapi)
  }
  if (validation !== undefined && openapi === undefined) throw invalidOption(`${path}.validation`, 'used with openapi, the contract it enforces', validation)
  const tls = entry.tls === undefined ? undefined : validateUpstreamTls(entry.tls, `${path}.tls`, url)
  const lookup = checked.findIndex((route) => route.resource !== undefined)
  if (tls !== undefined && lookup !== -1) {
    throw invalidOption(`${path}.routes[${lookup}].resource`, 'left out on an upstream with tls: resource lookups do not use the upstream\'s TLS settings')
  }
  return {
    prefix,
    url: new URL(url).origin,
    rewritePrefix,
    timeout: timeout as number,
    routes: checked,
    public: isPublic,
    ...(openapi === undefined ? {} : { openapi: openapi as string | object }),
    ...(validation === undefined ? {} : { validation: validation as ValidUpstream['validation'] }),
    ...(tls === undefined ? {} : { tls }),
    ...(entry.deprecation === undefined ? {} : { deprecation: entry.deprecation as RouteDeprecation })
  }
}

function validateRoute (input: unknown, path: string, sections: Sections, seen: Set<string>): UpstreamRoute {
  const route = checkKnownKeys(input, ['method', 'path', 'authz', 'rateLimit', 'resource', 'deprecation'], path)
  const methods = Array.isArray(route.method) ? route.method : [route.method]
  if (methods.length === 0 || !methods.every((m) => typeof m === 'string' && ROUTE_METHODS.includes(m))) {
    throw invalidOption(`${path}.method`, `one of ${ROUTE_METHODS.join(', ')}, or a list of them`, route.method)
  }
  if (typeof route.path !== 'string' || !route.path.startsWith('/')) throw invalidOption(`${path}.path`, 'a path under the prefix that starts with "/", such as "/orders/:id"', route.path)
  for (const method of methods as string[]) {
    const key = `${method} ${route.path}`
    if (seen.has(key)) throw invalidOption(`${path}`, 'a method and path no other route of this upstream declares', key)
    seen.add(key)
  }
  // A rule without the authz section would be ignored: the route would be open while it looks protected.
  if (route.authz !== undefined && !sections.authz) throw invalidOption(`${path}.authz`, 'used with the authz section of the configuration, which registers authorization', route.authz)
  // The limits themselves are checked by the rate-limit plugin when the route is registered.
  if (route.rateLimit !== undefined && route.rateLimit !== false && !Array.isArray(route.rateLimit)) {
    throw invalidOption(`${path}.rateLimit`, 'false (never limited) or a list of limits such as [{ name: "exports", limit: 10, window: "1m" }]', route.rateLimit)
  }
  if (Array.isArray(route.rateLimit) && !sections.rateLimit) throw invalidOption(`${path}.rateLimit`, 'used with the rateLimit section of the configuration, which applies limits per route', route.rateLimit)
  if (route.rateLimit === false && !sections.ipRateLimit && !sections.rateLimit) throw invalidOption(`${path}.rateLimit`, 'used with the ipRateLimit or rateLimit section of the configuration', route.rateLimit)
  if (route.resource !== undefined) {
    if (typeof route.authz !== 'object' || route.authz === null) throw invalidOption(`${path}.resource`, 'used with an authz rule on the route, which reads it', route.resource)
    if ((route.authz as { resource?: unknown }).resource !== undefined) throw new InvalidOption(`${path}.resource and ${path}.authz.resource cannot both be given`)
    compileResourcePath(route.resource, route.path, `${path}.resource`)
  }
  return {
    method: methods as string[],
    path: route.path,
    ...(route.authz === undefined ? {} : { authz: route.authz as AuthzRule | false }),
    ...(route.rateLimit === undefined ? {} : { rateLimit: route.rateLimit as RuleOptions[] | false }),
    ...(route.resource === undefined ? {} : { resource: route.resource as UpstreamResource }),
    ...(route.deprecation === undefined ? {} : { deprecation: route.deprecation as RouteDeprecation })
  }
}

function isOrigin (text: string): boolean {
  if (!URL.canParse(text)) return false
  const url = new URL(text)
  return (url.protocol === 'http:' || url.protocol === 'https:') && url.username === '' && url.password === '' &&
    (url.pathname === '/' || url.pathname === '') && url.search === '' && url.hash === ''
}

/** Reads a configuration document from a YAML or JSON file (by its extension; YAML otherwise). */
export async function loadGatewayConfig (file: string): Promise<ReturnType<typeof validateGatewayConfig>> {
  const text = await readFile(file, 'utf8')
  let document: unknown
  try {
    document = extname(file).toLowerCase() === '.json' ? JSON.parse(text) : parseYaml(text, { strict: true, uniqueKeys: true })
  } catch (err) {
    throw new InvalidOption(`${file} is not valid ${extname(file).toLowerCase() === '.json' ? 'JSON' : 'YAML'}: ${(err as Error).message}`)
  }
  return resolveConfigPaths(validateGatewayConfig(document ?? {}), dirname(file))
}

/**
 * A policy document (its secret references resolved) checked as a configuration, with its paths
 * read from `dir`, the document's directory. The document itself is left as it is.
 */
export function configOfDocument (document: Record<string, unknown>, dir: string): ValidGatewayConfig {
  return resolveConfigPaths(validateGatewayConfig(structuredClone(document)), dir)
}

/**
 * Makes the file paths of a checked configuration absolute: contracts, certificates, CRLs,
 * audit files and keys named by relative paths sit next to the configuration file, in `dir`.
 */
export function resolveConfigPaths (config: ValidGatewayConfig, dir: string): ValidGatewayConfig {
  for (const upstream of config.upstreams) {
    if (typeof upstream.openapi === 'string' && !isAbsolute(upstream.openapi)) upstream.openapi = resolve(dir, upstream.openapi)
    resolveTlsPaths(upstream.tls, dir)
  }
  resolveTlsPaths(config.server.tls, dir)
  for (const sink of config.audit?.sinks ?? []) {
    if (sink.type === 'file' && typeof sink.path === 'string') sink.path = resolve(dir, sink.path)
  }
  const chain = config.audit?.chain
  if (typeof chain === 'object' && chain.signingKey !== undefined) chain.signingKey = resolve(dir, chain.signingKey)
  if (config.mtls !== undefined) {
    resolveTlsPaths(config.mtls, dir)
    if (config.mtls.crl !== undefined) config.mtls.crl = config.mtls.crl.map((crl) => resolve(dir, crl))
  }
  return config
}
