import { createPublicKey, createSecretKey, type KeyObject, type JsonWebKey } from 'node:crypto'
import { createDecoder, createVerifier, type Algorithm, type DecodedJwt } from 'fast-jwt'
import { checkKnownKeys, checkNumber, createPrincipal, invalidOption, type Principal, type PrincipalType } from '@portcullis/core'
import { checkProviderUrl, ProviderUnreachable, remoteKeys, type RemoteKeyOptions } from './remote-keys.js'

/** One verification key, with the only algorithms it may be used with. */
export interface JwtKey {
  /** Matched against the token's `kid`. Required when there is more than one key. */
  kid?: string
  /** The algorithms this key verifies. Never taken from the token. */
  algorithms: Algorithm[]
  /** An HMAC secret (string or Buffer), or a public key as PEM or JWK. */
  key: string | Buffer | JsonWebKey
}

/** How verified claims become the principal. Claim names may be dotted paths (`realm_access.roles`). */
export interface JwtPrincipalMapping {
  /** @default 'sub' */
  idClaim?: string
  /** A fixed type, or `'auto'`: `service` when the token has no user (sub equals client_id or azp), else `user`. @default 'auto' */
  type?: PrincipalType | 'auto'
  /** Claim holding the roles, an array or a space-separated string. @default 'roles' */
  rolesClaim?: string
  /** Claim holding the scopes: `scope` (space-separated, RFC 8693/9068) or `scp` (array). @default 'scope' */
  scopesClaim?: string
  tenantClaim?: string
  planClaim?: string
}

interface JwtMethodBase {
  type: 'jwt'
  /** The exact `iss` accepted. */
  issuer: string
  /** The `aud` accepted: the token must name one of these. */
  audience: string | string[]
  /** Claims that must be present, beyond `exp` (see `requireExp`). */
  requiredClaims?: string[]
  /** @default true */
  requireExp?: boolean
  /** Refuse tokens issued (`iat`) longer ago than this many seconds. */
  maxAgeSeconds?: number
  /** Allowed clock skew, in seconds, for `exp`, `nbf` and `iat`. @default 5 */
  clockToleranceSeconds?: number
  /** Required `typ` header, such as `at+jwt` for RFC 9068 access tokens. @default none */
  typ?: string
  principal?: JwtPrincipalMapping
  /** How many verified tokens to remember (until they expire). 0 turns the cache off. @default 1000 */
  cacheSize?: number
}

/** Keys configured here. */
export interface JwtLocalKeys extends JwtMethodBase {
  keys: JwtKey[]
}

/** Keys published by the identity provider, at a JWKS URL or found by OpenID Connect discovery. */
export interface JwtRemoteKeys extends JwtMethodBase {
  /** The provider's JWKS URL; or `discovery: true` to read it from `<issuer>/.well-known/openid-configuration`. */
  jwksUri?: string
  discovery?: true
  /** The algorithms accepted from the provider's keys (asymmetric only). Never taken from the token. */
  algorithms: Algorithm[]
  remote?: RemoteKeyOptions
}

/** Exactly one of `keys`, `jwksUri` or `discovery: true`. */
export type JwtMethodOptions = JwtLocalKeys | JwtRemoteKeys

const HMAC_MIN_BYTES: Readonly<Record<string, number>> = { HS256: 32, HS384: 48, HS512: 64 }
const ALGORITHMS_BY_KEY: Readonly<Record<string, readonly string[]>> = {
  secret: ['HS256', 'HS384', 'HS512'],
  rsa: ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'],
  'rsa-pss': ['PS256', 'PS384', 'PS512'],
  'ec:prime256v1': ['ES256'],
  'ec:secp384r1': ['ES384'],
  'ec:secp521r1': ['ES512'],
  ed25519: ['EdDSA'],
  ed448: ['EdDSA']
}
// Header parameters that carry or point to a key. Verification never uses them; a token that
// sends them is trying to choose its own key, so it is refused outright.
const KEY_BEARING_HEADERS = ['jwk', 'jku', 'x5u', 'x5c']
const JWT_KEYS = ['type', 'issuer', 'audience', 'keys', 'jwksUri', 'discovery', 'algorithms', 'remote', 'requiredClaims', 'requireExp', 'maxAgeSeconds', 'clockToleranceSeconds', 'typ', 'principal', 'cacheSize']
const ASYMMETRIC = new Set(Object.entries(ALGORITHMS_BY_KEY).filter(([kind]) => kind !== 'secret').flatMap(([, algs]) => algs))

interface PreparedKey { kid: string | undefined, algorithms: ReadonlySet<string>, material: string | Buffer }

