import { context as otelContext, trace, type Context, type Tracer } from '@opentelemetry/api'
import type {
  FastifyReply, FastifyRequest, onRequestHookHandler, onResponseHookHandler, onSendHookHandler, preHandlerHookHandler,
  preParsingHookHandler, preValidationHookHandler
} from 'fastify'
import { Registry } from 'prom-client'
import { checkKnownKeys, decisionsOf, invalidOption, routeConfigOf, type Decision } from '@portcullis/core'
import { IP_RULES_PLUGIN } from '@portcullis/authz'
import { ChainMetrics, DEFAULT_METRICS_BUCKETS, DEFAULT_METRICS_PREFIX, POLICY_UPDATE_OUTCOMES, type PolicyUpdateOutcome, type WatchedStore } from './metrics.js'
import { RECOMMENDED_ORDER, type ChainStep } from './order.js'
import { emitSpans } from './tracing.js'
import { VERSION } from './version.js'

export { metricsHandler, DEFAULT_METRICS_BUCKETS, DEFAULT_METRICS_PREFIX, POLICY_UPDATE_OUTCOMES, type PolicyUpdateOutcome, type WatchedStore } from './metrics.js'

export interface MetricsOptions {
  /** Where the metrics are registered. @default a new prom-client `Registry`, as `observer.registry` */
  registry?: Registry
  /** @default 'portcullis_' */
  prefix?: string
  /** Upper bounds, in seconds, of the stage and request histograms. @default DEFAULT_METRICS_BUCKETS */
  buckets?: number[]
}

export interface TracingOptions {
  /** @default trace.getTracer('@portcullis/gateway', version): the global tracer provider's */
  tracer?: Tracer
}

export interface ObserveOptions {
  /** Prometheus metrics (prom-client). @default false */
  metrics?: boolean | MetricsOptions
  /** OpenTelemetry spans: one per request, one per stage it went through. @default false */
  tracing?: boolean | TracingOptions
}

/** A hook that marks a stage as passed, and the kind of hook it is to be added as. */
export type StageHook =
  | { readonly hook: 'onRequest', readonly handler: onRequestHookHandler }
  | { readonly hook: 'preParsing', readonly handler: preParsingHookHandler }
  | { readonly hook: 'preValidation', readonly handler: preValidationHookHandler }
  | { readonly hook: 'preHandler', readonly handler: preHandlerHookHandler }
  | { readonly hook: 'onSend', readonly handler: onSendHookHandler }
  | { readonly hook: 'onResponse', readonly handler: onResponseHookHandler }

export interface ChainObserver {
  /** An `onRequest` hook, added before core: the very first hook of the chain. */
  start: onRequestHookHandler
  /**
   * A hook of the stage's kind, added right after the part with that key: it marks that a
   * request got through the stage. The `upstream` stage (the handler) is marked by an `onSend` hook.
   */
  after: (stage: ChainStep | string) => StageHook
  /** An `onResponse` hook, added last (after audit): turns the marks into durations, counts and spans. */
  finish: onResponseHookHandler
  /** The policy version in force: the `policy_info` gauge, and the spans of requests that pinned none. */
  setPolicyVersion: (version: string) => void
  /** Counts a policy update by its outcome. */
  policyUpdate: (outcome: PolicyUpdateOutcome) => void
  /** Reports whether a rate-limit store is reachable (`rate_limit_store_up`), read when scraped. */
  watchStore: (name: string, store: WatchedStore) => void
  /** The registry the metrics are in; `null` without metrics. */
  registry: Registry | null
}

/** The route label of requests that matched no route: one label for all, whatever their URL. */
export const UNMATCHED_ROUTE = '(unmatched)'

const STAGE_COUNT = RECOMMENDED_ORDER.length
const UPSTREAM = RECOMMENDED_ORDER.findIndex((stage) => stage.key === 'upstream')
const RATE_LIMIT_PLUGIN = '@portcullis/rate-limit'
/** Before the handler (0), the reply (1: the handler and onSend hooks), after the reply is sent (2). */
const PHASE = RECOMMENDED_ORDER.map((stage) => stage.hook === 'onResponse' ? 2 : stage.hook === 'handler' || stage.hook === 'onSend' ? 1 : 0)
/** The plugin name a stage's decisions carry. */
const PLUGIN_OF_STAGE = RECOMMENDED_ORDER.map((stage) => stage.key === 'ipRules' ? IP_RULES_PLUGIN : stage.package)
const PREFIX = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/

