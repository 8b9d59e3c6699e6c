import { LRUCache } from 'lru-cache'
import { checkNumber } from '@portcullis/core'
import type { Check, Lease, Limit, LimitState, RateLimitStore, Verdict } from './limits.js'

export interface MemoryStoreOptions {
  /**
   * How many keys to keep per key scope (a limit, and the kind of part it counts by), or in all
   * for checks without a scope. Past it, the scope's key used least recently is forgotten, so a
   * flood of distinct keys (addresses, tokens) costs a bounded amount of memory. @default 100000
   */
  maxKeys?: number
  /** The clock, in epoch milliseconds. @default Date.now */
  now?: () => number
}

// Entries are changed in place: a request to a key already held costs one lookup, which also
// makes the key the most recently used.

/** A gcra limit's theoretical arrival time: when the key's budget is whole again. */
class Arrival {
  tat: number
  constructor (tat: number) {
    this.tat = tat
  }
}

/** A window's counts: its index since the epoch, its count, and the previous window's count. */
class WindowCounts {
  index: number
  count: number
  previous: number
  constructor (index: number, count: number, previous: number) {
    this.index = index
    this.count = count
    this.previous = previous
  }
}

/** Requests in flight under a concurrency limit. */
class InFlight {
  count: number
  constructor (count: number) {
    this.count = count
  }
}

type Entry = Arrival | WindowCounts | InFlight

const NO_LEASES: readonly Lease[] = Object.freeze([])

/** A slot given out by this store: where to give it back. */
interface HeldLease extends Lease {
  readonly table: LRUCache<string, Entry>
  readonly subject: string
}

/**
 * Counters held in this process: for a single instance, for tests, and as the fallback of the
 * Redis store while Redis cannot be reached. Bounded: at most `maxKeys` keys per key scope, least
 * recently used first out.
 */
export class MemoryStore implements RateLimitStore {
  // One table per key scope (a limit and the kind of part it counts by), each bounded by
  // maxKeys; checks that come without a scope share the table of the empty scope.
  readonly #tables = new Map<string, LRUCache<string, Entry>>()
  readonly #maxKeys: number
  readonly #now: () => number
  #leases = 0
  // Slots taken and not yet given back.
  readonly #live = new Set<string>()

  constructor (options: MemoryStoreOptions = {}) {
    this.#maxKeys = checkNumber(options.maxKeys, 100_000, 'memoryStore.maxKeys', 'a whole number, 1 or more', (n) => Number.isInteger(n) && n >= 1)
    if (options.now !== undefined && typeof options.now !== 'function') throw new TypeError('memoryStore.now must be a function returning epoch milliseconds')
    this.#now = options.now ?? Date.now
  }

