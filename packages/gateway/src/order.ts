/** Where each part of the suite runs in the request path, and why there. */
export interface ChainStep {
  /** Position in the request path, as in ARCHITECTURE.md. */
  readonly step: number
  /** The option key of the meta-plugin that configures this part. */
  readonly key: string
  /** The npm package that provides it. */
  readonly package: string
  readonly hook: 'onRequest' | 'preParsing' | 'preValidation' | 'preHandler' | 'handler' | 'onSend' | 'onResponse'
  readonly what: string
  readonly why: string
}

/**
 * The recommended order of the request path, one entry per part (several parts share step 2).
 * The meta-plugin registers the parts in this order; Fastify runs hooks of one kind in
 * registration order, so the order of registration is the order of enforcement.
 */
export const RECOMMENDED_ORDER: readonly ChainStep[] = Object.freeze([
  { step: 1, key: 'core', package: '@portcullis/core', hook: 'onRequest', what: 'client IP (trusted proxies only), policy snapshot pinned to the request, problem+json errors', why: 'everything after reads one consistent policy version and one client address' },
  { step: 2, key: 'helmet', package: '@portcullis/gateway', hook: 'onRequest', what: 'security response headers (helmet), computed at startup', why: 'set first, so that every answer has them, rejections included' },
  { step: 2, key: 'ipRules', package: '@portcullis/authz', hook: 'onRequest', what: 'IP allow/deny', why: 'cheapest rejections first' },
  { step: 2, key: 'userAgents', package: '@portcullis/gateway', hook: 'onRequest', what: 'User-Agent deny lists (known attack tools and bad bots)', why: 'a cheap rejection that needs nothing but a header' },
  { step: 2, key: 'cors', package: '@fastify/cors', hook: 'onRequest', what: 'CORS preflights answered, Access-Control-Allow-Origin set', why: 'a preflight carries no credentials, and a browser can read a later 401 or 403 only with the header' },
  { step: 2, key: 'deprecation', package: '@portcullis/gateway', hook: 'onRequest', what: 'retired routes answered 410 after their sunset (Deprecation and Sunset headers go at step 11)', why: 'a route that is gone is gone for everyone: nobody needs to be authenticated for that' },
  { step: 3, key: 'mtls', package: '@portcullis/mtls', hook: 'onRequest', what: 'client certificate to principal', why: 'TLS facts are known before any header is trusted' },
  { step: 4, key: 'ipRateLimit', package: '@portcullis/rate-limit', hook: 'onRequest', what: 'coarse rate limit by client IP', why: 'shields authentication from credential stuffing; failed logins count' },
  { step: 5, key: 'authn', package: '@portcullis/authn', hook: 'onRequest', what: 'credentials to request.principal', why: 'headers only, before the body is read' },
  { step: 6, key: 'rateLimit', package: '@portcullis/rate-limit', hook: 'onRequest', what: 'rate limits and quotas by principal and plan', why: 'needs the principal' },
  { step: 7, key: 'authz', package: '@portcullis/authz', hook: 'onRequest', what: 'roles, scopes and permissions of the matched route', why: 'refuses before the body is read' },
  { step: 8, key: 'schemaValidate', package: '@portcullis/schema-validate', hook: 'preValidation', what: 'size, content type and schema of the request', why: 'the body exists now' },
  { step: 9, key: 'conditions', package: '@portcullis/authz', hook: 'preHandler', what: 'ownership and conditions on validated params and body', why: 'uses validated values, never raw input' },
  { step: 10, key: 'upstream', package: '@portcullis/gateway', hook: 'handler', what: 'the application handler, or the proxy to an upstream', why: 'only what passed every check gets here' },
  { step: 11, key: 'masking', package: '@portcullis/gateway', hook: 'onSend', what: 'personal data masked in JSON responses; authz property filters; RateLimit, Deprecation and Sunset headers', why: 'the response exists now' },
  { step: 12, key: 'audit', package: '@portcullis/audit-log', hook: 'onResponse', what: 'one audit record with every decision and the policy version', why: 'the outcome is known' }
].map((step) => Object.freeze(step as ChainStep)))

/** The step of the part with this option key. */
export function stepOf (key: string): number {
  return (RECOMMENDED_ORDER.find((entry) => entry.key === key) as ChainStep).step
}
