import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { RouteHandlerMethod } from 'fastify'
import { invalidOption } from '@portcullis/core'
import type { RateLimitStore } from '@portcullis/rate-limit'

/** @default prefix of every metric name */
export const DEFAULT_METRICS_PREFIX = 'portcullis_'

/**
 * Upper bounds, in seconds, of both histograms: from 100 µs (one check of the chain) to 10 s (a
 * slow upstream).
 */
export const DEFAULT_METRICS_BUCKETS: readonly number[] = Object.freeze([
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
])

/** A rate-limit store; a `RedisStore` is `degraded` while Redis is away, a `MemoryStore` always reachable. */
export type WatchedStore = RateLimitStore & { readonly degraded?: boolean }

export type PolicyUpdateOutcome = 'applied' | 'refused' | 'rolled-back'

export const POLICY_UPDATE_OUTCOMES: readonly PolicyUpdateOutcome[] = Object.freeze(['applied', 'refused', 'rolled-back'])

type Labels = Record<string, string>
type Tree = Map<string, unknown>

/**
 * The map under `key`, made when missing. Series are found through a map per label: label values
 * are strings made once (route patterns, reason codes) whose hashes V8 keeps, where one key
 * joined from them would be a new string to hash on every request.
 */
function branch (tree: Tree, key: string): Tree {
  let next = tree.get(key) as Tree | undefined
  if (next === undefined) {
    next = new Map()
    tree.set(key, next)
  }
  return next
}

/** One label set of a counter: counted on the hot path, handed to prom-client when scraped. */
class CounterSeries {
  readonly labels: Labels
  pending = 0
  constructor (labels: Labels) {
    this.labels = labels
  }
}

/**
 * A counter counted in plain numbers per label set; prom-client's own `inc()` hashes the labels
 * on every call, so it is called once per label set and scrape instead.
 */
class BatchedCounter {
  readonly root: Tree = new Map()
  readonly #all: CounterSeries[] = []

  constructor (name: string, help: string, labelNames: string[], registry: Registry) {
    const all = this.#all
    // eslint-disable-next-line no-new -- the registry holds it, and calls collect() when scraped
    new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect () {
        for (const series of all) {
          if (series.pending === 0) continue
          this.inc(series.labels, series.pending)
          series.pending = 0
        }
      }
    })
  }

  /** The series under `key` in `leaf`, made with `labels` the first time. */
  series (leaf: Tree, key: string, labels: Labels): CounterSeries {
    let series = leaf.get(key) as CounterSeries | undefined
    if (series === undefined) {
      series = new CounterSeries(labels)
      leaf.set(key, series)
      this.#all.push(series)
    }
    return series
  }
}

/** One label set of a histogram: a count per bucket (not cumulative), their sum and count. */
class HistogramSeries {
  readonly labels: Labels
  readonly counts: number[]
  sum = 0
  count = 0
  constructor (labels: Labels, buckets: number) {
    this.labels = labels
    this.counts = new Array<number>(buckets).fill(0)
  }
}

type HistogramData = Awaited<ReturnType<Histogram<string>['get']>>

/**
 * A prom-client histogram whose observations are aggregated here, per label set, without the
 * label hashing and allocations of `observe()` (several per request would cost microseconds).
 * The registry reads it like any histogram; `observe()` of its own is not used.
 */
class BatchedHistogram extends Histogram<string> {
  readonly root: Tree = new Map()
  readonly #all: HistogramSeries[] = []
  readonly #bounds: readonly number[]
  readonly #name: string
  readonly #help: string

  constructor (name: string, help: string, labelNames: string[], bounds: readonly number[], registry: Registry) {
    super({ name, help, labelNames, buckets: [...bounds], registers: [registry] })
    this.#bounds = bounds
    this.#name = name
    this.#help = help
  }

