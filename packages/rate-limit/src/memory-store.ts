import { LRUCache } from 'lru-cache'
import { checkNumber } from '@portcullis/core'
import type { Check, Lease, Limit, LimitState, RateLimitStore, Verdict } from './limits.js'

export interface MemoryStoreOptions {
  /**
   * How many keys to keep. Past it, the key used least recently is forgotten, so a flood of
   * distinct keys (addresses, tokens) costs a bounded amount of memory. @default 100000
   */
  maxKeys?: number
  /** The clock, in epoch milliseconds. @default Date.now */
  now?: () => number
}

/** A window's counts: its index since the epoch, its count, and the previous window's count. */
class WindowCounts {
  readonly index: number
  readonly count: number
  readonly previous: number
  constructor (index: number, count: number, previous: number) {
    this.index = index
    this.count = count
    this.previous = previous
  }
}

type Entry = number | WindowCounts

/** The outcome of one limit, before anything is written. */
interface Pending {
  /** The state once the request is counted, or, when this limit refuses it, as it stands. */
  state: LimitState
  /** The state as it stands, for a limit that would allow the request when another refuses it. */
  idle: LimitState
  /** What to store once every limit allows the request; undefined when this one refuses it. */
  next: Entry | undefined
}

/**
 * Counters held in this process: for a single instance, for tests, and as the fallback of the
 * Redis store while Redis cannot be reached. Bounded: at most `maxKeys` keys, least recently
 * used first out.
 */
export class MemoryStore implements RateLimitStore {
  readonly #entries: LRUCache<string, Entry>
  readonly #now: () => number
  #leases = 0
  // Slots taken and not yet given back.
  readonly #live = new Set<string>()

  constructor (options: MemoryStoreOptions = {}) {
    const maxKeys = checkNumber(options.maxKeys, 100_000, 'memoryStore.maxKeys', 'a whole number, 1 or more', (n) => Number.isInteger(n) && n >= 1)
    // Reading or writing a key makes it the most recently used; past maxKeys the least goes.
    this.#entries = new LRUCache<string, Entry>({ max: maxKeys })
    if (options.now !== undefined && typeof options.now !== 'function') throw new TypeError('memoryStore.now must be a function returning epoch milliseconds')
    this.#now = options.now ?? Date.now
  }

  /** How many keys are held now. */
  get size (): number {
    return this.#entries.size
  }

  consume (checks: readonly Check[]): Verdict {
    const now = this.#now()
    const pending: Pending[] = []
    let allowed = true
    for (const { key, limit } of checks) {
      const outcome = this.#check(key, limit, now)
      if (outcome.next === undefined) allowed = false
      pending.push(outcome)
    }
    const leases: Lease[] = []
    if (allowed) {
      for (let i = 0; i < pending.length; i++) {
        const { key, limit } = checks[i] as Check
        this.#entries.set(key, (pending[i] as Pending).next as Entry)
        if (limit.algorithm === 'concurrency') {
          const id = String(++this.#leases)
          this.#live.add(id)
          leases.push({ key, id })
        }
      }
    }
    return { allowed, states: pending.map((p) => allowed ? p.state : p.idle), leases }
  }

  release (leases: readonly Lease[]): void {
    for (const { key, id } of leases) {
      // Each slot is given back once, however often its release is asked for.
      if (!this.#live.delete(id)) continue
      const count = this.#entries.get(key)
      // Forgotten since (evicted): nothing to give back.
      if (typeof count !== 'number') continue
      if (count <= 1) this.#entries.delete(key)
      else this.#entries.set(key, count - 1)
    }
  }

  #check (key: string, limit: Limit, now: number): Pending {
    const entry = this.#entries.get(key)
    switch (limit.algorithm) {
      case 'gcra': return this.#gcra(limit, now, typeof entry === 'number' ? entry : now)
      case 'concurrency': return this.#concurrency(limit, typeof entry === 'number' ? entry : 0)
      default: return this.#window(limit, now, entry instanceof WindowCounts ? entry : null)
    }
  }

  #gcra (limit: Limit, now: number, stored: number): Pending {
    const interval = limit.windowMs / limit.limit
    const capacity = interval * limit.burst
    const tat = Math.max(stored, now)
    const next = tat + interval
    if (next - now > capacity) {
      const state = { limit, remaining: Math.max(0, Math.floor((capacity - (tat - now)) / interval)), resetMs: Math.ceil(tat - now), retryAfterMs: Math.ceil(next - now - capacity) }
      return { state, idle: state, next: undefined }
    }
    const state = { limit, remaining: Math.floor((capacity - (next - now)) / interval), resetMs: Math.ceil(next - now), retryAfterMs: 0 }
    const idle = { limit, remaining: Math.floor((capacity - (tat - now)) / interval), resetMs: Math.ceil(tat - now), retryAfterMs: 0 }
    return { state, idle, next }
  }

  #window (limit: Limit, now: number, stored: WindowCounts | null): Pending {
    const { windowMs } = limit
    const index = Math.floor(now / windowMs)
    const { current, previous } = counts(stored, index, limit.algorithm === 'sliding-window')
    const left = windowMs - (now - index * windowMs)
    const used = current + previous * left / windowMs
    if (used + 1 > limit.limit) {
      const state = { limit, remaining: 0, resetMs: left, retryAfterMs: retryAfter(limit, current, previous, left) }
      return { state, idle: state, next: undefined }
    }
    const state = { limit, remaining: Math.floor(limit.limit - used - 1), resetMs: left, retryAfterMs: 0 }
    const idle = { limit, remaining: Math.floor(limit.limit - used), resetMs: left, retryAfterMs: 0 }
    return { state, idle, next: new WindowCounts(index, current + 1, previous) }
  }

  #concurrency (limit: Limit, inFlight: number): Pending {
    if (inFlight + 1 > limit.limit) {
      const state = { limit, remaining: 0, resetMs: 0, retryAfterMs: 1000 }
      return { state, idle: state, next: undefined }
    }
    const idle = { limit, remaining: limit.limit - inFlight, resetMs: 0, retryAfterMs: 0 }
    return { state: { ...idle, remaining: idle.remaining - 1 }, idle, next: inFlight + 1 }
  }
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
