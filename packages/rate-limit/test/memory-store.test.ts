import { test } from 'tap'
import { compileLimit, MemoryStore, parseWindow, type Check, type LimitOptions } from '../src/index.js'

/** A store on a clock the test moves. */
function clocked (options: { maxKeys?: number } = {}): { store: MemoryStore, advance: (ms: number) => void, at: (ms: number) => void } {
  let now = 1_700_000_000_000
  const store = new MemoryStore({ ...options, now: () => now })
  return { store, advance: (ms) => { now += ms }, at: (ms) => { now = ms } }
}
const check = (key: string, options: LimitOptions): Check => ({ key, limit: compileLimit(options, 'limit') })

test('limits are checked once, at load time, with the option and what is allowed', async (t) => {
  t.same(compileLimit({ name: 'burst', limit: 10, window: '1m' }, 'l'), { name: 'burst', algorithm: 'gcra', limit: 10, windowMs: 60_000, burst: 10 })
  t.same(compileLimit({ name: 'inflight', algorithm: 'concurrency', limit: 5 }, 'l').windowMs, 60_000, 'concurrency slots are held a minute at most by default')
  t.equal(compileLimit({ name: 'b', limit: 10, window: 2, burst: 3 }, 'l').burst, 3)
  t.equal(parseWindow('250ms', 'w'), 250)
  t.equal(parseWindow('1d', 'w'), 86_400_000)
  t.equal(parseWindow(0.5, 'w'), 500)
  const refused: Array<[unknown, RegExp]> = [
    [null, /^limit must be a limit such as/],
    [{ name: 'x', limit: 1, window: '1m', every: 3 }, /limit/],
    [{ name: 'Has Space', limit: 1, window: '1m' }, /^limit\.name must be a lower-case token/],
    [{ name: 'x', algorithm: 'leaky', limit: 1, window: '1m' }, /^limit\.algorithm must be one of gcra, fixed-window, sliding-window, concurrency/],
    [{ name: 'x', limit: 0, window: '1m' }, /^limit\.limit must be a whole number from 1 to 1000000000/],
    [{ name: 'x', limit: 1.5, window: '1m' }, /^limit\.limit/],
    [{ name: 'x', limit: 1 }, /^limit\.window must be seconds/],
    [{ name: 'x', limit: 1, window: '1 minute' }, /^limit\.window must be seconds, or a duration/],
    [{ name: 'x', limit: 1, window: '400d' }, /^limit\.window/],
    [{ name: 'x', limit: 1, window: -1 }, /^limit\.window/],
    [{ name: 'x', algorithm: 'fixed-window', limit: 1, window: '1m', burst: 2 }, /^limit\.burst must be used with the gcra algorithm only/],
    [{ name: 'x', limit: 1, window: '1m', burst: 0 }, /^limit\.burst must be a whole number/]
  ]
  for (const [options, message] of refused) t.throws(() => compileLimit(options as LimitOptions, 'limit'), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, JSON.stringify(options))
  t.throws(() => new MemoryStore({ maxKeys: 0 }), { message: /memoryStore\.maxKeys/ })
  t.throws(() => new MemoryStore({ now: 5 as unknown as () => number }), TypeError)
})

test('gcra: a burst at once, then one request per interval', async (t) => {
  const { store, advance } = clocked()
  const limit = check('alice', { name: 'burst', limit: 60, window: '1m', burst: 3 })
  const states = [1, 2, 3].map(() => store.consume([limit]))
  t.same(states.map((v) => v.allowed), [true, true, true])
  t.same(states.map((v) => v.states[0]?.remaining), [2, 1, 0])
  t.equal(states[2]?.states[0]?.resetMs, 3000, 'full again three intervals later')
  const refused = store.consume([limit])
  t.equal(refused.allowed, false)
  t.same(refused.states[0], { limit: limit.limit, remaining: 0, resetMs: 3000, retryAfterMs: 1000 })
  advance(999)
  t.equal(store.consume([limit]).allowed, false, 'not before the interval')
  advance(1)
  t.equal(store.consume([limit]).allowed, true, 'one more after one interval')
  advance(60_000)
  t.equal(store.consume([limit]).states[0]?.remaining, 2, 'idle time refills the burst, never beyond it')
})

