import type { FastifyRequest } from 'fastify'
import { checkKnownKeys, createPrincipal, invalidOption, isHeaderName, withHeaders, type PortcullisError, type Principal } from '@portcullis/core'
import { MemoryApiKeyStore, verifyApiKey, type ApiKeyRecord, type ApiKeyStore } from './api-key.js'
import { isToken68, quote, type Authorization } from './authorization.js'
import { decodeBasic, hashPassword, parsePasswordHash, verifyPassword, type BasicUser } from './basic.js'
import { AmbiguousCredentials, InvalidCredentials, InvalidRequest, InvalidToken, ProviderUnavailable } from './errors.js'
import { compileJwt, isProviderUnreachable, type JwtMethodOptions } from './jwt.js'
import { compileIntrospection, type IntrospectionMethodOptions } from './introspection.js'
import { ProviderUnreachable } from './remote-keys.js'

export interface ApiKeyMethodOptions {
  type: 'api-key'
  /** Header that carries the key. @default 'x-api-key' */
  header?: string
  /** Query parameter that may carry the key instead (off by default: URLs end up in logs). */
  query?: string
  /** Where keys are looked up; or `keys`, records to hold in memory. */
  store?: ApiKeyStore
  keys?: ApiKeyRecord[]
}

export interface BasicMethodOptions {
  type: 'basic'
  users: BasicUser[]
}

export type MethodOptions = ApiKeyMethodOptions | BasicMethodOptions | JwtMethodOptions | IntrospectionMethodOptions

/** A compiled authentication method: finds its credential in a request, and verifies it. */
export interface Method {
  readonly name: string
  readonly type: MethodOptions['type']
  /** The challenge sent with a 401 that asks for this method's credentials. */
  readonly challenge: string
  /**
   * This method's credential in the request; `undefined` when not presented. Throws
   * InvalidRequest or AmbiguousCredentials when it is malformed or sent twice.
   */
  find: (request: FastifyRequest, authorization: Authorization | null) => string | undefined
  /** Verifies the credential; throws InvalidToken or InvalidCredentials, with the challenge. */
  verify: (credential: string) => Promise<Principal>
  /** The principal of a credential this method verified before and still remembers, found without waiting; else undefined. */
  known?: (credential: string) => Principal | undefined
  /** The refusal of a credential that verified but must not be accepted (revoked). */
  refuse: () => Error
  /** JWT methods: whether a token names this method's issuer (unverified), to route among issuers. */
  claimsIssuer?: (credential: string) => boolean
}

/** Compiles one named method from its options, once, at load time. */
export async function compileMethod (name: string, options: MethodOptions, realm: string): Promise<Method> {
  const path = `authn.methods.${name}`
  if (typeof options !== 'object' || options === null) throw invalidOption(path, 'an object with a type: api-key, basic or jwt', options)
  switch (options.type) {
    case 'api-key': return apiKeyMethod(name, options, realm, path)
    case 'basic': return await basicMethod(name, options, realm, path)
    case 'jwt': return jwtMethod(name, options, realm, path)
    case 'introspection': return introspectionMethod(name, options, realm, path)
    default: throw invalidOption(`${path}.type`, 'one of api-key, basic, jwt, introspection', (options as { type?: unknown }).type)
  }
}

function apiKeyMethod (name: string, options: ApiKeyMethodOptions, realm: string, path: string): Method {
  checkKnownKeys(options, ['type', 'header', 'query', 'store', 'keys'], path)
  const header = (options.header ?? 'x-api-key').toLowerCase()
  if (!isHeaderName(header) || header === 'authorization') throw invalidOption(`${path}.header`, 'a header name other than authorization', options.header)
  const query = options.query
  if (query !== undefined && (typeof query !== 'string' || query === '')) throw invalidOption(`${path}.query`, 'a query parameter name', query)
  if ((options.store === undefined) === (options.keys === undefined)) throw invalidOption(path, 'given exactly one of store or keys')
  if (options.store !== undefined && typeof options.store.find !== 'function') throw invalidOption(`${path}.store`, 'an object with find(hash)')
  const store = options.store ?? new MemoryApiKeyStore(options.keys)
  const challenge = `ApiKey realm=${quote(realm)}, header=${quote(header)}`
  const invalid = () => withHeaders(new InvalidCredentials(), { 'www-authenticate': challenge })
  return {
    name,
    type: 'api-key',
    challenge,
    find (request) {
      const fromHeader = request.headers[header]
      const fromQuery = query === undefined ? undefined : (request.query as Record<string, unknown> | undefined)?.[query]
      if (Array.isArray(fromHeader) || Array.isArray(fromQuery)) throw new AmbiguousCredentials()
      if (fromHeader !== undefined && fromQuery !== undefined) throw new AmbiguousCredentials()
      const value = fromHeader ?? fromQuery
      return typeof value === 'string' ? value : undefined
    },
    async verify (credential) {
      const verified = await verifyApiKey(store, credential)
      if (verified === null) throw invalid()
      return verified.principal
    },
    refuse: invalid
  }
}