  series (leaf: Tree, key: string, labels: Labels): HistogramSeries {
    let series = leaf.get(key) as HistogramSeries | undefined
    if (series === undefined) {
      series = new HistogramSeries(labels, this.#bounds.length)
      leaf.set(key, series)
      this.#all.push(series)
    }
    return series
  }

  record (series: HistogramSeries, seconds: number): void {
    const bounds = this.#bounds
    let i = 0
    while (i < bounds.length && seconds > (bounds[i] as number)) i++
    if (i < bounds.length) series.counts[i] = (series.counts[i] as number) + 1
    series.sum += seconds
    series.count++
  }

  override async get (): Promise<HistogramData> {
    const bucket = `${this.#name}_bucket`
    const values: HistogramData['values'] = []
    for (const series of this.#all) {
      // Emptied by a reset, and not observed since.
      if (series.count === 0) continue
      let cumulative = 0
      for (let i = 0; i < this.#bounds.length; i++) {
        cumulative += series.counts[i] as number
        values.push({ labels: { ...series.labels, le: this.#bounds[i] as number }, value: cumulative, metricName: bucket })
      }
      values.push({ labels: { ...series.labels, le: '+Inf' }, value: series.count, metricName: bucket })
      values.push({ labels: series.labels, value: series.sum, metricName: `${this.#name}_sum` })
      values.push({ labels: series.labels, value: series.count, metricName: `${this.#name}_count` })
    }
    // As prom-client's own histograms answer: its typings declare `type` an enum, the registry writes the string.
    return { name: this.#name, help: this.#help, type: 'histogram', values, aggregator: 'sum' } as unknown as HistogramData
  }

  // The registry prefers this one to get() when it writes the text format.
  async getForPromString (): Promise<HistogramData> {
    return await this.get()
  }

  override reset (): void {
    super.reset()
    // Emptied in place: the series stay where the hot path finds them. prom-client's
    // constructor resets too, before this class's fields exist.
    if (!(#all in this)) return
    for (const series of this.#all) {
      series.counts.fill(0)
      series.sum = 0
      series.count = 0
    }
  }
}

const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx']

/** The metrics of one chain observer, in one registry. */
export class ChainMetrics {
  readonly registry: Registry
  readonly decisions: BatchedCounter
  readonly rateLimitDenials: BatchedCounter
  readonly stages: BatchedHistogram
  readonly requests: BatchedHistogram
  readonly #policy: Gauge<string>
  readonly #updates: Counter<string>
  readonly #stores = new Map<string, WatchedStore>()

  constructor (registry: Registry, prefix: string, buckets: readonly number[]) {
    this.registry = registry
    this.decisions = new BatchedCounter(`${prefix}decisions_total`, 'Decisions of the Portcullis plugins, by plugin, outcome, reason code and matched route', ['plugin', 'outcome', 'reason', 'route'], registry)
    this.rateLimitDenials = new BatchedCounter(`${prefix}rate_limit_denials_total`, 'Requests a rate limit refused (deny) or would have refused in report mode (would-deny), by limit name', ['limit', 'outcome'], registry)
    this.stages = new BatchedHistogram(`${prefix}stage_duration_seconds`, 'Time a request spent in each stage of the Portcullis chain', ['stage'], buckets, registry)
    this.requests = new BatchedHistogram(`${prefix}request_duration_seconds`, 'Requests through the Portcullis chain, from arrival to the reply sent, by matched route, method and status class', ['route', 'method', 'status_class'], buckets, registry)
    this.#policy = new Gauge({ name: `${prefix}policy_info`, help: 'The policy version in force (1); only the current version is reported', labelNames: ['version'], registers: [registry] })
    this.#updates = new Counter({ name: `${prefix}policy_updates_total`, help: 'Policy updates, by outcome', labelNames: ['outcome'], registers: [registry] })
    // Every outcome from 0, so that a rate over the first one is not missed.
    for (const outcome of POLICY_UPDATE_OUTCOMES) this.#updates.inc({ outcome }, 0)
    const stores = this.#stores
    new Gauge({ // eslint-disable-line no-new -- registered in the registry, which reads it
      name: `${prefix}rate_limit_store_up`,
      help: 'Whether the rate-limit store is reachable (1) or counting without its shared backend (0)',
      labelNames: ['store'],
      registers: [registry],
      collect () {
        for (const [name, store] of stores) this.set({ store: name }, store.degraded === true ? 0 : 1)
      }
    })
  }

  /** The names this observer registers with a prefix: checked free before any is made. */
  static names (prefix: string): string[] {
    return ['decisions_total', 'rate_limit_denials_total', 'stage_duration_seconds', 'request_duration_seconds', 'policy_info', 'policy_updates_total', 'rate_limit_store_up']
      .map((name) => prefix + name)
  }

  setPolicyVersion (version: string): void {
    this.#policy.reset()
    this.#policy.set({ version }, 1)
  }

  policyUpdate (outcome: PolicyUpdateOutcome): void {
    this.#updates.inc({ outcome })
  }

  watchStore (name: string, store: WatchedStore): void {
    this.#stores.set(name, store)
  }

  /** Times a request: its route (already bounded), method and status. */
  request (route: string, method: string, status: number, seconds: number): void {
    // Fastify sends statuses from 100 to 599 only.
    const statusClass = STATUS_CLASSES[Math.floor(status / 100) - 1] as string
    const leaf = branch(branch(this.requests.root, route), method)
    this.requests.record(this.requests.series(leaf, statusClass, { route, method, status_class: statusClass }), seconds)
  }

  /** Times a stage of the chain. */
  stage (key: string, seconds: number): void {
    this.stages.record(this.stages.series(this.stages.root, key, { stage: key }), seconds)
  }

  decision (route: string, plugin: string, outcome: string, reason: string): void {
    const leaf = branch(branch(branch(this.decisions.root, route), plugin), outcome)
    this.decisions.series(leaf, reason, { plugin, outcome, reason, route }).pending++
  }

  rateLimitDenial (limit: string, outcome: string): void {
    this.rateLimitDenials.series(branch(this.rateLimitDenials.root, limit), outcome, { limit, outcome }).pending++
  }
}

/**
 * A route handler that answers with the registry's metrics in the Prometheus text format, for a
 * metrics or admin listener.
 *
 * @example
 * admin.get('/metrics', metricsHandler(observer.registry))
 */
export function metricsHandler (registry: Registry): RouteHandlerMethod {
  if (typeof registry?.metrics !== 'function') throw invalidOption('metricsHandler.registry', 'a prom-client Registry')
  return async function serveMetrics (_request, reply) {
    reply.header('content-type', registry.contentType)
    return await registry.metrics()
  }
}
