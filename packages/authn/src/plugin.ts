import { timingSafeEqual } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import {
  claimChainStep, ANONYMOUS, checkKnownKeys, checkMode, checkRealm, deny, invalidOption, prepareDecision, recordPrepared, routeConfigOf, setPrincipal,
  withHeaders, type Mode, type PortcullisError, type PreparedDecision, type Principal
} from '@portcullis/core'
import { parseAuthorization } from './authorization.js'
import { AmbiguousCredentials, MissingCredentials, RevocationUnavailable, StoreUnavailable } from './errors.js'
import { revocationKey, type RevocationStore } from './revocation.js'
import { compileMethod, RETRY_LATER, type Method, type MethodOptions } from './methods.js'

export const PLUGIN_NAME = '@portcullis/authn'

/** What a route requires. `false` turns authentication off for the route. */
export type RouteAuthn = false | {
  /** Names of configured methods the route accepts. @default every configured method */
  methods?: string[]
  /** `any`: one accepted credential is enough; `all`: every listed method must succeed. @default 'any' */
  require?: 'any' | 'all'
  /** With no credentials at all, go on as the anonymous principal instead of answering 401. @default false */
  anonymous?: boolean
  /** `report` records what would be refused and lets the request through. @default the plugin's mode */
  mode?: Mode
}

export interface AuthnOptions {
  /** Named methods, such as `{ partners: { type: 'api-key', … }, staff: { type: 'jwt', … } }`. */
  methods: Record<string, MethodOptions>
  /** The realm in `WWW-Authenticate` challenges. @default 'api' */
  realm?: string
  /** @default 'enforce' */
  mode?: Mode
  /**
   * Where revoked credentials are looked up after they verify: JWTs by `jti`, API keys by id
   * (see `revocationKey()`). Redis-backed for a fleet. @default none
   */
  revocation?: RevocationStore
  /** What routes without `config.authn` require. @default { require: 'any' } with every method */
  defaults?: Exclude<RouteAuthn, false>
  /**
   * Require `defaults` on unknown paths too, so an anonymous client gets 401 rather than 404 and
   * cannot map which routes exist. Off by default: like other gateways, no route, no credentials.
   * @default false
   */
  authenticateNotFound?: boolean
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Authentication for this route (`@portcullis/authn`); `false` turns it off. */
    authn?: RouteAuthn
  }
}

interface Policy {
  methods: readonly Method[]
  all: boolean
  anonymous: boolean
  mode: Mode
  /** `WWW-Authenticate` of a 401 for missing credentials: one challenge per accepted method. */
  challenges: string | string[]
}

const kPolicy = Symbol('portcullis.authn.policy')
type WithPolicy = Record<typeof kPolicy, Policy | null | undefined>