test('fixed window: windows aligned to the epoch, counted from zero in each', async (t) => {
  const { store, at } = clocked()
  const limit = check('k', { name: 'minute', algorithm: 'fixed-window', limit: 2, window: '1m' })
  at(120_000 + 59_000)
  t.same([store.consume([limit]), store.consume([limit])].map((v) => v.states[0]?.remaining), [1, 0])
  const refused = store.consume([limit])
  t.same(refused.states[0], { limit: limit.limit, remaining: 0, resetMs: 1000, retryAfterMs: 1000 })
  at(180_000)
  t.equal(store.consume([limit]).allowed, true, 'a new window starts at its boundary, whatever happened just before')
  at(300_000)
  t.equal(store.consume([limit]).states[0]?.remaining, 1, 'an older window is forgotten')
})

test('sliding window: the previous window weighs in, so there is no double burst at the edge', async (t) => {
  const { store, at } = clocked()
  const limit = check('k', { name: 'minute', algorithm: 'sliding-window', limit: 4, window: '1m' })
  at(0 + 30_000)
  for (let i = 0; i < 4; i++) t.equal(store.consume([limit]).allowed, true)
  at(60_000 + 15_000)
  // The previous window's 4 weigh 45/60 = 3: one more fits, then none.
  t.equal(store.consume([limit]).allowed, true)
  const refused = store.consume([limit])
  t.equal(refused.allowed, false)
  // Room for 3 needs 4 x left / 60 s + 1 <= 3: left <= 30 s, 15 s from now.
  t.equal(refused.states[0]?.retryAfterMs, 15_000)
  at(60_000 + 30_000)
  t.equal(store.consume([limit]).allowed, true, 'allowed when the retry time said')
  at(60_000 + 31_000)
  store.consume([limit])
  const full = store.consume([limit])
  // 2 here and 4 x 29/60 from before: room for 3 once the previous window weighs 1, 15 s from
  // the window's end.
  t.equal(full.allowed, false)
  t.equal(full.states[0]?.retryAfterMs, 14_000)
  at(120_000 + 0)
  t.equal(store.consume([limit]).allowed, true)
  at(600_000)
  t.equal(store.consume([limit]).states[0]?.remaining, 3, 'long idle: nothing carried over')
})

test('sliding window, a full window by itself: the retry is in the next window', async (t) => {
  const { store, at } = clocked()
  const limit = check('k', { name: 'w', algorithm: 'sliding-window', limit: 2, window: '1m' })
  at(10_000)
  store.consume([limit])
  store.consume([limit])
  const refused = store.consume([limit])
  // Next window: 2 x (60 s - e) / 60 s <= 1 from e = 30 s; now is 50 s before it.
  t.equal(refused.states[0]?.retryAfterMs, 50_000 + 30_000)
  at(60_000 + 30_000)
  t.equal(store.consume([limit]).allowed, true)
})

test('concurrency: slots taken and given back', async (t) => {
  const { store } = clocked()
  const limit = check('svc', { name: 'inflight', algorithm: 'concurrency', limit: 2 })
  const first = store.consume([limit])
  const second = store.consume([limit])
  t.same([first.allowed, second.allowed], [true, true])
  t.equal(first.leases.length, 1)
  const third = store.consume([limit])
  t.equal(third.allowed, false)
  t.same(third.leases, [], 'a refused request holds no slot')
  store.release(first.leases)
  t.equal(store.consume([limit]).allowed, true, 'a slot given back is free again')
  store.release(second.leases)
  store.release(second.leases)
  store.release([{ key: 'never-taken', id: '1' }])
  t.equal(store.consume([limit]).states[0]?.remaining, 0, 'giving back twice frees one slot, not two')
})

test('several limits are counted together or not at all', async (t) => {
  const { store } = clocked()
  const rate = check('alice:rate', { name: 'burst', limit: 100, window: '1m' })
  const quota = check('alice:daily', { name: 'daily', algorithm: 'fixed-window', limit: 2, window: '1d' })
  t.equal(store.consume([rate, quota]).allowed, true)
  t.equal(store.consume([rate, quota]).allowed, true)
  const refused = store.consume([rate, quota])
  t.equal(refused.allowed, false)
  t.same(refused.states.map((s) => s.limit.name), ['burst', 'daily'])
  t.equal(refused.states[0]?.remaining, 98, 'the rate limit reports what it has left, not counting the refused request')
  t.equal(store.consume([rate]).states[0]?.remaining, 97, 'and the refused request did not use it up')
})

