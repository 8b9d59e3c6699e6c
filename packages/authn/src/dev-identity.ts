import { createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID, type JsonWebKey } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { createSigner } from 'fast-jwt'
import { invalidOption } from '@portcullis/core'
import type { JwtLocalKeys } from './jwt.js'

/** Who a development token may be issued for: roles and space-separated scopes. */
export interface DevPrincipal {
  roles?: string[]
  scope?: string
}

/**
 * A local token issuer for development and demos: a signing key made on this machine and the
 * principals it may issue tokens for. Never for production: whoever reads the file can mint tokens.
 */
export interface DevIdentity {
  issuer: string
  audience: string
  /** The private signing key (ES256), as a JWK with its `kid`. */
  key: JsonWebKey & { kid: string }
  principals: Record<string, DevPrincipal>
}

/**
 * Reads the development identity in `file`, or creates it with a fresh ES256 key (readable by the
 * owner only) when there is none yet.
 */
export async function loadOrCreateDevIdentity (file: string, defaults: Omit<DevIdentity, 'key'>): Promise<DevIdentity> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOENT') throw err
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const identity: DevIdentity = { ...defaults, key: { ...privateKey.export({ format: 'jwk' }), kid: `dev-${randomUUID()}` } }
    await mkdir(dirname(file), { recursive: true })
    try {
      await writeFile(file, `${JSON.stringify(identity, null, 2)}\n`, { mode: 0o600, flag: 'wx' })
      return identity
    } catch {
      // Most likely another process made it first: theirs is the one (or the read says what failed).
      return await loadDevIdentity(file)
    }
  }
  return checkIdentity(JSON.parse(text) as DevIdentity, file)
}

/** Reads an existing development identity. */
export async function loadDevIdentity (file: string): Promise<DevIdentity> {
  return checkIdentity(JSON.parse(await readFile(file, 'utf8')) as DevIdentity, file)
}

/** The `jwt` method that accepts the identity's tokens: its public key only. */
export function devJwtMethod (identity: DevIdentity): JwtLocalKeys {
  const publicKey = createPublicKey(createPrivateKey({ key: identity.key, format: 'jwk' })).export({ format: 'jwk' })
  return { type: 'jwt', issuer: identity.issuer, audience: identity.audience, keys: [{ kid: identity.key.kid, algorithms: ['ES256'], key: publicKey }] }
}

/** Signs an access token for one of the identity's principals, valid for `ttlSeconds`. */
export function signDevToken (identity: DevIdentity, name: string, ttlSeconds = 3600): string {
  const principal = identity.principals[name]
  if (principal === undefined || !Object.hasOwn(identity.principals, name)) {
    throw invalidOption('principal', `one of ${Object.keys(identity.principals).join(', ')}`, name)
  }
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > 86_400) throw invalidOption('ttl', 'seconds, from 1 to 86400', ttlSeconds)
  const key = createPrivateKey({ key: identity.key, format: 'jwk' }).export({ type: 'pkcs8', format: 'pem' }).toString()
  const sign = createSigner({ key, algorithm: 'ES256', kid: identity.key.kid, expiresIn: ttlSeconds * 1000 })
  return sign({ iss: identity.issuer, aud: identity.audience, sub: name, roles: principal.roles ?? [], scope: principal.scope ?? '', jti: randomUUID() })
}

function checkIdentity (identity: DevIdentity, file: string): DevIdentity {
  if (typeof identity?.issuer !== 'string' || typeof identity.audience !== 'string' || typeof identity.key?.kid !== 'string' ||
    typeof identity.key.d !== 'string' || typeof identity.principals !== 'object' || identity.principals === null) {
    throw invalidOption(file, 'a development identity { issuer, audience, key, principals }')
  }
  return identity
}
