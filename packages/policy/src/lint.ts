import { pointerToken } from '@portcullis/core'
import type { PolicyProblem } from './errors.js'
import { isSecretReference, secretValues } from './secrets.js'

/** A lint finding: `error` refuses the document, `warning` is reported and lets it through. */
export interface LintFinding extends PolicyProblem {
  readonly severity: 'error' | 'warning'
  readonly rule: string
}

/** The rules, by id, with what each guards against. Ids are stable: tooling may key on them. */
export const LINT_RULES: Readonly<Record<string, string>> = Object.freeze({
  'inline-secret': 'a secret written into the document instead of referenced (env:NAME, file:path): documents get committed, copied and diffed',
  'hmac-secret-length': 'an HMAC key shorter than its hash (RFC 7518 §3.2): short secrets can be brute-forced offline from one token',
  'jwt-audience': 'a JWT method without an audience: a token minted for any other service of the same issuer would be accepted',
  'unauthenticated-upstream': 'an upstream reachable with no authentication, without being marked public: true',
  'authz-fail-open': 'authorization whose default rule lets a route without a rule of its own through',
  'no-authz': 'authentication without authorization: every authenticated principal may call every route',
  'report-mode': 'a part in report mode: it records what it would deny and lets it through'
})

const HMAC_MIN_BYTES: Readonly<Record<string, number>> = { HS256: 32, HS384: 48, HS512: 64 }

type Data = Record<string, unknown>

/**
 * Checks a schema-valid document for mistakes that are legal but unsafe. `resolved` is the same
 * document with its secret references resolved (for rules on a secret's strength); messages never
 * hold a secret.
 */
export function lintPolicy (data: Data, resolved: Data = data): LintFinding[] {
  const findings: LintFinding[] = []
  const add = (severity: LintFinding['severity'], rule: string, pointer: string, message: string): void => {
    findings.push({ stage: 'lint', severity, rule, pointer, message })
  }
  for (const { pointer, value } of secretValues(data)) {
    if (isInlineSecret(pointer, value)) add('error', 'inline-secret', pointer, 'a secret is written here; reference it instead, as env:NAME or file:path')
  }
  const methods = Object.entries(((resolved.authn as Data | undefined)?.methods ?? {}) as Record<string, Data>)
  for (const [name, method] of methods) {
    if (method.type !== 'jwt') continue
    const at = `/authn/methods/${pointerToken(name)}`
    const audience = method.audience
    if (audience === undefined || audience === '' || (Array.isArray(audience) && audience.length === 0)) {
      add('error', 'jwt-audience', at, 'a JWT method needs an audience (aud) that names this API')
    }
    for (const [i, key] of ((method.keys ?? []) as Data[]).entries()) {
      const minimum = Math.max(0, ...((key.algorithms ?? []) as string[]).map((alg) => HMAC_MIN_BYTES[alg] ?? 0))
      // A reference left unresolved (no resolved document given) is not the secret: it is not measured.
      if (minimum > 0 && typeof key.key === 'string' && !isSecretReference(key.key) && Buffer.byteLength(key.key) < minimum) {
        add('error', 'hmac-secret-length', `${at}/keys/${i}/key`, `the HMAC secret must be at least ${minimum} bytes for its algorithms`)
      }
    }
  }
  const upstreams = (resolved.upstreams ?? []) as Data[]
  if (resolved.authn === undefined) {
    for (const [i, upstream] of upstreams.entries()) {
      if (upstream.public !== true) add('error', 'unauthenticated-upstream', `/upstreams/${i}`, 'nothing authenticates requests to this upstream: add an authn section, or mark it public: true')
    }
  }
  const authz = resolved.authz as Data | undefined
  if (authz === undefined) {
    if (resolved.authn !== undefined && upstreams.some((upstream) => upstream.public !== true)) {
      add('warning', 'no-authz', '', 'there is no authz section: every authenticated principal may call every route')
    }
  } else if (authz.defaultRule === false) {
    add('error', 'authz-fail-open', '/authz/defaultRule', 'defaultRule: false makes every route without a rule of its own public')
  } else if (typeof authz.defaultRule === 'object' && authz.defaultRule !== null && Object.keys(authz.defaultRule).length === 0) {
    add('warning', 'authz-fail-open', '/authz/defaultRule', 'an empty defaultRule lets any authenticated principal call every route without a rule of its own')
  }
  for (const section of ['ipRules', 'mtls', 'ipRateLimit', 'authn', 'rateLimit', 'authz']) {
    if ((resolved[section] as Data | undefined)?.mode === 'report') add('warning', 'report-mode', `/${section}/mode`, `${section} only reports what it would deny`)
  }
  return findings
}

function isInlineSecret (pointer: string, value: unknown): boolean {
  if (isSecretReference(value)) return false
  // Hashes of API keys and passwords are not secrets themselves: they may be written out.
  if (pointer.endsWith('/hash') || pointer.endsWith('/passwordHash')) return false
  if (pointer.endsWith('/url')) return typeof value === 'string' && URL.canParse(value) && new URL(value).password !== ''
  if (pointer.endsWith('/key')) {
    // A public key is no secret; an HMAC secret, or a symmetric or private JWK, is.
    if (typeof value === 'object' && value !== null) return 'k' in value || 'd' in value
    return typeof value === 'string' && !/^-----BEGIN (PUBLIC KEY|CERTIFICATE|RSA PUBLIC KEY)-----/.test(value.trim())
  }
  return typeof value === 'string'
}