export interface JwtVerifier {
  readonly issuer: string
  /** The principal of a token verified before and still valid; `undefined` otherwise. */
  cached: (token: string) => Principal | undefined
  /** Verifies a compact JWS and maps it to a principal; rejects on any failure. */
  verify: (token: string) => Promise<Principal>
  /** The unverified `iss` of a token, to route it among several issuers; `undefined` when unreadable. */
  peekIssuer: (token: string) => string | undefined
}

/** Checks the options and compiles a verifier, once, at load time. */
export function compileJwt (options: JwtMethodOptions, path: string): JwtVerifier {
  checkKnownKeys(options, JWT_KEYS, path)
  if (typeof options.issuer !== 'string' || options.issuer === '') throw invalidOption(`${path}.issuer`, 'the exact issuer (iss) to accept', options.issuer)
  const audience = typeof options.audience === 'string' ? [options.audience] : options.audience
  if (!Array.isArray(audience) || audience.length === 0 || !audience.every((a) => typeof a === 'string' && a !== '')) {
    throw invalidOption(`${path}.audience`, 'the audience (aud) to accept: a string or a non-empty list of strings', options.audience)
  }
  const resolveKey = keySource(options, path)
  const tolerance = seconds(options.clockToleranceSeconds, 5, `${path}.clockToleranceSeconds`)
  const maxAge = options.maxAgeSeconds === undefined ? undefined : seconds(options.maxAgeSeconds, 0, `${path}.maxAgeSeconds`)
  const cacheSize = options.cacheSize ?? 1000
  if (!Number.isInteger(cacheSize) || cacheSize < 0) throw invalidOption(`${path}.cacheSize`, 'a whole number, 0 or more', cacheSize)
  const requiredClaims = [...(options.requireExp === false ? [] : ['exp']), ...(options.requiredClaims ?? [])]
  const mapping = principalMapping(options.principal, `${path}.principal`)
  if (options.typ !== undefined && (typeof options.typ !== 'string' || options.typ === '')) throw invalidOption(`${path}.typ`, 'a media type such as "at+jwt"', options.typ)

  const verifier = createVerifier({
    key: async (decoded: DecodedJwt) => {
      const header = decoded.header as Record<string, unknown>
      if (KEY_BEARING_HEADERS.some((name) => name in header)) throw new Error('key-bearing header')
      return await resolveKey.key(header.alg, header.kid)
    },
    algorithms: resolveKey.algorithms,
    allowedIss: options.issuer,
    allowedAud: audience,
    // fast-jwt checks iss and aud only when present: a token without them must not pass.
    requiredClaims: ['iss', 'aud', ...requiredClaims, mapping.idClaim],
    clockTolerance: tolerance * 1000,
    ...(maxAge === undefined ? {} : { maxAge: maxAge * 1000 }),
    ...(options.typ === undefined ? {} : { checkTyp: options.typ }),
    allowedCritHeaders: [],
    // Verified tokens are remembered below, with their principal, so fast-jwt keeps none.
    cache: false,
    complete: false
  })
  const decodeIssuer = createDecoder({ complete: false })
  // Verified tokens and their principals, until the token expires (or reaches maxAge). On the hot
  // path a repeated token costs one map lookup: no decoding, no signature, no new principal. The
  // map is keyed by the end of the signature, which tells tokens apart as well as the whole token
  // and costs a sixth as much to hash; the whole token must then be the one stored. The tokens
  // are held in memory only; the map is bounded, oldest out first.
  const verified = new Map<string, { token: string, principal: Principal, until: number }>()
  return {
    issuer: options.issuer,
    cached (token) {
      const key = cacheKey(token)
      const entry = verified.get(key)
      if (entry === undefined || entry.token !== token) return undefined
      if (entry.until > Date.now()) return entry.principal
      verified.delete(key)
      return undefined
    },
    async verify (token) {
      const claims = await verifier(token) as Record<string, unknown>
      const now = Date.now()
      const { iat, exp } = claims
      if (iat !== undefined && (typeof iat !== 'number' || !Number.isFinite(iat) || iat * 1000 > now + tolerance * 1000)) throw new Error('bad iat')
      const principal = toPrincipal(claims, mapping)
      if (cacheSize > 0) {
        const ends = [now + 600_000]
        if (typeof exp === 'number') ends.push(exp * 1000 + tolerance * 1000)
        if (maxAge !== undefined && typeof iat === 'number') ends.push((iat + maxAge + tolerance) * 1000)
        const key = cacheKey(token)
        // A token whose key another holds takes its place.
        verified.delete(key)
        if (verified.size >= cacheSize) verified.delete(verified.keys().next().value as string)
        verified.set(key, { token, principal, until: Math.min(...ends) })
      }
      return principal
    },
    peekIssuer (token) {
      try {
        const iss = (decodeIssuer(token) as Record<string, unknown>).iss
        return typeof iss === 'string' ? iss : undefined
      } catch {
        return undefined
      }
    }
  }
}

