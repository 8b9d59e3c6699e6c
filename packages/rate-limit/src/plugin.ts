import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import {
  claimChainStep, checkKnownKeys, checkMode, deny, hooksOf, invalidOption, pathOptionsOf, prepareDecision, recordPrepared, routeConfigOf,
  withHeaders, type Mode, type PortcullisError
} from '@portcullis/core'
import { RateLimited } from './errors.js'
import { compileKey, IP_STAGE_PARTS, KEY_PARTS, type CompiledKey, type KeyPart } from './keys.js'
import { compileLimit, ScopedCheck, type Check, type Lease, type Limit, type LimitOptions, type LimitState, type RateLimitStore, type Verdict } from './limits.js'
import { MemoryStore } from './memory-store.js'

export const PLUGIN_NAME = '@portcullis/rate-limit'

/** A limit and what it counts by. */
export interface RuleOptions extends LimitOptions {
  /** @default 'ip' at the ip stage, 'principal' at the principal stage */
  key?: KeyPart | KeyPart[]
}

export interface RateLimitOptions {
  /**
   * Where this registration sits in the request path. `ip` (step 4) is registered before authn
   * and counts by client IP, so that failed logins count too; `principal` (step 6) is registered
   * after authn and can count by principal, credential, plan, tenant and route.
   * @default 'principal'
   */
  stage?: 'ip' | 'principal'
  /** The limits of every route, unless its plan or its route config says otherwise. */
  limits?: RuleOptions[]
  /** Limits by plan (`request.principal.plan`), in place of `limits` for principals on that plan. Principal stage only. */
  plans?: Record<string, RuleOptions[]>
  /** @default a MemoryStore */
  store?: RateLimitStore
  /** IPv6 clients are counted by this prefix length (a client usually holds a whole /64). @default 64 */
  ipv6Prefix?: number
  /** `ietf`: `RateLimit` and `RateLimit-Policy`; `legacy` adds `X-RateLimit-Limit`, `-Remaining`, `-Reset`; `none` sends neither (429s keep `Retry-After`). @default 'ietf' */
  headers?: 'ietf' | 'legacy' | 'none'
  /** @default 'enforce' */
  mode?: Mode
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * Rate limits for this route (`@portcullis/rate-limit`): rules in place of the principal
     * stage's `limits` and `plans`, or `false` to exempt the route from every stage.
     */
    rateLimit?: RuleOptions[] | false
  }
}

interface Rule {
  limit: Limit
  /** The store key of this limit for a request: its name, then who or what it counts. */
  key: CompiledKey
  /** The `RateLimit-Policy` item, made once. */
  policy: string
  /** The start of its `RateLimit` item: `"name";r=`. */
  item: string
}

/** A set of rules applied together, with its RateLimit-Policy header value. */
interface RuleSet {
  rules: Rule[]
  policy: string
}

const kRules = Symbol('portcullis.rateLimit.rules')
// The header items of the stages that ran so far, shared by every registration in the app
// (Symbol.for: the ESM and CommonJS builds alike).
const kFields = Symbol.for('portcullis.rateLimit.fields')
interface Fields { policy: string, items: string }
type WithFields = Record<typeof kFields, Fields | null>

const OPTION_KEYS = ['stage', 'limits', 'plans', 'store', 'ipv6Prefix', 'headers', 'mode']

