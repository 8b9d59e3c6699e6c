import { createHash } from 'node:crypto'
import { checkKnownKeys, checkNumber, invalidOption, type Principal } from '@portcullis/core'
import { principalMapping, toPrincipal, type JwtPrincipalMapping } from './jwt.js'
import { checkProviderUrl, ProviderUnreachable } from './remote-keys.js'

/** OAuth 2.0 token introspection (RFC 7662), for opaque access tokens. */
export interface IntrospectionMethodOptions {
  type: 'introspection'
  /** The provider's introspection endpoint (`https://`; `http://` only on loopback). */
  endpoint: string
  /** The gateway's own client credentials at the provider (client_secret_basic). */
  clientId: string
  clientSecret: string
  /** When set, the answer's `iss` must equal it. */
  issuer?: string
  /** When set, the answer's `aud` must name one of these. */
  audience?: string | string[]
  /** Milliseconds to wait for the provider before answering 503. @default 2000 */
  timeoutMs?: number
  /** Seconds an answer is reused; never past the token's `exp`. 0 asks every time. @default 60 */
  cacheSeconds?: number
  /** @default 10000 */
  cacheSize?: number
  principal?: JwtPrincipalMapping
}

export interface Introspector {
  introspect: (token: string) => Promise<Principal>
}

interface Entry { principal: Principal, until: number }

const KEYS = ['type', 'endpoint', 'clientId', 'clientSecret', 'issuer', 'audience', 'timeoutMs', 'cacheSeconds', 'cacheSize', 'principal']

/** Checks the options and builds an introspection client, once, at load time. */
export function compileIntrospection (options: IntrospectionMethodOptions, path: string): Introspector {
  checkKnownKeys(options, KEYS, path)
  const endpoint = checkProviderUrl(options.endpoint, `${path}.endpoint`)
  for (const field of ['clientId', 'clientSecret'] as const) {
    // The secret's value is never printed, even when it is wrong.
    if (typeof options[field] !== 'string' || options[field] === '') throw invalidOption(`${path}.${field}`, 'a non-empty string')
  }
  const audience = options.audience === undefined ? undefined : typeof options.audience === 'string' ? [options.audience] : options.audience
  if (audience !== undefined && (!Array.isArray(audience) || audience.length === 0 || !audience.every((a) => typeof a === 'string' && a !== ''))) {
    throw invalidOption(`${path}.audience`, 'a string or a non-empty list of strings', options.audience)
  }
  if (options.issuer !== undefined && (typeof options.issuer !== 'string' || options.issuer === '')) throw invalidOption(`${path}.issuer`, 'a non-empty string', options.issuer)
  const timeoutMs = checkNumber(options.timeoutMs, 2000, `${path}.timeoutMs`, WHOLE_FROM_1, isWholeFrom(1))
  const cacheMs = checkNumber(options.cacheSeconds, 60, `${path}.cacheSeconds`, 'a whole number, 0 or more', isWholeFrom(0)) * 1000
  const cacheSize = checkNumber(options.cacheSize, 10_000, `${path}.cacheSize`, WHOLE_FROM_1, isWholeFrom(1))
  const mapping = principalMapping(options.principal, `${path}.principal`)
  const authorization = `Basic ${Buffer.from(`${encodeURIComponent(options.clientId)}:${encodeURIComponent(options.clientSecret)}`).toString('base64')}`

  const cache = new Map<string, Entry>()
  const inflight = new Map<string, Promise<Principal>>()

  const ask = async (token: string): Promise<Principal> => {
    let answer: Record<string, unknown>
    try {
      const response = await fetch(endpoint, {
        method: 'POST',
        headers: { authorization, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }),
        signal: AbortSignal.timeout(timeoutMs),
        redirect: 'error'
      })
      if (response.status !== 200) throw new Error(`status ${response.status}`)
      answer = await response.json() as Record<string, unknown>
      if (typeof answer !== 'object' || answer === null) throw new Error('not a JSON object')
    } catch (err) {
      throw new ProviderUnreachable(`introspection failed: ${(err as Error).message}`)
    }
    const now = Date.now()
    if (answer.active !== true) throw new Error('inactive')
    if (answer.exp !== undefined && (typeof answer.exp !== 'number' || answer.exp * 1000 <= now)) throw new Error('expired')
    if (answer.nbf !== undefined && (typeof answer.nbf !== 'number' || answer.nbf * 1000 > now)) throw new Error('not yet valid')
    if (options.issuer !== undefined && answer.iss !== options.issuer) throw new Error('issuer')
    if (audience !== undefined) {
      const aud = typeof answer.aud === 'string' ? [answer.aud] : Array.isArray(answer.aud) ? answer.aud : []
      if (!aud.some((a) => audience.includes(a as string))) throw new Error('audience')
    }
    const clientId = typeof answer.client_id === 'string' && answer.client_id !== '' ? answer.client_id : undefined
    let principal: Principal
    try {
      principal = toPrincipal(answer, mapping, 'introspection', clientId)
    } catch {
      throw new Error('no subject')
    }
    if (cacheMs > 0) {
      const until = Math.min(now + cacheMs, typeof answer.exp === 'number' ? answer.exp * 1000 : Infinity)
      if (cache.size >= cacheSize) cache.delete(cache.keys().next().value as string)
      cache.set(digest(token), { principal, until })
    }
    return principal
  }

  return {
    async introspect (token) {
      const key = digest(token)
      const cached = cache.get(key)
      if (cached !== undefined) {
        if (cached.until > Date.now()) return cached.principal
        cache.delete(key)
      }
      // Concurrent requests with the same token share one question to the provider.
      let pending = inflight.get(key)
      if (pending === undefined) {
        pending = ask(token).finally(() => { inflight.delete(key) })
        inflight.set(key, pending)
      }
      return await pending
    }
  }
}

// Tokens are kept in memory only as their digest.
function digest (token: string): string {
  return createHash('sha256').update(token).digest('base64url')
}

const WHOLE_FROM_1 = 'a whole number, 1 or more'
const isWholeFrom = (min: number) => (n: number): boolean => Number.isInteger(n) && n >= min