async function basicMethod (name: string, options: BasicMethodOptions, realm: string, path: string): Promise<Method> {
  checkKnownKeys(options, ['type', 'users'], path)
  if (!Array.isArray(options.users)) throw invalidOption(`${path}.users`, 'a list of { username, passwordHash, owner? }', options.users)
  const users = new Map(options.users.map((user, i) => {
    const at = `${path}.users[${i}]`
    checkKnownKeys(user, ['username', 'passwordHash', 'owner'], at)
    if (typeof user.username !== 'string' || user.username === '' || user.username.includes(':')) {
      throw invalidOption(`${at}.username`, 'a non-empty string without ":" (RFC 7617)', user.username)
    }
    const owner = { id: user.username, type: 'user' as const, ...user.owner }
    createPrincipal({ ...owner, method: 'basic' })
    return [user.username.normalize('NFC'), { hash: parsePasswordHash(user.passwordHash, `${at}.passwordHash`), owner }]
  }))
  // Unknown users cost the same scrypt work as known ones, so timing does not tell which exist.
  const decoy = parsePasswordHash(await hashPassword('decoy'), 'decoy')
  const challenge = `Basic realm=${quote(realm)}, charset="UTF-8"`
  const invalid = () => withHeaders(new InvalidCredentials(), { 'www-authenticate': challenge })
  return {
    name,
    type: 'basic',
    challenge,
    find (_request, authorization) {
      if (authorization?.scheme !== 'basic') return undefined
      if (!isToken68(authorization.value)) throw challenged(new InvalidRequest('Basic credentials must be base64'), challenge)
      return authorization.value
    },
    async verify (credential) {
      const decoded = decodeBasic(credential)
      if (decoded === null) throw challenged(new InvalidRequest('Basic credentials must be base64 of UTF-8 user-id:password'), challenge)
      const user = users.get(decoded.username)
      const matches = await verifyPassword(decoded.password, user?.hash ?? decoy)
      if (user === undefined || !matches) throw invalid()
      return createPrincipal({ ...user.owner, method: 'basic', credentialId: decoded.username })
    },
    refuse: invalid
  }
}

/** The Bearer token of a request (RFC 6750 §2.1), for the methods that take one. */
function findBearer (request: FastifyRequest, authorization: Authorization | null, challenge: string): string | undefined {
  const inQuery = (request.query as Record<string, unknown> | undefined)?.access_token !== undefined
  const invalidRequest = `${challenge}, error="invalid_request"`
  if (authorization?.scheme !== 'bearer') {
    // RFC 6750 §2.3 tokens in the URL end up in logs and caches: refused, never used.
    if (inQuery) throw challenged(new InvalidRequest('access tokens are not accepted in the query string'), invalidRequest)
    return undefined
  }
  if (inQuery) throw challenged(new AmbiguousCredentials(), invalidRequest)
  return authorization.value
}

/**
 * The refusal for a bearer token. Fail closed, but honestly: when the provider cannot be reached
 * nothing can be decided and the client may retry (503). Otherwise which check failed stays
 * here: the client, forger or not, learns only that the token was refused.
 */
function bearerRefusal (err: unknown, invalidToken: string): PortcullisError {
  if (err instanceof ProviderUnreachable || isProviderUnreachable(err)) return withHeaders(new ProviderUnavailable(), RETRY_LATER)
  return challenged(new InvalidToken(), invalidToken)
}

/**
 * A method that takes a Bearer token (RFC 6750) and checks it with `check`. A token verified
 * before (`cached`) is answered at once; any other must first have the token68 form.
 */
function bearerMethod (name: string, type: 'jwt' | 'introspection', realm: string, check: (token: string) => Promise<Principal>, cached?: (token: string) => Principal | undefined): Method {
  const challenge = `Bearer realm=${quote(realm)}`
  const invalidToken = `${challenge}, error="invalid_token"`
  return {
    name,
    type,
    challenge,
    find: (request, authorization) => findBearer(request, authorization, challenge),
    ...(cached === undefined ? {} : { known: cached }),
    async verify (credential) {
      const known = cached?.(credential)
      if (known !== undefined) return known
      if (!isToken68(credential)) throw challenged(new InvalidRequest('a Bearer token must be a token68'), `${challenge}, error="invalid_request"`)
      try {
        return await check(credential)
      } catch (err) {
        throw bearerRefusal(err, invalidToken)
      }
    },
    refuse: () => challenged(new InvalidToken(), invalidToken)
  }
}

function jwtMethod (name: string, options: JwtMethodOptions, realm: string, path: string): Method {
  const verifier = compileJwt(options, path)
  return {
    ...bearerMethod(name, 'jwt', realm, verifier.verify, verifier.cached),
    claimsIssuer: (credential) => verifier.peekIssuer(credential) === verifier.issuer
  }
}

function introspectionMethod (name: string, options: IntrospectionMethodOptions, realm: string, path: string): Method {
  return bearerMethod(name, 'introspection', realm, compileIntrospection(options, path).introspect)
}

function challenged (error: PortcullisError, challenge: string): PortcullisError {
  return withHeaders(error, { 'www-authenticate': challenge })
}

/** For answers that mean "try again shortly": the provider or a store could not be reached. */
export const RETRY_LATER = Object.freeze({ 'retry-after': '5' })
