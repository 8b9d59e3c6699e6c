import { KeyObject, type webcrypto } from 'node:crypto'
import { createRemoteJWKSet, type JWTVerifyGetKey } from 'jose'
import { invalidOption } from '@portcullis/core'

/** How keys published by an identity provider are fetched and kept. */
export interface RemoteKeyOptions {
  /** Milliseconds to wait for the provider's discovery document or key set. @default 5000 */
  timeoutMs?: number
  /**
   * Seconds after a fetch during which a token with an unknown `kid` does not cause another one,
   * so forged `kid`s cannot turn the gateway against the provider. @default 30
   */
  cooldownSeconds?: number
  /** Seconds a fetched key set is used before it is fetched again. @default 600 */
  maxAgeSeconds?: number
}

/** Thrown when the provider cannot be reached or answers nonsense: authentication cannot be decided. */
export class ProviderUnreachable extends Error {
  override readonly name = 'ProviderUnreachable'
}

export interface RemoteKeys {
  /** The PEM of the provider's key for this `alg` and `kid`; rejects with ProviderUnreachable or a plain Error (no such key). */
  key: (alg: string, kid: string | undefined) => Promise<string>
}

const LOOPBACK = new Set(['127.0.0.1', '[::1]', 'localhost'])

/** Checks a URL of the provider: HTTPS, or HTTP on loopback only (a local provider in development). */
export function checkProviderUrl (value: unknown, path: string): URL {
  if (typeof value !== 'string' || !URL.canParse(value)) throw invalidOption(path, 'an https:// URL', value)
  const url = new URL(value)
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && LOOPBACK.has(url.hostname))) {
    throw invalidOption(path, 'an https:// URL (http:// only on loopback)', value)
  }
  if (url.username !== '' || url.password !== '' || url.hash !== '') throw invalidOption(path, 'a URL without credentials or fragment', value)
  return url
}

/**
 * Keys from a JWKS URL, or found through OpenID Connect discovery at the issuer. Discovery runs on
 * first use (a provider that is down at startup does not stop the gateway), and the document must
 * name exactly our issuer, so a document served from the wrong place cannot vouch for keys.
 */
export function remoteKeys (issuer: string, source: { jwksUri: URL } | { discovery: true }, options: Required<RemoteKeyOptions>): RemoteKeys {
  const settings = { timeoutDuration: options.timeoutMs, cooldownDuration: options.cooldownSeconds * 1000, cacheMaxAge: options.maxAgeSeconds * 1000 }
  let jwks: JWTVerifyGetKey | undefined = 'jwksUri' in source ? createRemoteJWKSet(source.jwksUri, settings) : undefined
  let discovering: Promise<JWTVerifyGetKey> | undefined
  let retryAt = 0
  const pems = new WeakMap<object, string>()

  const discover = async (): Promise<JWTVerifyGetKey> => {
    const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`
    let metadata: { issuer?: unknown, jwks_uri?: unknown }
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(options.timeoutMs), redirect: 'error', headers: { accept: 'application/json' } })
      if (response.status !== 200) throw new Error(`status ${response.status}`)
      metadata = await response.json() as typeof metadata
    } catch (err) {
      throw new ProviderUnreachable(`OpenID discovery at ${url} failed: ${(err as Error).message}`)
    }
    if (metadata.issuer !== issuer) throw new ProviderUnreachable(`OpenID discovery at ${url} names another issuer`)
    let jwksUri: URL
    try {
      jwksUri = checkProviderUrl(metadata.jwks_uri, 'jwks_uri')
    } catch {
      throw new ProviderUnreachable(`OpenID discovery at ${url} has no usable jwks_uri`)
    }
    return createRemoteJWKSet(jwksUri, settings)
  }

  return {
    async key (alg, kid) {
      if (jwks === undefined) {
        // One discovery at a time, and after a failure none for a second: an outage of the
        // provider is not met with a flood of retries.
        if (Date.now() < retryAt) throw new ProviderUnreachable('OpenID discovery failed a moment ago')
        discovering ??= discover().then((found) => found, (err: unknown) => {
          retryAt = Date.now() + 1000
          throw err
        }).finally(() => { discovering = undefined })
        jwks = await discovering
      }
      let found
      try {
        found = await jwks({ alg, ...(kid === undefined ? {} : { kid }) }, { payload: '', signature: '' })
      } catch (err) {
        const code = (err as { code?: string }).code
        if (code === 'ERR_JWKS_NO_MATCHING_KEY' || code === 'ERR_JWKS_MULTIPLE_MATCHING_KEYS') throw new Error('no key for this token')
        throw new ProviderUnreachable(`fetching the key set failed: ${(err as Error).message}`)
      }
      let pem = pems.get(found)
      if (pem === undefined) {
        pem = KeyObject.from(found as webcrypto.CryptoKey).export({ type: 'spki', format: 'pem' }).toString()
        pems.set(found, pem)
      }
      return pem
    }
  }
}