/** The stages one Fastify instance instruments: the `after()` calls made in order, one chain. */
class Chain {
  readonly has = new Uint8Array(STAGE_COUNT)
  last = -1

  /** The first check (a stage before the handler) of this chain after `index`; -1 when none. */
  nextCheck (index: number): number {
    for (let i = index + 1; i < STAGE_COUNT; i++) if (this.has[i] === 1 && PHASE[i] === 0) return i
    return -1
  }
}

/** A request's marks: when it started, and when it got through each stage (0: not through). */
class Marks {
  readonly start: number
  /** When Fastify took the request up; `reply.elapsedTime` counts from here. */
  readonly origin: number
  readonly parent: Context | null
  // A plain array of numbers: cheaper to make than a typed array, and as compact.
  readonly at: number[] = new Array<number>(STAGE_COUNT).fill(0)
  chain: Chain | null = null
  /** The last check the request got through; -1 before core. */
  last = -1
  constructor (start: number, origin: number, parent: Context | null) {
    this.start = start
    this.origin = origin
    this.parent = parent
  }
}

/**
 * What `finish` makes of a request's marks: the stages it went through, each with its start and
 * end, and the stage that answered it. One, reused: `finish` runs to its end without yielding.
 */
export class Timeline {
  count = 0
  readonly stages = new Int8Array(STAGE_COUNT)
  readonly from = new Float64Array(STAGE_COUNT)
  readonly to = new Float64Array(STAGE_COUNT)
  /** The stage that answered: the rejecting one, the first that answered early, or `upstream`. */
  answered = UPSTREAM
  rejected = false
  denial: Decision | null = null
  start = 0
  end = 0

  push (stage: number, from: number, to: number): void {
    this.stages[this.count] = stage
    this.from[this.count] = from
    this.to[this.count] = Math.max(from, to)
    this.count++
  }
}

const timeline = new Timeline()

/** The stage a denial came from: the first stage after `last` run by the plugin that denied. */
function stageOfDenial (plugin: string, last: number, chain: Chain | null): number {
  let first = -1
  for (let i = last + 1; i < STAGE_COUNT; i++) {
    if (plugin !== PLUGIN_OF_STAGE[i]) continue
    // A plugin may run at two stages (rate limits by address and by principal): the one this chain has.
    if (chain === null || chain.has[i] === 1) return i
    if (first === -1) first = i
  }
  return first
}

function lastDenial (decisions: readonly Decision[]): Decision | null {
  for (let i = decisions.length - 1; i >= 0; i--) {
    const decision = decisions[i] as Decision
    if (decision.outcome === 'deny') return decision
  }
  return null
}

function settle (marks: Marks, decisions: readonly Decision[], status: number, sent: number, now: number): Timeline {
  const t = timeline
  t.count = 0
  t.start = marks.start
  t.end = now
  const denial = t.denial = lastDenial(decisions)
  let answered = denial === null ? -1 : stageOfDenial(denial.plugin, marks.last, marks.chain)
  if (answered === -1) answered = marks.chain === null ? 0 : marks.chain.nextCheck(marks.last)
  if (answered === -1) answered = UPSTREAM
  t.answered = answered
  // A check that answers with an error rejected the request; the handler failed only with a 5xx.
  t.rejected = denial !== null || status >= (answered === UPSTREAM ? 500 : 400)
  const at = marks.at
  let from = marks.start
  let done = false
  for (let i = 0; i < STAGE_COUNT; i++) {
    const mark = at[i] as number
    if (mark === 0 || PHASE[i] === 2) continue
    // A mark of the reply (onSend) after the answering stage ends it: the two cannot be told apart.
    if (!done && answered <= i) {
      t.push(answered, from, mark)
      done = true
    } else {
      t.push(i, from, mark)
    }
    from = mark
  }
  // The answering stage ends when the reply is sent.
  if (!done) t.push(answered, from, sent)
  from = sent
  for (let i = 0; i < STAGE_COUNT; i++) {
    const mark = at[i] as number
    if (mark === 0 || PHASE[i] !== 2) continue
    t.push(i, from, mark)
    from = mark
  }
  return t
}