const plugin: FastifyPluginAsync<RateLimitOptions> = async (app, options) => {
  checkKnownKeys(options, OPTION_KEYS, 'rateLimit')
  const stage = options.stage ?? 'principal'
  if (stage !== 'ip' && stage !== 'principal') throw invalidOption('rateLimit.stage', 'ip or principal', stage)
  claimChainStep(app, { step: stage === 'ip' ? 4 : 6, name: `${PLUGIN_NAME} (stage ${stage})`, hooks: ['onRequest'] })
  const path = `rateLimit[${stage}]`
  const mode = checkMode(options.mode, `${path}.mode`)
  const headers = options.headers ?? 'ietf'
  if (headers !== 'ietf' && headers !== 'legacy' && headers !== 'none') throw invalidOption(`${path}.headers`, 'ietf, legacy or none', headers)
  const ipv6Prefix = options.ipv6Prefix ?? 64
  if (!Number.isInteger(ipv6Prefix) || ipv6Prefix < 32 || ipv6Prefix > 128) throw invalidOption(`${path}.ipv6Prefix`, 'a whole number from 32 to 128', ipv6Prefix)
  const store = options.store ?? new MemoryStore()
  if (typeof store?.consume !== 'function' || typeof store.release !== 'function') throw invalidOption(`${path}.store`, 'a MemoryStore, a RedisStore, or an object with consume() and release()', store)
  const allowedParts = stage === 'ip' ? IP_STAGE_PARTS : KEY_PARTS
  const context = { ipv6Prefix, pathOptions: pathOptionsOf(app) }

  // The names of the limits of every registration in the app, and the stage that has each.
  const stageOfName = namesOf(app)
  const compileSet = (rules: unknown, where: string): RuleSet => {
    if (!Array.isArray(rules)) throw invalidOption(where, 'a list of limits such as [{ name: "burst", limit: 60, window: "1m" }]', rules)
    const names = new Set<string>()
    const compiled = rules.map((rule: RuleOptions, i) => {
      const at = `${where}[${i}]`
      if (typeof rule !== 'object' || rule === null) throw invalidOption(at, 'a limit such as { name: "burst", limit: 60, window: "1m" }', rule)
      const { key, ...limitOptions } = rule
      const limit = compileLimit(limitOptions, at)
      // Names tell limits apart in headers, and in the store: two of one name would share a count.
      if (names.has(limit.name)) throw invalidOption(`${at}.name`, 'a name no other limit of the list has', limit.name)
      // The two stages' limits count in one store, often: one name at both would share counts
      // (an address's at the ip stage and an anonymous request's at the principal stage).
      const other = stageOfName.get(limit.name)
      if (other !== undefined && other !== stage) throw invalidOption(`${at}.name`, `a name the ${other} stage does not use too`, limit.name)
      names.add(limit.name)
      const compiled = compileKey(limit.name, key ?? (stage === 'ip' ? 'ip' : 'principal'), allowedParts, `${at}.key`, context)
      return { limit, key: compiled, policy: policyItem(limit), item: `"${limit.name}";r=` }
    })
    for (const name of names) stageOfName.set(name, stage)
    return { rules: compiled, policy: compiled.map((r) => r.policy).join(', ') }
  }

  const defaults = compileSet(options.limits ?? [], `${path}.limits`)
  if (options.plans !== undefined && stage === 'ip') throw invalidOption(`${path}.plans`, 'used at the principal stage only (there is no principal before authn)', options.plans)
  const plans = new Map<string, RuleSet>()
  if (options.plans !== undefined) {
    if (typeof options.plans !== 'object' || options.plans === null) throw invalidOption(`${path}.plans`, 'an object of plan names to lists of limits', options.plans)
    for (const [plan, rules] of Object.entries(options.plans)) plans.set(plan, compileSet(rules, `${path}.plans.${plan}`))
  }

  const allowed = prepareDecision({ plugin: PLUGIN_NAME, outcome: 'allow', reason: 'PORTCULLIS_RATE_LIMIT_OK', rule: stage })
  if (!app.hasRequestDecorator(kFields)) app.decorateRequest(kFields, null)
  // The concurrency slots a request holds from this registration's store. They are given back
  // when the response is sent, or when the client goes away first; the hooks that do it exist
  // only where a concurrency limit can apply, so that other requests never pay for them.
  const kHeld = Symbol('portcullis.rateLimit.held')
  app.decorateRequest(kHeld, null)
  const release = async (request: FastifyRequest): Promise<void> => {
    const holder = request as unknown as Record<typeof kHeld, readonly Lease[] | null>
    const leases = holder[kHeld]
    if (leases === null) return
    holder[kHeld] = null
    await store.release(leases)
  }
  const counts = (set: RuleSet): boolean => set.rules.some((rule) => rule.limit.algorithm === 'concurrency')
  if (counts(defaults) || [...plans.values()].some(counts)) {
    app.addHook('onResponse', release)
    app.addHook('onRequestAbort', release)
  }

  // Whether any route has a say (its own limits, or `false`): until one does, no request needs
  // its route's config looked up.
  let routesSay = false
  app.addHook('onRoute', (route) => {
    const config = (route.config ?? {}) as { rateLimit?: RuleOptions[] | false }
    if (config.rateLimit === undefined) return
    routesSay = true
    // Only the principal stage takes a route's own limits; either stage honours `false`.
    if (stage !== 'principal' || config.rateLimit === false) return
    const set = compileSet(config.rateLimit, `route ${String(route.method)} ${route.url} config.rateLimit`)
    route.config = Object.assign({ ...config }, { [kRules]: set })
    if (counts(set)) {
      route.onResponse = [...hooksOf(route.onResponse), release]
      route.onRequestAbort = [...hooksOf(route.onRequestAbort), release]
    }
  })

  const byPlan = (request: FastifyRequest): RuleSet => {
    const plan = request.principal?.plan
    return (plan === undefined ? undefined : plans.get(plan)) ?? defaults
  }
  const rulesFor = (request: FastifyRequest): RuleSet | null => {
    if (!routesSay) return stage === 'ip' ? defaults : byPlan(request)
    const config = routeConfigOf(request) as { rateLimit?: RuleOptions[] | false, [kRules]?: RuleSet }
    if (config.rateLimit === false) return null
    if (stage === 'ip') return defaults
    return config[kRules] ?? byPlan(request)
  }

  const settle = (request: FastifyRequest, reply: FastifyReply, set: RuleSet, verdict: Verdict, done: (err?: Error) => void): void => {
    try {
      if (verdict.leases.length > 0) (request as unknown as Record<typeof kHeld, readonly Lease[] | null>)[kHeld] = verdict.leases
      const fields = headers === 'none' ? null : setHeaders(request, reply, set, verdict, headers === 'legacy')
      if (verdict.allowed) recordPrepared(request, allowed)
      else deny(request, mode, PLUGIN_NAME, refusal(fields, verdict), refusedBy(verdict))
    } catch (err) {
      return done(err as Error)
    }
    done()
  }

  // A callback hook: with the memory store a check settles at once, and costs no promise.
  app.addHook('onRequest', (request, reply, done) => {
    const set = rulesFor(request)
    if (set === null) return done()
    const { rules } = set
    if (rules.length === 0) return done()
    const checks = new Array<Check>(rules.length)
    for (let i = 0; i < rules.length; i++) {
      const { key, limit } = rules[i] as Rule
      checks[i] = new ScopedCheck(key.scope, key.subjectOf(request), limit)
    }
    let pending: Verdict | Promise<Verdict>
    try {
      pending = store.consume(checks)
    } catch (err) {
      return done(err as Error)
    }
    if (pending instanceof Promise) pending.then((verdict) => settle(request, reply, set, verdict, done), done)
    else settle(request, reply, set, pending, done)
  })
}