test('concurrency with other limits: each slot taken is leased, and a refusal takes none', async (t) => {
  const { store } = clocked()
  const perClient = check('alice:inflight', { name: 'inflight', algorithm: 'concurrency', limit: 3 })
  const perRoute = check('reports:inflight', { name: 'route-inflight', algorithm: 'concurrency', limit: 2 })
  const daily = check('alice:daily', { name: 'daily', algorithm: 'fixed-window', limit: 2, window: '1d' })
  const first = store.consume([perClient, perRoute, daily])
  t.same(first.leases.map((l) => l.key), ['alice:inflight', 'reports:inflight'], 'a lease for each concurrency limit')
  t.same(first.states.map((s) => s.remaining), [2, 1, 1])
  store.consume([perClient, perRoute, daily])
  const refused = store.consume([perClient, perRoute, daily])
  t.equal(refused.allowed, false)
  t.same(refused.states.map((s) => s.remaining), [1, 0, 0], 'the client limit reports the slot it still has, the route limit none')
  t.same(refused.leases, [])
  store.release(first.leases)
  t.same(store.consume([perClient, perRoute]).states.map((s) => s.remaining), [1, 0], 'both slots of the first request were given back')
})

test('bounded: past maxKeys the least recently used key is forgotten', async (t) => {
  const { store } = clocked({ maxKeys: 2 })
  const limit = (key: string): Check => check(key, { name: 'w', algorithm: 'fixed-window', limit: 1, window: '1h' })
  store.consume([limit('a')])
  store.consume([limit('b')])
  t.equal(store.consume([limit('a')]).allowed, false, 'a is counted')
  store.consume([limit('c')])
  t.equal(store.size, 2)
  t.equal(store.consume([limit('a')]).allowed, false, 'a, used recently, is still counted')
  t.equal(store.consume([limit('b')]).allowed, true, 'b, the least recently used, was forgotten')
})

test('a table per scope: each bounded by maxKeys, none crowding out another', async (t) => {
  const { store } = clocked({ maxKeys: 2 })
  const scoped = (scope: string, subject: string): Check => ({ ...check(scope + subject, { name: 'w', algorithm: 'fixed-window', limit: 1, window: '1h' }), scope, subject })
  store.consume([scoped('w:ip:', '192.0.2.1')])
  store.consume([scoped('w:ip:', '192.0.2.2')])
  store.consume([scoped('w:', 'p:alice')])
  t.equal(store.size, 3)
  t.equal(store.consume([scoped('w:ip:', '192.0.2.1')]).allowed, false, 'counted under its scope')
  t.equal(store.consume([scoped('w:', '192.0.2.1')]).allowed, true, 'the same subject under another scope is another key')
  for (const subject of ['198.51.100.1', '198.51.100.2', '198.51.100.3']) store.consume([scoped('w:ip:', subject)])
  t.equal(store.consume([scoped('w:', 'p:alice')]).allowed, false, 'a flood of addresses does not push alice out of her scope')
  t.equal(store.size, 4)
})

test('edge cases: the real clock, a slot whose key was forgotten, a refused request with a new key', async (t) => {
  const store = new MemoryStore({ maxKeys: 1 })
  const inflight = check('svc', { name: 'inflight', algorithm: 'concurrency', limit: 1 })
  const taken = store.consume([inflight])
  const before = Date.now()
  store.consume([check('other', { name: 'w', algorithm: 'fixed-window', limit: 1, window: '1h' })])
  store.release(taken.leases)
  t.equal(store.size, 1, 'the slot of a forgotten key is not given back to anything')
  const refused = store.consume([
    check('fresh', { name: 'burst', limit: 10, window: '1m' }),
    check('other', { name: 'w', algorithm: 'fixed-window', limit: 1, window: '1h' })
  ])
  t.equal(refused.allowed, false)
  t.ok(refused.states[1]!.resetMs <= 3_600_000 - (before % 3_600_000) + 5, 'windows follow the real clock by default')
  t.equal(store.size, 1, 'a refused request writes no new key')
})
