import fp from 'fastify-plugin'
import type { FastifyPluginAsync, FastifyRequest, preHandlerHookHandler } from 'fastify'
import { claimChainStep, checkKnownKeys, checkMode, checkRealm, deny, hooksOf, invalidOption, prepareDecision, recordPrepared, routeConfigOf, withHeaders, type Mode, type PortcullisError, type PreparedDecision } from '@portcullis/core'
import { Forbidden, InsufficientScope, NoRule, OverrideRefused, Unauthenticated } from './errors.js'
import { compileRoles, type Grants, type RoleDefinition } from './roles.js'
import { compileRule, type AuthzRule, type CompiledRule } from './rules.js'
import { conditionsHook, responseHooks } from './route-checks.js'

export const PLUGIN_NAME = '@portcullis/authz'

/**
 * Headers that ask a server to act on another method or URL than the one routed. The gateway
 * decided on the request it routed; a backend that honours these would act on another one.
 */
export const OVERRIDE_HEADERS: readonly string[] = Object.freeze([
  'x-http-method-override', 'x-http-method', 'x-method-override', 'x-original-method',
  'x-original-url', 'x-rewrite-url', 'x-override-url'
])

export interface AuthzOptions {
  /** Roles with the roles they include and the permissions they grant: `{ admin: { inherits: ['user'] } }`. */
  roles?: Record<string, RoleDefinition>
  /**
   * The rule of routes without `config.authz`: `'deny'` refuses them (a new route is never
   * silently open), or a rule that applies to all of them. @default 'deny'
   */
  defaultRule?: 'deny' | AuthzRule
  /** `refuse` answers 400; `strip` removes them before the handler or upstream sees them. @default 'refuse' */
  overrideHeaders?: 'refuse' | 'strip'
  /** The realm of the 401 and insufficient_scope challenges. @default 'api' */
  realm?: string
  /** @default 'enforce' */
  mode?: Mode
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Authorization for this route (`@portcullis/authz`); `false` marks it public. */
    authz?: AuthzRule | false
  }
}

const kRule = Symbol('portcullis.authz.rule')
type Compiled = CompiledRule | 'deny' | null
/**
 * A route's compiled rule, its name for decisions (`GET /orders/:id`), the decision that records
 * it allowed a request and, when it has conditions, its step-9 check: made once per route.
 */
interface RouteRule {
  rule: Compiled
  name: string
  allowed: PreparedDecision
  preHandler?: preHandlerHookHandler
}

// The rule of the route a request matched, kept on the request by the onRequest hook so that the
// later steps need not read the route's config again.
const kRouteRule = Symbol('portcullis.authz.routeRule')
type WithRouteRule = Record<typeof kRouteRule, RouteRule | null>

function routeRuleOf (request: FastifyRequest): RouteRule | undefined {
  const kept = (request as unknown as WithRouteRule)[kRouteRule]
  // Not kept when the request was refused before it, or not found; read again if it has been
  // handed to the not-found handler since.
  if (kept === null || request.is404) return (routeConfigOf(request) as unknown as Record<typeof kRule, RouteRule | undefined>)[kRule]
  return kept
}