type Holder = Record<symbol, Marks | undefined>

function stageIndex (stage: unknown): number {
  const key = typeof stage === 'string' ? stage : (stage as ChainStep | null)?.key
  const index = RECOMMENDED_ORDER.findIndex((step) => step.key === key)
  if (index === -1) throw invalidOption('observe.after(stage)', `a stage of RECOMMENDED_ORDER: ${RECOMMENDED_ORDER.map((s) => s.key).join(', ')}`, stage)
  return index
}

function checkMetrics (value: unknown): ChainMetrics | null {
  if (value === undefined || value === false) return null
  if (value !== true && (typeof value !== 'object' || value === null || Array.isArray(value))) {
    throw invalidOption('observe.metrics', 'true, false or an object such as { prefix: "portcullis_" }', value)
  }
  const options = value === true ? {} : checkKnownKeys(value, ['registry', 'prefix', 'buckets'], 'observe.metrics') as MetricsOptions
  const registry = options.registry ?? new Registry()
  if (typeof registry.registerMetric !== 'function' || typeof registry.getSingleMetric !== 'function') {
    throw invalidOption('observe.metrics.registry', 'a prom-client Registry', registry)
  }
  const prefix = options.prefix ?? DEFAULT_METRICS_PREFIX
  if (typeof prefix !== 'string' || (prefix !== '' && !PREFIX.test(prefix))) {
    throw invalidOption('observe.metrics.prefix', 'a metric name prefix such as "portcullis_": letters, digits, _ and :, not starting with a digit', prefix)
  }
  const buckets = options.buckets ?? DEFAULT_METRICS_BUCKETS
  if (!Array.isArray(buckets) || buckets.length === 0 || !buckets.every((b, i) => typeof b === 'number' && Number.isFinite(b) && b > 0 && (i === 0 || b > (buckets[i - 1] as number)))) {
    throw invalidOption('observe.metrics.buckets', 'a list of increasing positive numbers of seconds, such as [0.001, 0.01, 0.1, 1]', buckets)
  }
  // Metrics are registered once per registry: a second observer would collide with the first.
  const taken = ChainMetrics.names(prefix).find((name) => registry.getSingleMetric(name) !== undefined)
  if (taken !== undefined) {
    throw invalidOption('observe.metrics.prefix', `a prefix of no metric the registry holds already (it has ${taken}: create one observer and share it, or use another prefix or registry)`, prefix)
  }
  return new ChainMetrics(registry, prefix, Object.freeze([...buckets]))
}

function checkTracing (value: unknown): Tracer | null {
  if (value === undefined || value === false) return null
  if (value !== true && (typeof value !== 'object' || value === null || Array.isArray(value))) {
    throw invalidOption('observe.tracing', 'true, false or an object such as { tracer }', value)
  }
  const options = value === true ? {} : checkKnownKeys(value, ['tracer'], 'observe.tracing') as TracingOptions
  const tracer = options.tracer ?? trace.getTracer('@portcullis/gateway', VERSION)
  if (typeof tracer.startSpan !== 'function') throw invalidOption('observe.tracing.tracer', 'an OpenTelemetry Tracer', tracer)
  return tracer
}

/**
 * Metrics and spans for the Portcullis chain: created once, shared by every Fastify instance
 * (every policy version of the standalone gateway) that reports into one registry. Returns
 * `null` when neither metrics nor tracing is asked for.
 *
 * @example
 * const observer = createChainObserver({ metrics: true, tracing: true })
 * app.addHook('onRequest', observer.start)
 * await app.register(portcullisCore)
 * const { hook, handler } = observer.after('core')
 * app.addHook(hook as 'onRequest', handler as onRequestHookHandler)
 * // … each part, then its after() hook …
 * app.addHook('onResponse', observer.finish)
 */