// 43 characters of base64url: 256 bits of the signature (every algorithm accepted signs with at least that many).
const CACHE_KEY_CHARS = 43

function cacheKey (token: string): string {
  return token.length > CACHE_KEY_CHARS ? token.slice(-CACHE_KEY_CHARS) : token
}

interface KeySource {
  algorithms: Algorithm[]
  key: (alg: unknown, kid: unknown) => Promise<string | Buffer>
}

/** Where a method's keys come from: configured keys, a JWKS URL or discovery; exactly one. */
function keySource (options: JwtMethodOptions, path: string): KeySource {
  const remote = options as JwtRemoteKeys
  const given = ['keys' in options && options.keys !== undefined, remote.jwksUri !== undefined, remote.discovery !== undefined].filter(Boolean).length
  if (given !== 1) throw invalidOption(path, 'given exactly one of keys, jwksUri or discovery: true')
  if ('keys' in options && options.keys !== undefined) {
    if (remote.algorithms !== undefined || remote.remote !== undefined) throw invalidOption(`${path}.algorithms`, 'set per key, in keys[].algorithms')
    if (!Array.isArray(options.keys) || options.keys.length === 0) throw invalidOption(`${path}.keys`, 'a non-empty list of { kid?, algorithms, key }')
    const keys = options.keys.map((key, i) => prepareKey(key, `${path}.keys[${i}]`))
    if (keys.length > 1 && keys.some((k) => k.kid === undefined)) throw invalidOption(`${path}.keys`, 'keys that each have a kid, when there is more than one')
    const byKid = new Map(keys.map((k) => [k.kid, k]))
    return {
      algorithms: [...new Set(keys.flatMap((k) => [...k.algorithms]))] as Algorithm[],
      key: async (alg, kid) => {
        const key = keys.length === 1 && kid === undefined ? keys[0] : byKid.get(kid as string | undefined)
        if (key === undefined || !key.algorithms.has(alg as string)) throw new Error('no key for this token')
        return key.material
      }
    }
  }
  if (remote.discovery !== undefined && remote.discovery !== true) throw invalidOption(`${path}.discovery`, 'true, to find the keys through OpenID Connect discovery', remote.discovery)
  if (!Array.isArray(remote.algorithms) || remote.algorithms.length === 0 || !remote.algorithms.every((alg) => ASYMMETRIC.has(alg))) {
    throw invalidOption(`${path}.algorithms`, `a non-empty list of asymmetric algorithms for the provider's keys: ${[...ASYMMETRIC].join(', ')}`, remote.algorithms)
  }
  if (remote.discovery === true) checkProviderUrl(options.issuer, `${path}.issuer`)
  const settings = checkKnownKeys(remote.remote ?? {}, ['timeoutMs', 'cooldownSeconds', 'maxAgeSeconds'], `${path}.remote`) as RemoteKeyOptions
  const provider = remoteKeys(options.issuer, remote.jwksUri === undefined ? { discovery: true } : { jwksUri: checkProviderUrl(remote.jwksUri, `${path}.jwksUri`) }, {
    timeoutMs: positive(settings.timeoutMs, 5000, `${path}.remote.timeoutMs`),
    cooldownSeconds: seconds(settings.cooldownSeconds, 30, `${path}.remote.cooldownSeconds`),
    maxAgeSeconds: positive(settings.maxAgeSeconds, 600, `${path}.remote.maxAgeSeconds`)
  })
  const algorithms = new Set<string>(remote.algorithms)
  return {
    algorithms: remote.algorithms,
    key: async (alg, kid) => {
      if (typeof alg !== 'string' || !algorithms.has(alg) || (kid !== undefined && typeof kid !== 'string')) throw new Error('no key for this token')
      return await provider.key(alg, kid)
    }
  }
}

function positive (value: unknown, fallback: number, path: string): number {
  return checkNumber(value, fallback, path, 'a positive number', (n) => n > 0)
}

/** Whether a verification failed because the provider's keys could not be had. */
export function isProviderUnreachable (error: unknown): boolean {
  return (error as { originalError?: unknown } | undefined)?.originalError instanceof ProviderUnreachable
}

