import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { compileLimit, MemoryStore, RedisStore, StoreUnavailable, type Check, type LimitOptions, type RedisScriptClient } from '../src/index.js'

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const shared = new Redis(redisUrl)
t.teardown(() => shared.quit())
t.before(async () => { await ready(shared) })

/** Resolves once the client can take commands: before that, the store would count without Redis. */
async function ready (client: Redis): Promise<void> {
  if (client.status !== 'ready') await once(client, 'ready')
}

const asClient = (client: Redis): RedisScriptClient => client as unknown as RedisScriptClient
// Every test counts under its own prefix, so runs never see each other's counters.
const prefix = (): string => `portcullis:test:rl:${process.pid}:${Math.random().toString(36).slice(2)}:`
const check = (key: string, options: LimitOptions): Check => ({ key, limit: compileLimit(options, 'limit') })

t.test('gcra, windows and concurrency count in Redis as in memory', async (t) => {
  const keyPrefix = prefix()
  const store = new RedisStore({ client: asClient(shared), prefix: keyPrefix })
  const burst = check('alice', { name: 'burst', limit: 60, window: '1m', burst: 3 })
  const states = []
  for (let i = 0; i < 4; i++) states.push(await store.consume([burst]))
  t.same(states.map((v) => v.allowed), [true, true, true, false])
  t.same(states.map((v) => v.states[0]?.remaining), [2, 1, 0, 0])
  t.ok(states[3]!.states[0]!.retryAfterMs > 0 && states[3]!.states[0]!.retryAfterMs <= 1000, 'retry within one interval')
  t.ok(states[2]!.states[0]!.resetMs > 2900 && states[2]!.states[0]!.resetMs <= 3001, 'full again three intervals later')
  t.notOk(store.degraded)
  t.ok(Number(await shared.get(`${keyPrefix}alice`)) > Date.now(), 'the theoretical arrival time is kept in Redis')
  t.ok(await shared.pttl(`${keyPrefix}alice`) <= 3002, 'and expires once the burst is full again')

  for (const algorithm of ['fixed-window', 'sliding-window'] as const) {
    const limit = check(`w:${algorithm}`, { name: 'minute', algorithm, limit: 3, window: '1h' })
    const verdicts = []
    for (let i = 0; i < 4; i++) verdicts.push(await store.consume([limit]))
    t.same(verdicts.map((v) => v.allowed), [true, true, true, false], algorithm)
    t.same(verdicts.map((v) => v.states[0]?.remaining).slice(0, 3), [2, 1, 0])
    t.ok(verdicts[3]!.states[0]!.retryAfterMs > 0, `${algorithm}: a retry time`)
    t.equal(await shared.hget(`${keyPrefix}w:${algorithm}`, 'c'), '3', 'counted in Redis')
  }

  const inflight = check('svc', { name: 'inflight', algorithm: 'concurrency', limit: 2 })
  const first = await store.consume([inflight])
  const second = await store.consume([inflight])
  const third = await store.consume([inflight])
  t.same([first.allowed, second.allowed, third.allowed], [true, true, false])
  t.same(third.leases, [])
  t.equal(await shared.zcard(`${keyPrefix}svc`), 2, 'slots are leases in Redis')
  await store.release(first.leases)
  await store.release(first.leases)
  t.equal((await store.consume([inflight])).allowed, true, 'a slot given back is free again')
  t.equal((await store.consume([inflight])).allowed, false, 'given back twice, it frees one slot only')
  await store.release([])
})

t.test('several limits are counted together or not at all, in one round trip', async (t) => {
  const store = new RedisStore({ client: asClient(shared), prefix: prefix() })
  const rate = check('alice:rate', { name: 'burst', limit: 100, window: '1m' })
  const quota = check('alice:daily', { name: 'daily', algorithm: 'fixed-window', limit: 2, window: '1d' })
  t.equal((await store.consume([rate, quota])).allowed, true)
  t.equal((await store.consume([rate, quota])).allowed, true)
  const refused = await store.consume([rate, quota])
  t.equal(refused.allowed, false)
  t.equal(refused.states[0]?.remaining, 98, 'what is left, not counting the refused request')
  t.equal((await store.consume([rate])).states[0]?.remaining, 97, 'the refused request used up nothing')
})

t.test('three instances sharing one Redis admit at most the limit between them', async (t) => {
  const clients = [new Redis(redisUrl), new Redis(redisUrl), new Redis(redisUrl)]
  t.teardown(() => Promise.all(clients.map(async (c) => await c.quit())))
  await Promise.all(clients.map(ready))
  const keyPrefix = prefix()
  const stores = clients.map((client) => new RedisStore({ client: asClient(client), prefix: keyPrefix, timeoutMs: 2000 }))
  for (const algorithm of ['fixed-window', 'sliding-window', 'gcra'] as const) {
    const limit = check(`shared:${algorithm}`, { name: 'window', algorithm, limit: 100, window: '1h' })
    // 300 requests at once, spread over the three instances.
    const verdicts = await Promise.all(Array.from({ length: 300 }, async (_, i) => await (stores[i % 3] as RedisStore).consume([limit])))
    const admitted = verdicts.filter((v) => v.allowed).length
    t.equal(admitted, 100, `${algorithm}: ${admitted} of 300 admitted with a limit of 100`)
    t.notOk(stores.some((store) => store.degraded), 'all through Redis')
  }
})