export function createChainObserver (options: ObserveOptions = {}): ChainObserver | null {
  checkKnownKeys(options, ['metrics', 'tracing'], 'observe')
  const metrics = checkMetrics(options.metrics)
  const tracer = checkTracing(options.tracing)
  if (metrics === null && tracer === null) return null
  const kMarks = Symbol('portcullis.observe.marks')
  let policyVersion: string | null = null
  let building: Chain | null = null

  const start: onRequestHookHandler = (request, reply, done) => {
    const now = performance.now()
    // Every request gets the property at the same point: one shape for all of them.
    ;(request as unknown as Holder)[kMarks] = new Marks(now, now - reply.elapsedTime, tracer === null ? null : otelContext.active())
    done()
  }

  const after = (stage: ChainStep | string): StageHook => {
    const index = stageIndex(stage)
    // Stages come in the recommended order: one out of it (core again) begins the next instance's chain.
    if (building === null || index <= building.last) building = new Chain()
    const chain = building
    chain.has[index] = 1
    chain.last = index
    const check = PHASE[index] === 0
    const mark = (request: FastifyRequest): void => {
      const marks = (request as unknown as Holder)[kMarks]
      if (marks === undefined) return
      marks.at[index] = performance.now()
      if (check) marks.last = index
      marks.chain ??= chain
    }
    const hook = (RECOMMENDED_ORDER[index] as ChainStep).hook
    // Hooks that are handed the payload pass it on; the handler's end is marked by an onSend hook.
    if (hook === 'handler' || hook === 'onSend' || hook === 'preParsing') {
      const handler = (request: FastifyRequest, _reply: FastifyReply, payload: unknown, done: (err: null, payload: unknown) => void): void => { mark(request); done(null, payload) }
      return { hook: hook === 'handler' ? 'onSend' : hook, handler } as StageHook
    }
    const handler = (request: FastifyRequest, _reply: FastifyReply, done: () => void): void => { mark(request); done() }
    return { hook, handler } as StageHook
  }

  const finish: onResponseHookHandler = (request, reply, done) => {
    // The end of the request's span; metrics need no clock of their own here.
    const now = tracer === null ? 0 : performance.now()
    const decisions = decisionsOf(request)
    const route = (routeConfigOf(request).url as string | undefined) ?? UNMATCHED_ROUTE
    const status = reply.statusCode
    const marks = (request as unknown as Holder)[kMarks]
    const t = marks === undefined ? null : settle(marks, decisions, status, marks.origin + reply.elapsedTime, now)
    if (metrics !== null) {
      metrics.request(route, request.method, status, reply.elapsedTime / 1000)
      countDecisions(metrics, decisions, route)
      if (t !== null) {
        for (let i = 0; i < t.count; i++) {
          metrics.stage((RECOMMENDED_ORDER[t.stages[i] as number] as ChainStep).key, ((t.to[i] as number) - (t.from[i] as number)) / 1000)
        }
      }
    }
    if (tracer !== null && t !== null) {
      const version = request.policySnapshot?.version ?? policyVersion
      emitSpans(tracer, (marks as Marks).parent as Context, t, { route: route === UNMATCHED_ROUTE ? null : route, method: request.method, status, version })
    }
    done()
  }

  return {
    start,
    after,
    finish,
    setPolicyVersion (version) {
      if (typeof version !== 'string' || version === '') throw invalidOption('observe.setPolicyVersion(version)', 'a policy version id', version)
      policyVersion = version
      metrics?.setPolicyVersion(version)
    },
    policyUpdate (outcome) {
      if (!POLICY_UPDATE_OUTCOMES.includes(outcome)) throw invalidOption('observe.policyUpdate(outcome)', POLICY_UPDATE_OUTCOMES.join(', '), outcome)
      metrics?.policyUpdate(outcome)
    },
    watchStore (name, store) {
      if (typeof name !== 'string' || name === '') throw invalidOption('observe.watchStore(name)', 'a name for the store, such as "redis"', name)
      if (typeof store !== 'object' || store === null) throw invalidOption('observe.watchStore(store)', 'a rate-limit store such as a RedisStore', store)
      metrics?.watchStore(name, store)
    },
    registry: metrics === null ? null : metrics.registry
  }
}

function countDecisions (metrics: ChainMetrics, decisions: readonly Decision[], route: string): void {
  for (const { plugin, outcome, reason, rule } of decisions) {
    metrics.decision(route, plugin, outcome, reason)
    // A refusal's rule names the limits that refused: limits are few, named in the policy.
    if (plugin !== RATE_LIMIT_PLUGIN || outcome === 'allow' || rule === undefined) continue
    for (const limit of rule.split(',')) {
      metrics.rateLimitDenial(limit, outcome)
    }
  }
}