const plugin: FastifyPluginAsync<AuthnOptions> = async (app, options) => {
  checkKnownKeys(options, ['methods', 'realm', 'mode', 'defaults', 'revocation', 'authenticateNotFound'], 'authn')
  claimChainStep(app, { step: 5, name: PLUGIN_NAME, hooks: ['onRequest'] })
  const authenticateNotFound = options.authenticateNotFound ?? false
  if (typeof authenticateNotFound !== 'boolean') throw invalidOption('authn.authenticateNotFound', 'a boolean', authenticateNotFound)
  const revocation = options.revocation ?? null
  if (revocation !== null && (typeof revocation.isRevoked !== 'function' || typeof revocation.revoke !== 'function')) {
    throw invalidOption('authn.revocation', 'a revocation store with revoke() and isRevoked(), such as a RedisRevocationStore')
  }
  const realm = checkRealm(options.realm ?? 'api', 'authn.realm')
  const mode = checkMode(options.mode, 'authn.mode')
  const entries = Object.entries(checkKnownKeys(options.methods, Object.keys(options.methods ?? {}), 'authn.methods'))
  if (entries.length === 0) throw invalidOption('authn.methods', 'at least one method')
  const methods = new Map<string, Method>()
  for (const [name, method] of entries) methods.set(name, await compileMethod(name, method as MethodOptions, realm))

  const compile = (route: RouteAuthn | undefined, path: string): Policy | null => {
    if (route === false) return null
    const spec = checkKnownKeys(route ?? {}, ['methods', 'require', 'anonymous', 'mode'], path) as Exclude<RouteAuthn, false>
    const names = spec.methods ?? [...methods.keys()]
    if (!Array.isArray(names) || names.length === 0) throw invalidOption(`${path}.methods`, `a non-empty list of: ${[...methods.keys()].join(', ')}`, names)
    const chosen = names.map((name) => {
      const method = methods.get(name)
      if (method === undefined) throw invalidOption(`${path}.methods`, `names of configured methods: ${[...methods.keys()].join(', ')}`, name)
      return method
    })
    const require = spec.require ?? 'any'
    if (require !== 'any' && require !== 'all') throw invalidOption(`${path}.require`, 'any or all', require)
    if (spec.anonymous !== undefined && typeof spec.anonymous !== 'boolean') throw invalidOption(`${path}.anonymous`, 'a boolean', spec.anonymous)
    return {
      methods: chosen,
      all: require === 'all',
      anonymous: spec.anonymous ?? false,
      mode: spec.mode === undefined ? mode : checkMode(spec.mode, `${path}.mode`),
      challenges: oneOrMany([...new Set(chosen.map((m) => m.challenge))])
    }
  }
  const defaults = compile(options.defaults, 'authn.defaults') as Policy

  app.addHook('onRoute', (route) => {
    const config = (route.config ?? {}) as { authn?: RouteAuthn }
    const compiled = config.authn === undefined ? defaults : compile(config.authn, `route ${route.method} ${route.url} config.authn`)
    route.config = Object.assign({ ...config }, { [kPolicy]: compiled })
  })

  // One allow per method and kind of principal, made on first use. Methods are a handful of
  // names fixed in code (jwt, api-key, basic, …), so these maps stay small.
  const prepared = { anonymous: new Map<string, PreparedDecision>(), known: new Map<string, PreparedDecision>() }
  const allowed = ({ type, method }: Principal): PreparedDecision => {
    const anonymous = type === 'anonymous'
    const byMethod = anonymous ? prepared.anonymous : prepared.known
    let decision = byMethod.get(method)
    if (decision === undefined) {
      decision = prepareDecision({ plugin: PLUGIN_NAME, outcome: 'allow', reason: anonymous ? 'PORTCULLIS_AUTHN_ANONYMOUS' : 'PORTCULLIS_AUTHN_OK', rule: method })
      byMethod.set(method, decision)
    }
    return decision
  }

  // What a refusal does: the challenge goes with a 401, and the denial is recorded; in enforce
  // mode it is thrown, for Fastify's error handler, in report mode the request goes on.
  const refused = (request: FastifyRequest, policy: Policy, err: unknown, done: (err?: Error) => void): void => {
    const error = err as PortcullisError
    if (error.statusCode === 401 && error.headers === undefined) error.headers = { 'www-authenticate': policy.challenges }
    request.log.info({ code: error.code }, 'authentication refused')
    try {
      deny(request, policy.mode, PLUGIN_NAME, error)
    } catch (denied) {
      return done(denied as Error)
    }
    done()
  }
  // Every method makes its principals frozen and whole: setting one cannot fail.
  const accepted = (request: FastifyRequest, principal: Principal, done: (err?: Error) => void): void => {
    setPrincipal(request, principal)
    recordPrepared(request, allowed(principal))
    done()
  }

  // A callback hook: a credential verified before is answered at once, without a promise.
  app.addHook('onRequest', (request, _reply, done) => {
    if (request.is404 && !authenticateNotFound) return done()
    const compiled = (routeConfigOf(request) as unknown as WithPolicy)[kPolicy]
    const policy = compiled === undefined ? defaults : compiled
    if (policy === null) return done()
    let result: Principal | Promise<Principal>
    try {
      result = authenticate(request, policy, revocation)
    } catch (err) {
      return refused(request, policy, err, done)
    }
    if (result instanceof Promise) result.then((principal) => { accepted(request, principal, done) }, (err) => { refused(request, policy, err, done) })
    else accepted(request, result, done)
  })
}

function oneOrMany (values: string[]): string | string[] {
  return values.length === 1 ? values[0] as string : values
}

