import { generateKeyPairSync, createSign, createHmac, randomBytes, type KeyObject } from 'node:crypto'
import { createSigner, type JwtHeader } from 'fast-jwt'

export const ISSUER = 'https://idp.example.com/'
export const AUDIENCE = 'orders-api'

export interface Pair { publicPem: string, privateKey: KeyObject, privatePem: string }

export function pair (type: 'rsa' | 'ec' | 'ed25519', curve?: string): Pair {
  const { publicKey, privateKey } = type === 'ec'
    ? generateKeyPairSync('ec', { namedCurve: curve ?? 'P-256' })
    : type === 'ed25519'
      ? generateKeyPairSync('ed25519')
      : generateKeyPairSync('rsa', { modulusLength: 2048 })
  return {
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    privateKey,
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
  }
}

export const rsa = pair('rsa')
export const ec = pair('ec')
export const ed = pair('ed25519')
export const hmacSecret = randomBytes(32)

/** Claims of a valid access token, which each test bends one way. */
export function claims (extra: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000)
  return { iss: ISSUER, aud: AUDIENCE, sub: 'alice', iat: now, exp: now + 300, scope: 'orders:read orders:write', roles: ['user'], jti: 'tok-1', ...extra }
}

export function sign (payload: Record<string, unknown>, options: { key: string | Buffer, algorithm: string, kid?: string, header?: Record<string, unknown> }): string {
  const signer = createSigner({
    key: options.key,
    algorithm: options.algorithm as 'RS256',
    ...(options.kid === undefined ? {} : { kid: options.kid }),
    // Extra header parameters, some of them hostile: fast-jwt's header type knows only the standard ones.
    ...(options.header === undefined ? {} : { header: options.header as unknown as JwtHeader })
  })
  return signer(payload)
}

export const b64 = (value: unknown): string => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')

/** A token assembled by hand, for shapes no well-behaved signer produces. */
export function forge (header: Record<string, unknown>, payload: Record<string, unknown>, sign?: { hmac?: Buffer | string, rsa?: string }): string {
  const input = `${b64(header)}.${b64(payload)}`
  if (sign?.hmac !== undefined) return `${input}.${createHmac('sha256', sign.hmac).update(input).digest('base64url')}`
  if (sign?.rsa !== undefined) return `${input}.${createSign('RSA-SHA256').update(input).sign(sign.rsa).toString('base64url')}`
  return `${input}.`
}
