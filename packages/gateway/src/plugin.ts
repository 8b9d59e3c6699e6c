import fp from 'fastify-plugin'
import fastifyCors from '@fastify/cors'
import type { FastifyInstance, FastifyPluginAsync, FastifyPluginCallback, FastifyPluginOptions, onRequestHookHandler } from 'fastify'
import { chainOf, checkKnownKeys, claimChainStep, InvalidOption, invalidOption, portcullisCore, type ChainHook, type CoreOptions } from '@portcullis/core'
import { portcullisAuditLog, type AuditLogOptions } from '@portcullis/audit-log'
import { portcullisAuthn, type AuthnOptions } from '@portcullis/authn'
import { portcullisAuthz, portcullisIpRules, type AuthzOptions, type IpRulesOptions } from '@portcullis/authz'
import { portcullisMtls, type MtlsOptions } from '@portcullis/mtls'
import { portcullisRateLimit, type RateLimitOptions } from '@portcullis/rate-limit'
import { portcullisSchemaValidate, type SchemaValidateOptions } from '@portcullis/schema-validate'
import { corsRegistration, type CorsOptions } from './cors.js'
import { portcullisSecurityHeaders, type SecurityHeadersOptions } from './security-headers.js'
import { portcullisUserAgents, type UserAgentsOptions } from './user-agents.js'
import { portcullisDeprecation, type DeprecationOptions } from './deprecation.js'
import { portcullisMasking, type MaskingOptions } from './masking.js'
import { stepOf } from './order.js'
import { createChainObserver, type ChainObserver, type ObserveOptions } from './observe.js'

const kReplacement = Symbol.for('portcullis.gateway.replacement')

/** A plugin of your own in a part's place: see {@link replacement}. */
export interface Replacement {
  readonly [kReplacement]: true
  readonly plugin: FastifyPluginAsync<never> | FastifyPluginCallback<never>
  readonly options: unknown
}

/**
 * A plugin of your own that takes a part's place in the chain, registered where that part would
 * be, with `options`. It must be wrapped with `fastify-plugin`: the hooks of an encapsulated
 * plugin would not run for the app's routes.
 *
 * @example
 * await app.register(portcullis, { authn: replacement(myAuthn, { realm: 'orders' }) })
 */
export function replacement<O extends FastifyPluginOptions> (plugin: FastifyPluginAsync<O> | FastifyPluginCallback<O>, options?: O): Replacement {
  return Object.freeze({ [kReplacement]: true as const, plugin: plugin as Replacement['plugin'], options: options ?? {} })
}

/** A part's options: its plugin's options, `false` (or leaving it out) for none, or a plugin of your own. */
type PartOption<O> = O | false | Replacement

export interface PortcullisOptions {
  /** Options of `@portcullis/core`: trusted proxies, the policy snapshot, problem+json. Always registered. */
  core?: CoreOptions
  /**
   * Security response headers, step 2: helmet's options, or `true` for its defaults (HSTS,
   * `X-Content-Type-Options: nosniff`, a strict `Content-Security-Policy`, …). Computed once at
   * startup. Registered when given.
   */
  helmet?: PartOption<SecurityHeadersOptions | true>
  /** IP allow/deny lists (`@portcullis/authz`), step 2; registered when given. */
  ipRules?: PartOption<IpRulesOptions>
  /** User-Agent deny lists, step 2: the built-in list of attack tools with `true`, or its options. Registered when given. */
  userAgents?: PartOption<UserAgentsOptions | true>
  /** CORS (`@fastify/cors`), step 2, before authentication; `origin` is required. Registered when given. */
  cors?: PartOption<CorsOptions>
  /**
   * `Deprecation` and `Sunset` headers of routes with `config.deprecation`, and their cut-off,
   * step 2. Always registered, so that a route's deprecation is never silently ignored; `false`
   * leaves it out.
   */
  deprecation?: PartOption<DeprecationOptions>
  /** Client certificates (`@portcullis/mtls`), step 3; registered when given. */
  mtls?: PartOption<MtlsOptions>
  /** The coarse limit by client IP (`@portcullis/rate-limit`, stage `ip`), step 4; registered when given. */
  ipRateLimit?: PartOption<Omit<RateLimitOptions, 'stage' | 'plans'>>
  /** Options of `@portcullis/authn`, step 5; registered when given. */
  authn?: PartOption<AuthnOptions>
  /** Limits by principal, plan and route (`@portcullis/rate-limit`, stage `principal`), step 6; registered when given. */
  rateLimit?: PartOption<Omit<RateLimitOptions, 'stage'>>
  /** Options of `@portcullis/authz`, step 7 (and 9); registered when given. */
  authz?: PartOption<AuthzOptions>
  /** The OpenAPI document and strictness (`@portcullis/schema-validate`), step 8; registered when given. */
  schemaValidate?: PartOption<SchemaValidateOptions>
  /** Personal data masked in JSON responses, step 11: `true` for e-mail addresses and card numbers, or its options. Registered when given. */
  masking?: PartOption<MaskingOptions | true>
  /**
   * The audit log (`@portcullis/audit-log`), step 12; registered when given. The headers and
   * query parameters that authn's API-key methods read are redacted too.
   */
  audit?: PartOption<AuditLogOptions>
  /**
   * Prometheus metrics and OpenTelemetry spans of the chain, each optional: their options, or an
   * observer made with `createChainObserver()` to share one registry between several apps.
   */
  observe?: ObserveOptions | ChainObserver
  /**
   * An `onRequest` hook that runs once authentication has set `request.principal` (step 5) and
   * before the limits by principal (step 6): where a request can be routed by who it is, as a
   * canary policy version is.
   */
  onPrincipal?: onRequestHookHandler
}