t.test('bad options fail at startup, naming the option', async (t) => {
  t.throws(() => new RedisStore({ client: {} as RedisScriptClient }), { message: /^redisStore\.client must be a Redis client/ })
  t.throws(() => new RedisStore({ client: asClient(shared), prefix: 5 as unknown as string }), { message: /^redisStore\.prefix must be a string/ })
  t.throws(() => new RedisStore({ client: asClient(shared), timeoutMs: 0 }), { message: /^redisStore\.timeoutMs/ })
  t.throws(() => new RedisStore({ client: asClient(shared), retryAfterMs: -1 }), { message: /^redisStore\.retryAfterMs/ })
  t.throws(() => new RedisStore({ client: asClient(shared), failMode: 'maybe' as 'open' }), { message: /^redisStore\.failMode must be one of open, closed|^redisStore\.failMode must be open or closed/ })
})

async function freePort (): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  await once(server, 'close')
  return port
}

/** A private redis-server, never the shared one: this test stops it. */
async function startRedis (port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  for (let i = 0; i < 100; i++) {
    const probe = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
    try {
      await probe.connect()
      await probe.ping()
      return child
    } catch {
      await sleep(50)
    } finally {
      probe.disconnect()
    }
  }
  throw new Error(`redis-server did not start on port ${port}`)
}

async function stopRedis (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGKILL')
  await exited
}

t.test('Redis stopped and restarted mid-test: fail open counts locally, fail closed refuses, both recover', async (t) => {
  const port = await freePort()
  let server = await startRedis(port)
  t.teardown(async () => { await stopRedis(server) })
  // Fail fast while Redis is away: no offline queue, no retries per command.
  const client = new Redis({ port, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => 100 })
  t.teardown(() => { client.disconnect() })
  // The client's reconnection errors while Redis is stopped are expected: what matters is what
  // the store does meanwhile, asserted below.
  client.on('error', () => {})
  await once(client, 'ready')
  const keyPrefix = prefix()
  const fallback = new MemoryStore()
  const open = new RedisStore({ client: asClient(client), prefix: keyPrefix, failMode: 'open', retryAfterMs: 200, fallback })
  const closed = new RedisStore({ client: asClient(client), prefix: keyPrefix, failMode: 'closed', retryAfterMs: 200 })
  const limit = check('alice', { name: 'minute', algorithm: 'fixed-window', limit: 5, window: '1h' })
  const inflight = check('svc', { name: 'inflight', algorithm: 'concurrency', limit: 1 })

  // A new server has no script yet: the store sends it once, then calls it by its digest.
  t.equal((await open.consume([limit])).allowed, true)
  t.equal(await client.hget(`${keyPrefix}alice`, 'c'), '1', 'counted in Redis')
  t.equal((await closed.consume([limit])).states[0]?.remaining, 3, 'both stores share the count')

  await stopRedis(server)
  await sleep(100)
  const during = await open.consume([limit])
  t.equal(during.allowed, true, 'fail open: the request goes on')
  t.equal(during.states[0]?.remaining, 4, 'counted in this process meanwhile')
  t.ok(open.degraded, 'and the store says so')
  await t.rejects(closed.consume([limit]), StoreUnavailable, 'fail closed: 503')
  const local = await open.consume([inflight])
  t.equal((await open.consume([inflight])).allowed, false, 'concurrency holds in the fallback too')
  await open.release(local.leases)
  t.equal((await open.consume([inflight])).allowed, true, 'and its slots are given back to it')

  server = await startRedis(port)
  await once(client, 'ready')
  await sleep(250)
  const after = await open.consume([limit])
  t.equal(after.allowed, true)
  t.notOk(open.degraded, 'Redis is used again once it is back')
  t.equal(await client.hget(`${keyPrefix}alice`, 'c'), '1', 'counting again in Redis (the restarted one kept nothing)')
  t.equal((await closed.consume([limit])).allowed, true, 'fail closed recovers too')

  // A Redis that answers too late is a Redis that is down, for this request.
  await client.client('PAUSE', 400, 'ALL')
  const late = new RedisStore({ client: asClient(client), prefix: keyPrefix, failMode: 'closed', timeoutMs: 50 })
  const started = Date.now()
  await t.rejects(late.consume([limit]), StoreUnavailable)
  t.ok(Date.now() - started < 300, 'refused within the timeout, not after the pause')
  await late.release([{ key: 'svc', id: 'gone' }])
  t.pass('a slot that cannot be given back is left to expire')
})