// The principal of the request's credentials: at once when nothing needs waiting for (a
// credential verified before, no revocation store to ask), else once verified.
function authenticate (request: FastifyRequest, policy: Policy, revocation: RevocationStore | null): Principal | Promise<Principal> {
  const authorization = parseAuthorization(request)
  if (authorization === 'duplicate') throw new AmbiguousCredentials()
  const presented: Array<[Method, string]> = []
  for (const method of policy.methods) {
    const credential = method.find(request, authorization)
    if (credential !== undefined) presented.push([method, credential])
  }
  if (policy.all) {
    if (presented.length < policy.methods.length) throw new MissingCredentials()
    return Promise.all(presented.map((one) => verify(request, one, revocation))).then((principals) => principals[0] as Principal)
  }
  if (presented.length === 0) {
    // An identity set before authn (a client certificate, by @portcullis/mtls) is kept.
    if (policy.anonymous) return request.principal ?? ANONYMOUS
    throw new MissingCredentials()
  }
  const chosen = choose(presented)
  const [method, credential] = chosen
  const known = revocation === null ? method.known?.(credential) : undefined
  if (known === undefined) return verify(request, chosen, revocation)
  if (!boundToConnection(known, request)) throw method.refuse()
  return known
}

async function verify (request: FastifyRequest, [method, credential]: [Method, string], revocation: RevocationStore | null): Promise<Principal> {
  let principal: Principal
  try {
    principal = await method.verify(credential)
  } catch (err) {
    if (typeof (err as { statusCode?: unknown }).statusCode === 'number') throw err
    // Anything else is a key store that failed (Redis down or slow): fail closed, honestly.
    request.log.warn({ err }, 'credential store unavailable')
    throw withHeaders(new StoreUnavailable(), RETRY_LATER)
  }
  if (!boundToConnection(principal, request)) throw method.refuse()
  const key = revocation === null ? undefined : revocationKey(principal)
  if (key === undefined) return principal
  let revoked: boolean
  try {
    revoked = await (revocation as RevocationStore).isRevoked(key)
  } catch (err) {
    // Fail closed: a credential whose revocation cannot be checked is not accepted.
    request.log.warn({ err }, 'revocation store unavailable')
    throw withHeaders(new RevocationUnavailable(), RETRY_LATER)
  }
  if (revoked) throw method.refuse()
  return principal
}

/**
 * RFC 8705 §3: a token whose `cnf` names a certificate thumbprint (`x5t#S256`) is accepted only
 * over a connection whose verified client certificate has that thumbprint. Without mtls there
 * is no verified certificate, so a bound token is refused: it fails closed.
 */
function boundToConnection (principal: Principal, request: FastifyRequest): boolean {
  const cnf = principal.claims.cnf
  if (typeof cnf !== 'object' || cnf === null || !('x5t#S256' in cnf)) return true
  const bound = (cnf as Record<string, unknown>)['x5t#S256']
  const presented = request.clientCertificate?.thumbprint
  if (typeof bound !== 'string' || presented === undefined) return false
  const left = Buffer.from(bound)
  const right = Buffer.from(presented)
  return left.length === right.length && timingSafeEqual(left, right)
}

// Several bearer methods see the same token: a JWT goes to the method of the issuer it names,
// anything else to introspection. Any other mix of credentials is ambiguous, and refused rather
// than guessed between.
function choose (presented: Array<[Method, string]>): [Method, string] {
  if (presented.length === 1) return presented[0] as [Method, string]
  const [first] = presented as [[Method, string]]
  if (!presented.every(([method, credential]) => BEARER_METHODS.has(method.type) && credential === first[1])) throw new AmbiguousCredentials()
  const match = presented.find(([method, credential]) => method.claimsIssuer?.(credential) === true) ??
    presented.find(([method]) => method.type === 'introspection')
  if (match === undefined) throw first[0].refuse()
  return match
}

const BEARER_METHODS: ReadonlySet<string> = new Set(['jwt', 'introspection'])

/**
 * Sets `request.principal` from the credentials each route accepts: API keys, Basic, JWT bearer
 * tokens. Routes follow `defaults` unless their `config.authn` says otherwise; a request without
 * acceptable credentials is refused with 401 and the challenges of the route's methods.
 */
export const portcullisAuthn = fp(plugin, { fastify: '5.x', name: PLUGIN_NAME, dependencies: ['@portcullis/core'] })