type PartKey = Exclude<keyof PortcullisOptions, 'onPrincipal' | 'observe'>

interface Part {
  key: PartKey
  /** Its step of the request path, and the hooks it enforces in: what a replacement claims. */
  step: number
  hooks: ChainHook[]
  /** Registered without options too (core, deprecation). */
  always?: boolean
  /** Registers the part itself with the options given. */
  register: (app: FastifyInstance, options: unknown, all: PortcullisOptions) => Promise<unknown>
}

// Parts whose options may be `true`: the plugin's defaults.
const withDefaultsOnTrue = (plugin: FastifyPluginAsync<never>) =>
  async (app: FastifyInstance, options: unknown) => await app.register(plugin, (options === true ? {} : options) as never)

const plain = (plugin: FastifyPluginAsync<never>, fixed: Record<string, unknown> = {}) =>
  async (app: FastifyInstance, options: unknown) => await app.register(plugin, { ...(options as object), ...fixed } as never)

// The parts in the recommended order (RECOMMENDED_ORDER): Fastify runs the hooks of one kind in the
// order they are added, so the order of registration is the order of enforcement. Options for a
// part that does not exist are refused, never ignored.
const PARTS: readonly Part[] = [
  { key: 'core', step: stepOf('core'), hooks: ['onRequest'], always: true, register: plain(portcullisCore as FastifyPluginAsync<never>) },
  // First of step 2, so that every answer has them, the cheapest rejections included.
  { key: 'helmet', step: stepOf('helmet'), hooks: ['onRequest'], register: withDefaultsOnTrue(portcullisSecurityHeaders as FastifyPluginAsync<never>) },
  { key: 'ipRules', step: stepOf('ipRules'), hooks: ['onRequest'], register: plain(portcullisIpRules as FastifyPluginAsync<never>) },
  { key: 'userAgents', step: stepOf('userAgents'), hooks: ['onRequest'], register: withDefaultsOnTrue(portcullisUserAgents as FastifyPluginAsync<never>) },
  { key: 'cors', step: stepOf('cors'), hooks: ['onRequest'], register: registerCors },
  { key: 'deprecation', step: stepOf('deprecation'), hooks: ['onRequest'], always: true, register: plain(portcullisDeprecation as FastifyPluginAsync<never>) },
  { key: 'mtls', step: stepOf('mtls'), hooks: ['onRequest'], register: plain(portcullisMtls as FastifyPluginAsync<never>) },
  { key: 'ipRateLimit', step: stepOf('ipRateLimit'), hooks: ['onRequest'], register: plain(portcullisRateLimit as FastifyPluginAsync<never>, { stage: 'ip' }) },
  { key: 'authn', step: stepOf('authn'), hooks: ['onRequest'], register: plain(portcullisAuthn as FastifyPluginAsync<never>) },
  { key: 'rateLimit', step: stepOf('rateLimit'), hooks: ['onRequest'], register: plain(portcullisRateLimit as FastifyPluginAsync<never>, { stage: 'principal' }) },
  { key: 'authz', step: stepOf('authz'), hooks: ['onRequest', 'preHandler'], register: plain(portcullisAuthz as FastifyPluginAsync<never>) },
  { key: 'schemaValidate', step: stepOf('schemaValidate'), hooks: ['preValidation'], register: plain(portcullisSchemaValidate as FastifyPluginAsync<never>) },
  { key: 'masking', step: stepOf('masking'), hooks: ['onSend'], register: withDefaultsOnTrue(portcullisMasking as FastifyPluginAsync<never>) },
  {
    key: 'audit',
    step: stepOf('audit'),
    hooks: ['onResponse'],
    register: async (app, options, all) => await app.register(portcullisAuditLog, withCredentialRedaction(options as AuditLogOptions, authnOptionsOf(all.authn)) as never)
  }
]

const STAGED: ReadonlySet<PartKey> = new Set(['ipRateLimit', 'rateLimit'])

/**
 * Registers the Portcullis suite in the recommended order (see `RECOMMENDED_ORDER`) with one
 * options object, and answers every rejection with `application/problem+json`.
 *
 * @example
 * await app.register(portcullis, { core: { trustedProxies: ['10.0.0.0/8'] } })
 */
