import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { compileClientIp, type ClientIpOptions, type ClientIpResolver } from './client-ip.js'
import type { Decision } from './decisions.js'
import { checkKnownKeys, invalidOption } from './options.js'
import { pathOptionsOf, type PathOptions } from './path.js'
import { kPrincipal, principalGetter, type Principal } from './principal.js'
import { createProblemHandlers, DEFAULT_PROBLEM_TYPE_BASE } from './problem.js'
import type { PolicySnapshot, SnapshotSource } from './snapshot.js'

export interface CoreOptions extends ClientIpOptions {
  /**
   * Source of the active policy snapshot, usually a `SnapshotHolder`. Each request pins
   * `snapshot.current` in its first `onRequest` hook and reads that one snapshot until it ends.
   */
  snapshot?: SnapshotSource
  /**
   * Answer every rejection, including unknown routes, with `application/problem+json`
   * (RFC 9457). Turn off to keep an error handler of your own.
   * @default true
   */
  problemDetails?: boolean
  /**
   * Prefix of the problem `type` URI; the error code is appended.
   * @default 'urn:portcullis:problem:'
   * @example 'https://docs.example.com/errors#'
   */
  problemTypeBase?: string
}

/** What the other Portcullis plugins read from core, as `app.portcullisCore`. */
export interface CoreContext {
  readonly pathOptions: PathOptions
  readonly snapshot: SnapshotSource | null
  readonly resolveClientIp: ClientIpResolver
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by authentication only; `null` until then. Read-only: see `setPrincipal`. */
    readonly principal: Principal | null
    /** The client address, from the socket or, behind trusted proxies only, the forwarded chain. */
    clientIp: string
    /** The policy snapshot this request pinned when it arrived; `null` without one. */
    policySnapshot: PolicySnapshot | null
    /** Decisions recorded so far; `null` until the first. Use `recordDecision` and `decisionsOf`. */
    decisions: Decision[] | null
    [kPrincipal]: Principal | null
  }
  interface FastifyInstance {
    portcullisCore: CoreContext
  }
}

const OPTION_KEYS = ['trustedProxies', 'forwardedHeader', 'snapshot', 'problemDetails', 'problemTypeBase']

// Async, so that a bad option rejects app.ready() instead of escaping as an exception.
const plugin: FastifyPluginAsync<CoreOptions> = async (app, options) => {
  checkKnownKeys(options, OPTION_KEYS, 'core')
  const snapshot = options.snapshot ?? null
  // Duck-typed rather than instanceof: the ESM and CommonJS builds each have their own class.
  if (snapshot !== null && typeof snapshot.current?.version !== 'string') {
    throw invalidOption('core.snapshot', 'a SnapshotHolder (an object whose current is a snapshot with a version)', snapshot)
  }
  const problemDetails = options.problemDetails ?? true
  if (typeof problemDetails !== 'boolean') throw invalidOption('core.problemDetails', 'a boolean', problemDetails)
  const typeBase = options.problemTypeBase ?? DEFAULT_PROBLEM_TYPE_BASE
  if (typeof typeBase !== 'string' || !/^[a-z][a-z0-9+.-]*:/i.test(typeBase)) {
    throw invalidOption('core.problemTypeBase', 'an absolute URI prefix such as "https://docs.example.com/errors#"', typeBase)
  }
  const resolveClientIp = compileClientIp(options, 'core')

  app.decorate('portcullisCore', Object.freeze({ pathOptions: pathOptionsOf(app), snapshot, resolveClientIp }))
  // Every request property is decorated up front so requests keep one object shape.
  app.decorateRequest(kPrincipal, null)
  app.decorateRequest('principal', { getter: principalGetter })
  app.decorateRequest('clientIp', '')
  app.decorateRequest('policySnapshot', null)
  app.decorateRequest('decisions', null)

  if (snapshot === null) {
    app.addHook('onRequest', (request, _reply, next) => {
      request.clientIp = resolveClientIp(request.raw.socket.remoteAddress, request.headers)
      next()
    })
  } else {
    app.addHook('onRequest', (request, _reply, next) => {
      request.policySnapshot = snapshot.current
      request.clientIp = resolveClientIp(request.raw.socket.remoteAddress, request.headers)
      next()
    })
  }

  if (problemDetails) {
    const handlers = createProblemHandlers(typeBase)
    app.setErrorHandler(handlers.errorHandler)
    app.setNotFoundHandler(handlers.notFoundHandler)
  }
}

/** Core of the Portcullis suite: request decorations, client IP, policy snapshot pin, problem+json. */
export const portcullisCore = fp(plugin, { fastify: '5.x', name: '@portcullis/core' })