// Shared by the registrations of one app (Symbol.for: the ESM and CommonJS builds alike).
const kNames = Symbol.for('portcullis.rateLimit.names')

function namesOf (app: FastifyInstance): Map<string, 'ip' | 'principal'> {
  const holder = app as unknown as Record<typeof kNames, Map<string, 'ip' | 'principal'> | undefined>
  holder[kNames] ??= new Map()
  return holder[kNames]
}

/** `"burst";q=60;w=60`: the limit's quota and window in seconds (draft-ietf-httpapi-ratelimit-headers). */
function policyItem (limit: Limit): string {
  const unit = limit.algorithm === 'concurrency' ? ';qu="concurrent-requests"' : ''
  const window = limit.algorithm === 'concurrency' ? '' : `;w=${Math.max(1, Math.ceil(limit.windowMs / 1000))}`
  return `"${limit.name}";q=${limit.limit}${unit}${window}`
}

function seconds (ms: number): number {
  return Math.max(0, Math.ceil(ms / 1000))
}

/** `"burst";r=59;t=1`: what is left of each limit and when it is whole again; a refusing limit reports when to retry. */
function rateLimitItems (rules: readonly Rule[], states: readonly LimitState[]): string {
  let items = ''
  for (let i = 0; i < states.length; i++) {
    const s = states[i] as LimitState
    if (i > 0) items += ', '
    items += (rules[i] as Rule).item + (s.retryAfterMs > 0
      ? `0;t=${Math.max(1, seconds(s.retryAfterMs))}`
      : `${s.remaining};t=${seconds(s.resetMs)}`)
  }
  return items
}

// Both stages may answer: their items go into one list, kept on the request so that the second
// stage need not read the first one's headers back.
function setHeaders (request: FastifyRequest, reply: FastifyReply, set: RuleSet, verdict: Verdict, legacy: boolean): Fields {
  const holder = request as unknown as WithFields
  const before = holder[kFields]
  const items = rateLimitItems(set.rules, verdict.states)
  const fields = before === null ? { policy: set.policy, items } : { policy: `${before.policy}, ${set.policy}`, items: `${before.items}, ${items}` }
  holder[kFields] = fields
  reply.header('ratelimit-policy', fields.policy)
  reply.header('ratelimit', fields.items)
  if (!legacy) return fields
  // The legacy headers hold one limit: the one closest to refusing.
  let tightest = verdict.states[0] as LimitState
  for (const state of verdict.states) if (state.remaining < tightest.remaining) tightest = state
  reply.header('x-ratelimit-limit', tightest.limit.limit)
  reply.header('x-ratelimit-remaining', tightest.remaining)
  reply.header('x-ratelimit-reset', seconds(tightest.retryAfterMs > 0 ? tightest.retryAfterMs : tightest.resetMs))
  return fields
}

function retryAfterSeconds (verdict: Verdict): number {
  let ms = 0
  for (const state of verdict.states) ms = Math.max(ms, state.retryAfterMs)
  return Math.max(1, seconds(ms))
}

function refusedBy (verdict: Verdict): string {
  return verdict.states.filter((s) => s.retryAfterMs > 0).map((s) => s.limit.name).join(',')
}

function refusal (fields: Fields | null, verdict: Verdict): PortcullisError {
  const protocol: Record<string, string | number> = { 'retry-after': retryAfterSeconds(verdict) }
  // The problem is sent by the error handler: the headers of every stage go with it.
  if (fields !== null) {
    protocol.ratelimit = fields.items
    protocol['ratelimit-policy'] = fields.policy
  }
  return withHeaders(new RateLimited(), protocol)
}

/**
 * Rate limits, quotas and concurrency limits on every request: register with `stage: 'ip'`
 * before authn for a coarse per-address limit, and with `stage: 'principal'` after it for limits
 * per principal, credential, plan, tenant or route.
 */
export const portcullisRateLimit = fp(plugin, { fastify: '5.x', name: PLUGIN_NAME, dependencies: ['@portcullis/core'] })