const plugin: FastifyPluginAsync<PortcullisOptions> = async (app, options) => {
  checkKnownKeys(options, [...PARTS.map((part) => part.key), 'observe', 'onPrincipal'], 'portcullis')
  const { onPrincipal } = options
  const observer = observerOf(options.observe)
  // Stage marks go in the recommended order; the ones of steps 9 and 10 once the parts before them are in.
  const mark = (key: string): void => {
    const { hook, handler } = (observer as ChainObserver).after(key)
    app.addHook(hook as 'onRequest', handler as onRequestHookHandler)
  }
  let handlerMarked = false
  const markHandler = (): void => {
    if (observer === null || handlerMarked) return
    handlerMarked = true
    if (isOn(options.authz)) mark('conditions')
    mark('upstream')
  }
  if (observer !== null) app.addHook('onRequest', observer.start)
  if (onPrincipal !== undefined && typeof onPrincipal !== 'function') throw invalidOption('portcullis.onPrincipal', 'an onRequest hook function', onPrincipal)
  if ((options.core as unknown) === false || isReplacement(options.core)) throw invalidOption('portcullis.core', 'core\'s options: every other part depends on it')
  for (const part of PARTS) {
    if (part.key === 'rateLimit' && onPrincipal !== undefined) app.addHook('onRequest', onPrincipal)
    const value = options[part.key]
    if (value === false || (value === undefined && part.always !== true)) continue
    if (part.step > stepOf('upstream')) markHandler()
    if (isReplacement(value)) {
      await registerReplacement(app, part, value)
    } else {
      if (STAGED.has(part.key) && typeof value === 'object' && value !== null && 'stage' in value) {
        throw invalidOption(`portcullis.${part.key}.stage`, `left out: the ${part.key} part always runs at stage ${part.key === 'ipRateLimit' ? 'ip' : 'principal'}`, (value as { stage: unknown }).stage)
      }
      await part.register(app, value ?? {}, options)
    }
    if (observer !== null) mark(part.key)
  }
  markHandler()
  if (observer !== null) app.addHook('onResponse', observer.finish)
}

function isOn (value: unknown): boolean {
  return value !== undefined && value !== false
}

function observerOf (observe: PortcullisOptions['observe']): ChainObserver | null {
  if (observe === undefined) return null
  if (typeof observe === 'object' && observe !== null && typeof (observe as Partial<ChainObserver>).start === 'function') return observe as ChainObserver
  return createChainObserver(observe as ObserveOptions)
}

function isReplacement (value: unknown): value is Replacement {
  return typeof value === 'object' && value !== null && (value as Partial<Replacement>)[kReplacement] === true
}

async function registerReplacement (app: FastifyInstance, part: Part, { plugin, options }: Replacement): Promise<void> {
  if (typeof plugin !== 'function' || (plugin as unknown as Record<symbol, unknown>)[Symbol.for('skip-override')] !== true) {
    throw invalidOption(`portcullis.${part.key}`, 'a replacement wrapped with fastify-plugin: the hooks of an encapsulated plugin would not run for the app\'s routes')
  }
  const before = chainOf(app).length
  await app.register(plugin as FastifyPluginAsync<never>, options as never)
  // A replacement that is a Portcullis part claims its own place; any other takes the part's.
  if (chainOf(app).length === before) claimChainStep(app, { step: part.step, name: `portcullis.${part.key} (replacement)`, hooks: part.hooks })
}

async function registerCors (app: FastifyInstance, options: unknown): Promise<void> {
  if (app.hasPlugin('@fastify/cors')) throw new InvalidOption('@fastify/cors is registered already; give its options to portcullis.cors instead, so that it runs before authentication')
  const registration = corsRegistration(options as CorsOptions, 'portcullis.cors')
  claimChainStep(app, { step: 2, name: '@fastify/cors', hooks: ['onRequest'] })
  await app.register(fastifyCors, registration)
}

function authnOptionsOf (authn: PortcullisOptions['authn']): AuthnOptions | undefined {
  return authn === false || isReplacement(authn) ? undefined : authn
}

/**
 * The audit options with the header and query parameter of every API-key method of authn
 * redacted as well: a key renamed in authn's options is still never written.
 */
export function withCredentialRedaction (audit: AuditLogOptions, authn: AuthnOptions | undefined): AuditLogOptions {
  if (typeof audit !== 'object' || audit === null) return audit
  const headers: string[] = []
  const query: string[] = []
  for (const method of Object.values(authn?.methods ?? {})) {
    // authn, registered before, has checked its methods.
    if (method.type !== 'api-key') continue
    headers.push((method.header ?? 'x-api-key').toLowerCase())
    if (method.query !== undefined) query.push(method.query)
  }
  const redact = audit.redact ?? {}
  // Malformed options are left as they are, for the plugin to refuse.
  if (headers.length === 0 || !isList(redact.headers) || !isList(redact.query)) return audit
  return { ...audit, redact: { ...redact, headers: [...(redact.headers ?? []), ...headers], query: [...(redact.query ?? []), ...query] } }
}

export const portcullis = fp(plugin, { fastify: '5.x', name: '@portcullis/gateway' })

function isList (value: unknown): value is string[] | undefined {
  return value === undefined || Array.isArray(value)
}
