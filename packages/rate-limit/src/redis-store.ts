import { createHash, randomUUID } from 'node:crypto'
import { checkNumber, invalidOption, within } from '@portcullis/core'
import type { Check, Lease, LimitState, RateLimitStore, Verdict } from './limits.js'
import { MemoryStore } from './memory-store.js'
import { StoreUnavailable } from './errors.js'

/**
 * The Redis commands the store uses, as ioredis offers them. Any such client fits; the package
 * does not depend on one. `status`, when the client has it, lets the store skip a Redis that is
 * known to be down without waiting for a timeout.
 */
export interface RedisScriptClient {
  evalsha: (sha: string, numKeys: number, ...args: Array<string | number>) => Promise<unknown>
  eval: (script: string, numKeys: number, ...args: Array<string | number>) => Promise<unknown>
  zrem: (key: string, ...members: string[]) => Promise<unknown>
  status?: string
}

export interface RedisStoreOptions {
  client: RedisScriptClient
  /** Prepended to every key. @default 'portcullis:rl:' */
  prefix?: string
  /** How long to wait for Redis on a request, in ms. @default 100 */
  timeoutMs?: number
  /**
   * What happens while Redis cannot be reached: `open` counts in this process instead (each
   * instance then allows the whole limit by itself), `closed` refuses the request with 503.
   * @default 'open'
   */
  failMode?: 'open' | 'closed'
  /** After a failure, how long to go without asking Redis, in ms, before trying again. @default 1000 */
  retryAfterMs?: number
  /** The store used while Redis cannot be reached, when `failMode` is `open`. @default a MemoryStore */
  fallback?: RateLimitStore
}

/**
 * One script checks every limit of a request, in one round trip, atomically: the time is
 * Redis's own (instances with skewed clocks agree), and counts are written only when every
 * limit allows the request. It mirrors MemoryStore, algorithm for algorithm.
 *
 * KEYS: one per limit. ARGV, five per limit: algorithm (g, f, s, c), limit, window in ms, burst,
 * lease id (concurrency). Returns 1 or 0 (allowed), then per limit: remaining, reset ms, retry ms.
 */
