import { checkKnownKeys, invalidOption } from '@portcullis/core'

/**
 * How a limit counts:
 * - `gcra`: the generic cell rate algorithm, a smooth rate with a burst: `limit` per `window`,
 *   spaced evenly, with up to `burst` at once. One number per key.
 * - `fixed-window`: at most `limit` in each window, windows aligned to the epoch (a `day` window
 *   starts at 00:00 UTC). Quotas are fixed windows.
 * - `sliding-window`: the current window's count plus the previous one's, weighted by how much
 *   of it still overlaps the last `window`: no double burst at window edges.
 * - `concurrency`: at most `limit` requests in flight at once.
 */
export type Algorithm = 'gcra' | 'fixed-window' | 'sliding-window' | 'concurrency'

export const ALGORITHMS: readonly Algorithm[] = ['gcra', 'fixed-window', 'sliding-window', 'concurrency']

export interface LimitOptions {
  /** The policy's name in `RateLimit-Policy` and `RateLimit` headers: a token, such as `burst` or `daily`. */
  name: string
  /** @default 'gcra' */
  algorithm?: Algorithm
  /** How many requests each window allows, or, for `concurrency`, how many may be in flight. */
  limit: number
  /**
   * The window: seconds, or a duration such as `'1s'`, `'1m'`, `'1h'`, `'1d'`. For
   * `concurrency`, how long an unreleased slot is held at most (a crashed instance's requests
   * free their slots after it). @default '1m' for concurrency
   */
  window?: number | string
  /** `gcra` only: how many requests may come at once. @default limit */
  burst?: number
}

/** A limit checked on the hot path: every field resolved at load time. */
export interface Limit {
  readonly name: string
  readonly algorithm: Algorithm
  readonly limit: number
  readonly windowMs: number
  readonly burst: number
}

/** Where a check stands for one limit after a request: what the RateLimit headers report. */
export interface LimitState {
  readonly limit: Limit
  /** How many more requests the limit allows now. */
  readonly remaining: number
  /** Milliseconds until the limit is fully available again (the window's end, for windows). */
  readonly resetMs: number
  /** Milliseconds until the request would be allowed; 0 when it was. */
  readonly retryAfterMs: number
}

/** The answer to one check against all the limits of a request. */
export interface Verdict {
  /** True when every limit allowed the request: then, and only then, all of them counted it. */
  readonly allowed: boolean
  /** One per check, in the order of the checks (the headers list them in that order). */
  readonly states: readonly LimitState[]
  /** The slots taken in concurrency limits, to give back when the request ends. */
  readonly leases: readonly Lease[]
}

export interface Lease {
  readonly key: string
  readonly id: string
}

/** One limit to check, and the key (who or what is counted) to check it on. */
export interface Check {
  readonly key: string
  readonly limit: Limit
  /**
   * The key in two, when the plugin made it: `key === scope + subject`, the scope fixed at load
   * time. A store may keep a table per scope and look the subject up in it, without hashing the
   * whole key on every request (the MemoryStore does).
   */
  readonly scope?: string
  readonly subject?: string
}

/**
 * A check the plugin makes: its key is put together only when a store asks for it (the
 * MemoryStore never does).
 */
export class ScopedCheck implements Check {
  readonly scope: string
  readonly subject: string
  readonly limit: Limit
  constructor (scope: string, subject: string, limit: Limit) {
    this.scope = scope
    this.subject = subject
    this.limit = limit
  }

  get key (): string {
    return this.scope + this.subject
  }
}

/**
 * Where counters live. `consume` checks every limit at once and counts the request in all of
 * them, or in none when any refuses it, so a refused request never uses up another limit.
 */
export interface RateLimitStore {
  consume: (checks: readonly Check[]) => Verdict | Promise<Verdict>
  /** Gives back the concurrency slots a request took. */
  release: (leases: readonly Lease[]) => void | Promise<void>
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
const DURATION = /^(\d+)(ms|s|m|h|d)$/
// RFC 8941 keys: what a policy name must be to appear in the headers as is.
const NAME = /^[a-z*][a-z0-9_.*-]{0,63}$/
// Limits go into Redis scripts as numbers: a window of more than a year or a limit in the
// billions is a typo, and would lose precision on the way.
const MAX_WINDOW_MS = 366 * 86_400_000
const MAX_LIMIT = 1_000_000_000

/** Parses `'1m'`, `'30s'`, `'1d'` or a number of seconds into milliseconds. */
export function parseWindow (value: unknown, path: string): number {
  let ms: number | undefined
  if (typeof value === 'number' && Number.isFinite(value) && value > 0) ms = Math.round(value * 1000)
  else if (typeof value === 'string') {
    const match = DURATION.exec(value)
    if (match !== null) ms = Number(match[1]) * (UNITS[match[2] as string] as number)
  }
  if (ms === undefined || ms < 1 || ms > MAX_WINDOW_MS) {
    throw invalidOption(path, 'seconds, or a duration such as "1s", "1m", "1h" or "1d", of at most 366 days', value)
  }
  return ms
}

/** Checks a limit's options once, at load time. */
export function compileLimit (options: LimitOptions, path: string): Limit {
  if (typeof options !== 'object' || options === null) throw invalidOption(path, 'a limit such as { name: "burst", limit: 100, window: "1m" }', options)
  checkKnownKeys(options, ['name', 'algorithm', 'limit', 'window', 'burst'], path)
  if (typeof options.name !== 'string' || !NAME.test(options.name)) {
    throw invalidOption(`${path}.name`, 'a lower-case token such as "burst" or "daily" (letters, digits, _ - . *)', options.name)
  }
  const algorithm = options.algorithm ?? 'gcra'
  if (!ALGORITHMS.includes(algorithm)) throw invalidOption(`${path}.algorithm`, `one of ${ALGORITHMS.join(', ')}`, algorithm)
  const limit = wholeNumber(options.limit, `${path}.limit`)
  if (options.window === undefined && algorithm !== 'concurrency') throw invalidOption(`${path}.window`, 'seconds, or a duration such as "1m"', undefined)
  const windowMs = parseWindow(options.window ?? '1m', `${path}.window`)
  if (options.burst !== undefined && algorithm !== 'gcra') throw invalidOption(`${path}.burst`, 'used with the gcra algorithm only', options.burst)
  const burst = options.burst === undefined ? limit : wholeNumber(options.burst, `${path}.burst`)
  return Object.freeze({ name: options.name, algorithm, limit, windowMs, burst })
}

function wholeNumber (value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_LIMIT) {
    throw invalidOption(path, `a whole number from 1 to ${MAX_LIMIT}`, value)
  }
  return value
}