const plugin: FastifyPluginAsync<AuthzOptions> = async (app, options) => {
  checkKnownKeys(options, ['roles', 'defaultRule', 'overrideHeaders', 'realm', 'mode'], 'authz')
  claimChainStep(app, { step: 7, name: PLUGIN_NAME, hooks: ['onRequest', 'preHandler'] })
  const mode = checkMode(options.mode, 'authz.mode')
  const realm = checkRealm(options.realm ?? 'api', 'authz.realm')
  const overrides = options.overrideHeaders ?? 'refuse'
  if (overrides !== 'refuse' && overrides !== 'strip') throw invalidOption('authz.overrideHeaders', 'refuse or strip', overrides)
  const grantsOf = compileRoles(options.roles)
  const declared = options.roles === undefined ? null : new Set(Object.keys(options.roles))

  const compile = (rule: AuthzRule | false | 'deny', path: string): Compiled => {
    if (rule === false) return null
    if (rule === 'deny') return 'deny'
    const compiled = compileRule(rule, path)
    // With declared roles, a rule naming any other role is a typo that would deny everyone.
    const unknown = declared === null ? undefined : compiled.roles.find((r) => !declared.has(r))
    if (unknown !== undefined) throw invalidOption(path, `naming declared roles only: ${[...(declared as Set<string>)].join(', ')}`, unknown)
    return compiled
  }
  const defaultRule = compile(options.defaultRule ?? 'deny', 'authz.defaultRule')

  const grantsOfRequest = (request: FastifyRequest): Grants => request.principal === null ? NO_GRANTS : grantsOf(request.principal)
  app.addHook('onRoute', (route) => {
    const config = (route.config ?? {}) as { authz?: AuthzRule | false }
    const compiled = config.authz === undefined ? defaultRule : compile(config.authz, `route ${route.method} ${route.url} config.authz`)
    const name = `${String(route.method)} ${route.url}`
    const checks = compiled === null || compiled === 'deny' ? null : compiled.checks
    const context = { plugin: PLUGIN_NAME, mode, name, url: route.url, grantsOf: grantsOfRequest }
    const routeRule = routeRuleFor(compiled, name)
    if (checks !== null) {
      routeRule.preHandler = conditionsHook(checks, context)
      if (checks.properties?.hasRead === true) {
        // Step 11 belongs to the routes with read rules alone, as route hooks: the others never
        // pay for it.
        const { preSerialization, onSend } = responseHooks(checks.properties, context)
        route.preSerialization = [...hooksOf(route.preSerialization), preSerialization]
        route.onSend = [...hooksOf(route.onSend), onSend]
      }
    }
    route.config = Object.assign({ ...config }, { [kRule]: routeRule })
  })

  // Step 9 is an instance hook, like every other step, so that it keeps its place in the chain:
  // before the preHandler hooks of the app and of its routes, which may act on what is denied
  // here. Routes without conditions pay one lookup.
  app.addHook('preHandler', function authzStep9 (request, reply, done) {
    const hook = routeRuleOf(request)?.preHandler
    if (hook === undefined) return done()
    return hook.call(this, request, reply, done)
  })
  const challenge = { 'www-authenticate': `Bearer realm="${realm}"` }
  // Once per app, even if this plugin is registered twice in it.
  if (!app.hasRequestDecorator(kRouteRule)) app.decorateRequest(kRouteRule, null)
  app.addHook('onRequest', (request, _reply, done) => {
    try {
      if (hasOverrideHeader(request.headers)) checkOverrides(request, overrides)
      if (request.is404) return done()
      // Routes added before this plugin have no compiled rule: the default one applies.
      const routeRule = (routeConfigOf(request) as unknown as Record<typeof kRule, RouteRule | undefined>)[kRule] ??
        routeRuleFor(defaultRule, `${request.method} ${request.routeOptions.url as string}`)
      ;(request as unknown as WithRouteRule)[kRouteRule] = routeRule
      const { rule, name: routeName } = routeRule
      if (rule === null) return done()
      if (rule === 'deny') {
        deny(request, mode, PLUGIN_NAME, new NoRule(), routeName)
        return done()
      }
      const principal = request.principal
      if (principal === null || principal.type === 'anonymous') {
        // No identity on a protected route is 401, never 403: authenticating may still help.
        deny(request, mode, PLUGIN_NAME, withHeaders(new Unauthenticated(), challenge), routeName)
        return done()
      }
      const verdict = rule.evaluate(grantsOf(principal))
      if (verdict === 'allow') recordPrepared(request, routeRule.allowed)
      else if (verdict === 'scope') deny(request, mode, PLUGIN_NAME, insufficientScope(realm, rule.scopes), routeName)
      else deny(request, mode, PLUGIN_NAME, new Forbidden(), routeName)
    } catch (err) {
      return done(err as Error)
    }
    done()
  })
}

function routeRuleFor (rule: Compiled, name: string): RouteRule {
  return { rule, name, allowed: prepareDecision({ plugin: PLUGIN_NAME, outcome: 'allow', reason: 'PORTCULLIS_AUTHZ_OK', rule: name }) }
}

const NO_GRANTS: Grants = Object.freeze({ roles: new Set<string>(), scopes: new Set<string>(), permissions: new Set<string>() })

/**
 * Whether any of OVERRIDE_HEADERS (these names, which must stay the same) is present. Nearly
 * every request has none: one property read per name is the cheapest way to say so.
 */
function hasOverrideHeader (headers: FastifyRequest['headers']): boolean {
  return headers['x-http-method-override'] !== undefined || headers['x-http-method'] !== undefined ||
    headers['x-method-override'] !== undefined || headers['x-original-method'] !== undefined ||
    headers['x-original-url'] !== undefined || headers['x-rewrite-url'] !== undefined ||
    headers['x-override-url'] !== undefined
}

function checkOverrides (request: FastifyRequest, mode: 'refuse' | 'strip'): void {
  for (const name of OVERRIDE_HEADERS) {
    if (request.headers[name] === undefined) continue
    if (mode === 'refuse') throw new OverrideRefused()
    delete request.headers[name]
    delete request.raw.headers[name]
  }
}

// RFC 6750 §3.1: the scopes the resource needs, so the client can ask for a better token.
function insufficientScope (realm: string, scopes: readonly string[]): PortcullisError {
  return withHeaders(new InsufficientScope(), { 'www-authenticate': `Bearer realm="${realm}", error="insufficient_scope", scope="${scopes.join(' ')}"` })
}

/**
 * Decides, for every matched route, whether `request.principal` may go on: roles (with a
 * hierarchy), scopes and permissions, any-of and all-of. Routes without a rule are denied
 * unless `defaultRule` says otherwise; public routes are marked with `config.authz: false`.
 */
export const portcullisAuthz = fp(plugin, { fastify: '5.x', name: PLUGIN_NAME, dependencies: ['@portcullis/core'] })