export const CONSUME_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local allowed = 1
local states = {}
local writes = {}
for i = 1, #KEYS do
  local a = (i - 1) * 5
  local alg, limit, window, burst, lease = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), ARGV[a + 5]
  local key = KEYS[i]
  -- remaining, reset and retry once counted; idle and idleReset as things stand (reported when
  -- another limit refuses the request, so that nothing is counted).
  local remaining, reset, retry, idle, idleReset = 0, 0, 0, 0, 0
  if alg == 'g' then
    local interval = window / limit
    local capacity = interval * burst
    local tat = tonumber(redis.call('GET', key)) or now
    if tat < now then tat = now end
    local nextTat = tat + interval
    if nextTat - now > capacity then
      remaining = math.max(0, math.floor((capacity - (tat - now)) / interval))
      reset = math.ceil(tat - now)
      retry = math.ceil(nextTat - now - capacity)
      allowed = 0
    else
      remaining = math.floor((capacity - (nextTat - now)) / interval)
      reset = math.ceil(nextTat - now)
      idle = math.floor((capacity - (tat - now)) / interval)
      idleReset = math.ceil(tat - now)
      writes[#writes + 1] = {'g', key, nextTat, math.ceil(nextTat - now) + 1}
    end
  elseif alg == 'c' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local inFlight = redis.call('ZCARD', key)
    if inFlight + 1 > limit then
      retry = 1000
      allowed = 0
    else
      remaining = limit - inFlight - 1
      idle = limit - inFlight
      writes[#writes + 1] = {'c', key, now + window, lease, window}
    end
  else
    local index = math.floor(now / window)
    local stored = redis.call('HMGET', key, 'w', 'c', 'p')
    local w, c, p = tonumber(stored[1]), tonumber(stored[2]) or 0, tonumber(stored[3]) or 0
    local current, previous = 0, 0
    if w == index then
      current = c
      if alg == 's' then previous = p end
    elseif w == index - 1 and alg == 's' then
      previous = c
    end
    local left = window - (now - index * window)
    local used = current + previous * left / window
    reset = left
    idleReset = left
    if used + 1 > limit then
      local room = limit - 1
      if alg == 'f' then
        retry = left
      elseif current <= room then
        retry = math.max(1, math.ceil(left - room * window / previous + current * window / previous))
      else
        retry = math.ceil(left + window * (1 - room / current))
      end
      allowed = 0
    else
      remaining = math.floor(limit - used - 1)
      idle = math.floor(limit - used)
      writes[#writes + 1] = {'w', key, index, current + 1, previous, (index + 2) * window}
    end
  end
  states[i] = {remaining, reset, retry, idle, idleReset}
end
local out = {allowed}
for i = 1, #states do
  local s = states[i]
  if allowed == 1 or s[3] > 0 then
    out[#out + 1] = s[1]
    out[#out + 1] = s[2]
    out[#out + 1] = s[3]
  else
    out[#out + 1] = s[4]
    out[#out + 1] = s[5]
    out[#out + 1] = 0
  end
end
if allowed == 1 then
  for _, w in ipairs(writes) do
    if w[1] == 'g' then
      redis.call('SET', w[2], string.format('%.3f', w[3]), 'PX', w[4])
    elseif w[1] == 'c' then
      redis.call('ZADD', w[2], w[3], w[4])
      redis.call('PEXPIRE', w[2], w[5])
    else
      redis.call('HSET', w[2], 'w', w[3], 'c', w[4], 'p', w[5])
      redis.call('PEXPIREAT', w[2], w[6])
    end
  end
end
return out
`

const SCRIPT_SHA = createHash('sha1').update(CONSUME_SCRIPT).digest('hex')
const CODES = { gcra: 'g', 'fixed-window': 'f', 'sliding-window': 's', concurrency: 'c' } as const

/**
 * Counters shared by every instance through Redis: one script call per request. While Redis
 * cannot be reached, requests are counted in this process (`failMode: 'open'`) or refused
 * (`'closed'`); Redis is asked again `retryAfterMs` after the last failure, so it takes over
 * again on its own when it comes back.
 */
export class RedisStore implements RateLimitStore {
  readonly #client: RedisScriptClient
  readonly #prefix: string
  readonly #timeout: number
  readonly #failOpen: boolean
  readonly #retryAfter: number
  readonly #fallback: RateLimitStore
  // Slots taken from the fallback while Redis was away go back to it.
  readonly #fallbackLeases = new WeakSet<Lease>()
  // Lease ids: this store's own prefix, unique across instances, and a counter.
  readonly #leasePrefix = `${randomUUID()}:`
  #leases = 0
  #downUntil = 0

  constructor (options: RedisStoreOptions) {
    const client = options?.client
    if (typeof client?.evalsha !== 'function' || typeof client.eval !== 'function' || typeof client.zrem !== 'function') {
      throw invalidOption('redisStore.client', 'a Redis client such as an ioredis instance')
    }
    this.#client = client
    this.#prefix = options.prefix ?? 'portcullis:rl:'
    if (typeof this.#prefix !== 'string') throw invalidOption('redisStore.prefix', 'a string', this.#prefix)
    this.#timeout = checkNumber(options.timeoutMs, 100, 'redisStore.timeoutMs', 'a whole number of ms, 1 or more', (n) => Number.isInteger(n) && n >= 1)
    this.#retryAfter = checkNumber(options.retryAfterMs, 1000, 'redisStore.retryAfterMs', 'a whole number of ms, 0 or more', (n) => Number.isInteger(n) && n >= 0)
    const failMode = options.failMode ?? 'open'
    if (failMode !== 'open' && failMode !== 'closed') throw invalidOption('redisStore.failMode', 'open or closed', failMode)
    this.#failOpen = failMode === 'open'
    this.#fallback = options.fallback ?? new MemoryStore()
  }

  /** Whether the store is counting without Redis for now (Redis down, or failed lately). */
  get degraded (): boolean {
    return this.#skipRedis()
  }

  async consume (checks: readonly Check[]): Promise<Verdict> {
    if (this.#skipRedis()) return await this.#withoutRedis(checks)
    const keys = checks.map((check) => this.#prefix + check.key)
    const args: Array<string | number> = []
    const leases: Lease[] = []
    for (const { key, limit } of checks) {
      const lease = limit.algorithm === 'concurrency' ? this.#leasePrefix + String(++this.#leases) : ''
      if (lease !== '') leases.push({ key, id: lease })
      args.push(CODES[limit.algorithm], limit.limit, limit.windowMs, limit.burst, lease)
    }
    let reply: unknown
    try {
      reply = await this.#run(keys, args)
    } catch {
      this.#downUntil = Date.now() + this.#retryAfter
      return await this.#withoutRedis(checks)
    }
    const numbers = reply as number[]
    const allowed = numbers[0] === 1
    const states: LimitState[] = checks.map(({ limit }, i) => ({
      limit, remaining: numbers[1 + 3 * i] as number, resetMs: numbers[2 + 3 * i] as number, retryAfterMs: numbers[3 + 3 * i] as number
    }))
    return { allowed, states, leases: allowed ? leases : [] }
  }

  async release (leases: readonly Lease[]): Promise<void> {
    const local: Lease[] = []
    const shared: Lease[] = []
    for (const lease of leases) (this.#fallbackLeases.has(lease) ? local : shared).push(lease)
    if (local.length > 0) await this.#fallback.release(local)
    // A slot that cannot be given back expires with its lease (the limit's window).
    await Promise.all(shared.map(async ({ key, id }) => {
      try {
        await within(this.#client.zrem(this.#prefix + key, id), this.#timeout)
      } catch {}
    }))
  }

  #skipRedis (): boolean {
    if (this.#client.status !== undefined && this.#client.status !== 'ready') return true
    return this.#downUntil > Date.now()
  }

  async #withoutRedis (checks: readonly Check[]): Promise<Verdict> {
    if (!this.#failOpen) throw new StoreUnavailable()
    const verdict = await this.#fallback.consume(checks)
    for (const lease of verdict.leases) this.#fallbackLeases.add(lease)
    return verdict
  }

  // EVALSHA first; the script is sent whole only when Redis does not have it yet.
  async #run (keys: string[], args: Array<string | number>): Promise<unknown> {
    try {
      return await within(this.#client.evalsha(SCRIPT_SHA, keys.length, ...keys, ...args), this.#timeout)
    } catch (err) {
      if (!String((err as Error).message).startsWith('NOSCRIPT')) throw err
      return await within(this.#client.eval(CONSUME_SCRIPT, keys.length, ...keys, ...args), this.#timeout)
    }
  }
}