  /** How many keys are held now. */
  get size (): number {
    let size = 0
    for (const table of this.#tables.values()) size += table.size
    return size
  }

  #table (scope: string): LRUCache<string, Entry> {
    let table = this.#tables.get(scope)
    if (table === undefined) {
      // Reading or writing a key makes it the most recently used; past maxKeys the least goes.
      // Bounded by size (each key counts 1) rather than by `max`, which would allocate the
      // whole table at once: it grows with the keys it actually holds.
      table = new LRUCache<string, Entry>({ maxSize: this.#maxKeys, sizeCalculation: () => 1 })
      this.#tables.set(scope, table)
    }
    return table
  }

  consume (checks: readonly Check[]): Verdict {
    const now = this.#now()
    const tables = new Array<LRUCache<string, Entry>>(checks.length)
    const entries = new Array<Entry | undefined>(checks.length)
    const states = new Array<LimitState>(checks.length)
    let allowed = true
    for (let i = 0; i < checks.length; i++) {
      const { key, limit, scope, subject } = checks[i] as Check
      const table = tables[i] = this.#table(subject === undefined ? '' : scope as string)
      const entry = entries[i] = table.get(subject ?? key)
      const state = states[i] = stateOf(limit, entry, now, true)
      if (state.retryAfterMs > 0) allowed = false
    }
    if (!allowed) {
      // Refused: nothing is counted, and the limits that would have allowed it report where they stand.
      for (let i = 0; i < checks.length; i++) {
        if ((states[i] as LimitState).retryAfterMs === 0) states[i] = stateOf((checks[i] as Check).limit, entries[i], now, false)
      }
      return { allowed, states, leases: NO_LEASES }
    }
    let leases = NO_LEASES
    for (let i = 0; i < checks.length; i++) {
      const check = checks[i] as Check
      const table = tables[i] as LRUCache<string, Entry>
      const subject = check.subject ?? check.key
      count(table, subject, check.limit, entries[i], now)
      if (check.limit.algorithm === 'concurrency') {
        const id = String(++this.#leases)
        this.#live.add(id)
        const lease: HeldLease = { key: check.key, id, table, subject }
        leases = leases === NO_LEASES ? [lease] : [...leases, lease]
      }
    }
    return { allowed, states, leases }
  }

  release (leases: readonly Lease[]): void {
    for (const lease of leases) {
      // Each slot is given back once, however often its release is asked for; only this
      // store's own leases are in #live.
      if (!this.#live.delete(lease.id)) continue
      const { table, subject } = lease as HeldLease
      const entry = table.get(subject)
      // Forgotten since (evicted): nothing to give back.
      if (!(entry instanceof InFlight)) continue
      if (entry.count <= 1) table.delete(subject)
      else entry.count--
    }
  }
}

/** Counts an allowed request: in the subject's entry, or in a new one. */
function count (table: LRUCache<string, Entry>, subject: string, limit: Limit, entry: Entry | undefined, now: number): void {
  switch (limit.algorithm) {
    case 'gcra': {
      const tat = Math.max(entry instanceof Arrival ? entry.tat : now, now) + limit.windowMs / limit.limit
      if (entry instanceof Arrival) entry.tat = tat
      else table.set(subject, new Arrival(tat))
      return
    }
    case 'concurrency':
      if (entry instanceof InFlight) entry.count++
      else table.set(subject, new InFlight(1))
      return
    default: {
      const index = Math.floor(now / limit.windowMs)
      if (!(entry instanceof WindowCounts)) {
        table.set(subject, new WindowCounts(index, 1, 0))
        return
      }
      const { current, previous } = counts(entry, index, limit.algorithm === 'sliding-window')
      entry.index = index
      entry.count = current + 1
      entry.previous = previous
    }
  }
}

/**
 * Where a limit stands for a request. With `counting`, the state once the request is counted,
 * or, when this limit refuses it (`retryAfterMs` > 0), as it stands. Without, as it stands.
 */
function stateOf (limit: Limit, entry: Entry | undefined, now: number, counting: boolean): LimitState {
  switch (limit.algorithm) {
    case 'gcra': return gcra(limit, now, entry instanceof Arrival ? entry.tat : now, counting)
    case 'concurrency': return concurrency(limit, entry instanceof InFlight ? entry.count : 0, counting)
    default: return window(limit, now, entry instanceof WindowCounts ? entry : null, counting)
  }
}

function gcra (limit: Limit, now: number, stored: number, counting: boolean): LimitState {
  const interval = limit.windowMs / limit.limit
  const capacity = interval * limit.burst
  const tat = Math.max(stored, now)
  const next = tat + interval
  if (next - now > capacity) {
    return { limit, remaining: Math.max(0, Math.floor((capacity - (tat - now)) / interval)), resetMs: Math.ceil(tat - now), retryAfterMs: Math.ceil(next - now - capacity) }
  }
  const after = counting ? next : tat
  return { limit, remaining: Math.floor((capacity - (after - now)) / interval), resetMs: Math.ceil(after - now), retryAfterMs: 0 }
}

function window (limit: Limit, now: number, stored: WindowCounts | null, counting: boolean): LimitState {
  const { windowMs } = limit
  const index = Math.floor(now / windowMs)
  const { current, previous } = counts(stored, index, limit.algorithm === 'sliding-window')
  const left = windowMs - (now - index * windowMs)
  const used = current + previous * left / windowMs
  if (used + 1 > limit.limit) return { limit, remaining: 0, resetMs: left, retryAfterMs: retryAfter(limit, current, previous, left) }
  return { limit, remaining: Math.floor(limit.limit - used - (counting ? 1 : 0)), resetMs: left, retryAfterMs: 0 }
}

function concurrency (limit: Limit, inFlight: number, counting: boolean): LimitState {
  if (inFlight + 1 > limit.limit) return { limit, remaining: 0, resetMs: 0, retryAfterMs: 1000 }
  return { limit, remaining: limit.limit - inFlight - (counting ? 1 : 0), resetMs: 0, retryAfterMs: 0 }
}

/** The counts of the current window and, for sliding windows, of the one before it. */
function counts (stored: WindowCounts | null, index: number, sliding: boolean): { current: number, previous: number } {
  if (stored === null) return { current: 0, previous: 0 }
  if (stored.index === index) return { current: stored.count, previous: sliding ? stored.previous : 0 }
  if (stored.index === index - 1 && sliding) return { current: 0, previous: stored.count }
  return { current: 0, previous: 0 }
}

/**
 * When a refused request would be allowed. In a fixed window, at its end. In a sliding window,
 * when the previous window's weight has shrunk enough, which may be in the next window if this
 * one is full by itself.
 */
export function retryAfter (limit: Limit, current: number, previous: number, left: number): number {
  const { windowMs } = limit
  const room = limit.limit - 1
  if (limit.algorithm === 'fixed-window') return left
  if (current <= room) return Math.max(1, Math.ceil(left - room * windowMs / previous + current * windowMs / previous))
  return Math.ceil(left + windowMs * (1 - room / current))
}
