import fp from 'fastify-plugin'
import type { FastifyPluginAsync, onRequestHookHandler } from 'fastify'
import { checkKnownKeys, invalidOption, portcullisCore, type CoreOptions } from '@portcullis/core'
import { portcullisAuditLog, type AuditLogOptions } from '@portcullis/audit-log'
import { portcullisAuthn, type AuthnOptions } from '@portcullis/authn'
import { portcullisAuthz, portcullisIpRules, type AuthzOptions, type IpRulesOptions } from '@portcullis/authz'
import { portcullisMtls, type MtlsOptions } from '@portcullis/mtls'
import { portcullisRateLimit, type RateLimitOptions } from '@portcullis/rate-limit'
import { portcullisSchemaValidate, type SchemaValidateOptions } from '@portcullis/schema-validate'

export interface PortcullisOptions {
  /** Options of `@portcullis/core`: trusted proxies, the policy snapshot, problem+json. Always registered. */
  core?: CoreOptions
  /** IP allow/deny lists (`@portcullis/authz`), step 2; registered when given. */
  ipRules?: IpRulesOptions
  /** Client certificates (`@portcullis/mtls`), step 3; registered when given. */
  mtls?: MtlsOptions
  /** The coarse limit by client IP (`@portcullis/rate-limit`, stage `ip`), step 4; registered when given. */
  ipRateLimit?: Omit<RateLimitOptions, 'stage' | 'plans'>
  /** Options of `@portcullis/authn`, step 5; registered when given. */
  authn?: AuthnOptions
  /** Limits by principal, plan and route (`@portcullis/rate-limit`, stage `principal`), step 6; registered when given. */
  rateLimit?: Omit<RateLimitOptions, 'stage'>
  /** Options of `@portcullis/authz`, step 7 (and 9); registered when given. */
  authz?: AuthzOptions
  /** The OpenAPI document and strictness (`@portcullis/schema-validate`), step 8; registered when given. */
  schemaValidate?: SchemaValidateOptions
  /**
   * The audit log (`@portcullis/audit-log`), step 12; registered when given. The headers and
   * query parameters that authn's API-key methods read are redacted too.
   */
  audit?: AuditLogOptions
  /**
   * An `onRequest` hook that runs once authentication has set `request.principal` (step 5) and
   * before the limits by principal (step 6): where a request can be routed by who it is, as a
   * canary policy version is.
   */
  onPrincipal?: onRequestHookHandler
}

interface Part {
  key: Exclude<keyof PortcullisOptions, 'onPrincipal'>
  plugin: FastifyPluginAsync<never>
  /** Registered even without options. */
  always: boolean
  /** Options the meta-plugin sets itself, over the user's. */
  fixed?: Record<string, unknown>
}

// The parts of the chain this version provides, in RECOMMENDED_ORDER. A part is added here when
// its package exists; options for parts that do not exist yet are refused, never ignored.
const PARTS: readonly Part[] = [
  { key: 'core', plugin: portcullisCore as FastifyPluginAsync<never>, always: true },
  { key: 'ipRules', plugin: portcullisIpRules as FastifyPluginAsync<never>, always: false },
  { key: 'mtls', plugin: portcullisMtls as FastifyPluginAsync<never>, always: false },
  { key: 'ipRateLimit', plugin: portcullisRateLimit as FastifyPluginAsync<never>, always: false, fixed: { stage: 'ip' } },
  { key: 'authn', plugin: portcullisAuthn as FastifyPluginAsync<never>, always: false },
  { key: 'rateLimit', plugin: portcullisRateLimit as FastifyPluginAsync<never>, always: false, fixed: { stage: 'principal' } },
  { key: 'authz', plugin: portcullisAuthz as FastifyPluginAsync<never>, always: false },
  { key: 'schemaValidate', plugin: portcullisSchemaValidate as FastifyPluginAsync<never>, always: false },
  { key: 'audit', plugin: portcullisAuditLog as FastifyPluginAsync<never>, always: false }
]

/**
 * Registers the Portcullis suite in the recommended order (see `RECOMMENDED_ORDER`) with one
 * options object, and answers every rejection with `application/problem+json`.
 *
 * @example
 * await app.register(portcullis, { core: { trustedProxies: ['10.0.0.0/8'] } })
 */
const plugin: FastifyPluginAsync<PortcullisOptions> = async (app, options) => {
  checkKnownKeys(options, [...PARTS.map((part) => part.key), 'onPrincipal'], 'portcullis')
  const { onPrincipal } = options
  if (onPrincipal !== undefined && typeof onPrincipal !== 'function') throw invalidOption('portcullis.onPrincipal', 'an onRequest hook function', onPrincipal)
  for (const part of PARTS) {
    if (part.key === 'rateLimit' && onPrincipal !== undefined) app.addHook('onRequest', onPrincipal)
    const partOptions = options[part.key]
    if (partOptions === undefined && !part.always) continue
    if (part.fixed !== undefined && typeof partOptions === 'object' && partOptions !== null && 'stage' in partOptions) {
      throw invalidOption(`portcullis.${part.key}.stage`, `left out: the ${part.key} part always runs at stage ${String(part.fixed.stage)}`, (partOptions as { stage: unknown }).stage)
    }
    const given = part.key === 'audit' ? withCredentialRedaction(partOptions as AuditLogOptions, options.authn) : partOptions
    await app.register(part.plugin, { ...(given ?? {}), ...part.fixed } as never)
  }
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