function prepareKey (input: JwtKey, path: string): PreparedKey {
  checkKnownKeys(input, ['kid', 'algorithms', 'key'], path)
  if (input.kid !== undefined && (typeof input.kid !== 'string' || input.kid === '')) throw invalidOption(`${path}.kid`, 'a non-empty string', input.kid)
  if (!Array.isArray(input.algorithms) || input.algorithms.length === 0) {
    throw invalidOption(`${path}.algorithms`, 'a non-empty list of the algorithms this key verifies, such as ["ES256"]')
  }
  // createPublicKey() would quietly derive a public key from a private one: refuse those outright.
  const isPrivate = typeof input.key === 'string' ? input.key.includes('PRIVATE KEY') : !Buffer.isBuffer(input.key) && typeof input.key === 'object' && input.key !== null && 'd' in input.key
  if (isPrivate) throw invalidOption(`${path}.key`, 'a public key: verification never needs the private one')
  let keyObject: KeyObject
  try {
    keyObject = typeof input.key === 'string' && !input.key.includes('-----BEGIN')
      ? createSecretKey(Buffer.from(input.key, 'utf8'))
      : Buffer.isBuffer(input.key)
        ? createSecretKey(input.key)
        : typeof input.key === 'string'
          ? createPublicKey(input.key)
          : createPublicKey({ key: input.key, format: 'jwk' })
  } catch {
    throw invalidOption(`${path}.key`, 'an HMAC secret, or a public key as PEM or JWK (never a private key)')
  }
  const kind = keyObject.type === 'secret'
    ? 'secret'
    : keyObject.asymmetricKeyType === 'ec' ? `ec:${(keyObject.asymmetricKeyDetails as { namedCurve: string }).namedCurve}` : String(keyObject.asymmetricKeyType)
  const allowed = ALGORITHMS_BY_KEY[kind] ?? []
  for (const alg of input.algorithms) {
    if (!allowed.includes(alg)) throw invalidOption(`${path}.algorithms`, `algorithms this ${kind} key can verify: ${allowed.join(', ') || 'none'}`, alg)
    const minimum = HMAC_MIN_BYTES[alg]
    if (minimum !== undefined && (keyObject.symmetricKeySize as number) < minimum) {
      throw invalidOption(`${path}.key`, `an HMAC secret of at least ${minimum} bytes for ${alg} (RFC 7518 §3.2)`)
    }
  }
  const material = keyObject.type === 'secret' ? keyObject.export() : keyObject.export({ type: 'spki', format: 'pem' }).toString()
  return { kid: input.kid, algorithms: new Set(input.algorithms), material }
}

function seconds (value: unknown, fallback: number, path: string): number {
  return checkNumber(value, fallback, path, 'a number of seconds, 0 or more', (n) => n >= 0)
}

export type Mapping = Required<Pick<JwtPrincipalMapping, 'idClaim' | 'type' | 'rolesClaim' | 'scopesClaim'>> & Pick<JwtPrincipalMapping, 'tenantClaim' | 'planClaim'>

export function principalMapping (input: JwtPrincipalMapping | undefined, path: string): Mapping {
  const mapping = checkKnownKeys(input ?? {}, ['idClaim', 'type', 'rolesClaim', 'scopesClaim', 'tenantClaim', 'planClaim'], path) as JwtPrincipalMapping
  const type = mapping.type ?? 'auto'
  if (!['auto', 'user', 'service'].includes(type)) throw invalidOption(`${path}.type`, 'one of auto, user, service', type)
  return { idClaim: mapping.idClaim ?? 'sub', type, rolesClaim: mapping.rolesClaim ?? 'roles', scopesClaim: mapping.scopesClaim ?? 'scope', tenantClaim: mapping.tenantClaim, planClaim: mapping.planClaim }
}

function claim (claims: Record<string, unknown>, path: string): unknown {
  let value: unknown = claims
  for (const part of path.split('.')) {
    if (typeof value !== 'object' || value === null || !Object.hasOwn(value, part)) return undefined
    value = (value as Record<string, unknown>)[part]
  }
  return value
}

function list (value: unknown): string[] {
  if (typeof value === 'string') return value.split(' ').filter((s) => s !== '')
  return Array.isArray(value) ? value.filter((s): s is string => typeof s === 'string') : []
}

function text (value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined
}

/** Maps verified claims (of a token, or an introspection answer) to a principal. */
export function toPrincipal (claims: Record<string, unknown>, mapping: Mapping, method = 'jwt', fallbackId?: string): Principal {
  const id = text(claim(claims, mapping.idClaim)) ?? fallbackId
  if (id === undefined) throw new Error('no subject')
  const client = text(claims.client_id) ?? text(claims.azp)
  const type = mapping.type === 'auto' ? (client !== undefined && client === id ? 'service' : 'user') : mapping.type
  const tenant = mapping.tenantClaim === undefined ? undefined : text(claim(claims, mapping.tenantClaim))
  const plan = mapping.planClaim === undefined ? undefined : text(claim(claims, mapping.planClaim))
  const jti = text(claims.jti)
  return createPrincipal({
    id,
    type,
    method,
    roles: list(claim(claims, mapping.rolesClaim)),
    scopes: list(claim(claims, mapping.scopesClaim)),
    claims,
    tenant,
    plan,
    credentialId: jti
  })
}
