import { test } from 'tap'
import { EventEmitter } from 'node:events'
import { generateKeyPairSync } from 'node:crypto'
import { hostname } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  DEFAULT_REDIS_PREFIX,
  PolicyManager,
  fleetStatus,
  parsePolicy,
  policyVersion,
  publishPolicy,
  publishedPolicy,
  signPolicy,
  syncPolicyFromRedis,
  type InstanceStatus,
  type PolicyEvent,
  type PolicyRedis,
  type PolicySubscriber,
  type RedisSync,
  type RedisSyncOptions
} from '../src/index.js'

/**
 * Redis as far as the fleet sync uses it, in memory: keys with PX expiry (expired keys are
 * dropped lazily, as Redis does, so SCAN may still list one that GET no longer finds), SCAN in
 * pages, and PUBLISH to the subscribers of a channel.
 */
class MemoryRedis implements PolicyRedis {
  readonly keys = new Map<string, { value: string, expires: number | null }>()
  readonly subscribers = new Set<MemorySubscriber>()
  readonly published: Array<[string, string]> = []
  sets = 0
  failGet: Error | null = null
  failSet: Error | null = null
  pageSize = 2

  async get (key: string): Promise<string | null> {
    if (this.failGet !== null) throw this.failGet
    return this.read(key)
  }

  async set (key: string, value: string, expiry?: 'PX', milliseconds?: number): Promise<unknown> {
    if (this.failSet !== null) throw this.failSet
    this.sets++
    this.keys.set(key, { value, expires: expiry === 'PX' ? Date.now() + (milliseconds as number) : null })
    return 'OK'
  }

  async publish (channel: string, message: string): Promise<unknown> {
    this.published.push([channel, message])
    let receivers = 0
    for (const subscriber of this.subscribers) {
      if (subscriber.channels.has(channel)) {
        receivers++
        setImmediate(() => subscriber.emit('message', channel, message))
      }
    }
    return receivers
  }

  async scan (cursor: string, _match: 'MATCH', pattern: string, _count: 'COUNT', _size: number): Promise<[string, string[]]> {
    const glob = new RegExp(`^${pattern.split('*').map((part) => part.replace(/[\\^$.|?+()[\]{}]/g, '\\$&')).join('.*')}$`)
    const all = [...this.keys.keys()].sort()
    const start = Number(cursor)
    const next = start + this.pageSize
    return [next >= all.length ? '0' : String(next), all.slice(start, next).filter((key) => glob.test(key))]
  }

  async mget (...keys: string[]): Promise<Array<string | null>> {
    return keys.map((key) => this.read(key))
  }

  private read (key: string): string | null {
    const entry = this.keys.get(key)
    if (entry === undefined || (entry.expires !== null && entry.expires <= Date.now())) return null
    return entry.value
  }
}

class MemorySubscriber extends EventEmitter implements PolicySubscriber {
  readonly channels = new Set<string>()
  readonly redis: MemoryRedis
  constructor (redis: MemoryRedis) {
    super()
    this.redis = redis
  }

  async subscribe (channel: string): Promise<unknown> {
    this.channels.add(channel)
    this.redis.subscribers.add(this)
    return 1
  }
}

const doc = (port: number): string => `version: 1\nupstreams:\n  - prefix: /api\n    url: http://orders:${port}\n    public: true\n`
const idOf = (text: string): string => policyVersion(parsePolicy(text).data)

async function until (condition: () => boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms
  while (!condition()) {
    if (Date.now() > end) return false
    await sleep(5)
  }
  return true
}

function instance (options: { publicKey?: ReturnType<typeof generateKeyPairSync>['publicKey'] } = {}) {
  const events: PolicyEvent[] = []
  const outcomes: Array<{ version: string } | { error: Error }> = []
  const manager = new PolicyManager<string>({ compile: async (checked) => checked.version, onEvent: (event) => { events.push(event) }, ...options })
  return { manager, events, outcomes, onUpdate: (outcome: { version: string } | { error: Error }) => { outcomes.push(outcome) } }
}

test('publishPolicy() stores the version for the fleet and announces it', async (t) => {
  const redis = new MemoryRedis()
  const published = await publishPolicy(redis, doc(1), { actor: 'ops', signature: 'c2ln' })
  t.match(published, { version: idOf(doc(1)), text: doc(1), signature: 'c2ln', actor: 'ops', publishedAt: String })
  t.ok(Math.abs(Date.parse(published.publishedAt) - Date.now()) < 5000, 'publishedAt is now, in ISO form')
  t.equal(DEFAULT_REDIS_PREFIX, 'portcullis:policy:')
  t.same(JSON.parse(redis.keys.get('portcullis:policy:current')?.value as string), published)
  t.equal(redis.keys.get('portcullis:policy:current')?.expires, null, 'it does not expire')
  t.same(redis.published, [['portcullis:policy:updates', published.version]])
  t.same(await publishedPolicy(redis), published)

  const plain = await publishPolicy(redis, doc(2), { prefix: 'team-a:' })
  t.notOk('signature' in plain, 'no signature unless given')
  t.notOk('actor' in plain)
  t.same(await publishedPolicy(redis, 'team-a:'), plain)
  t.equal((await publishedPolicy(redis))?.version, published.version, 'prefixes keep fleets apart')
  t.equal(await publishedPolicy(redis, 'team-b:'), null, 'nothing published')
})

test('a document that does not parse is never published', async (t) => {
  const redis = new MemoryRedis()
  await t.rejects(publishPolicy(redis, 'version: 1\nversion: 2\n', { name: 'next.yaml' }), { code: 'PORTCULLIS_POLICY_REJECTED', stage: 'parse', message: /^next\.yaml:2:1: Map keys must be unique/ })
  t.equal(redis.keys.size, 0)
  t.same(redis.published, [])
})

test('a bad prefix is refused, naming the option', async (t) => {
  const redis = new MemoryRedis()
  const message = /^redis\.prefix must be a non-empty string such as "portcullis:policy:" \(got /
  await t.rejects(publishPolicy(redis, doc(1), { prefix: '' }), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message })
  await t.rejects(publishedPolicy(redis, 42 as never), { message })
  await t.rejects(fleetStatus(redis, null as never), { message })
  t.same(redis.published, [])
})

test('an instance applies the published version at start and on each announcement, and reports it', async (t) => {
  const redis = new MemoryRedis()
  const subscriber = new MemorySubscriber(redis)
  await publishPolicy(redis, doc(1), { prefix: 'p:' })
  const { manager, events, outcomes, onUpdate } = instance()
  const started = Date.now()
  const sync = await syncPolicyFromRedis(manager, { client: redis, subscriber, prefix: 'p:', instanceId: 'gw-1', onUpdate })
  t.teardown(sync.close)
  t.equal(manager.active?.version, idOf(doc(1)), 'the published version is applied at start')
  t.match(manager.active, { source: 'redis', name: 'redis:p:current' })
  t.same(outcomes, [{ version: idOf(doc(1)) }])
  t.match(sync.status(), { instance: 'gw-1', host: hostname(), version: idOf(doc(1)), at: String })
  t.notOk('refused' in sync.status())
  const report = redis.keys.get('p:instances:gw-1')
  t.match(JSON.parse(report?.value as string), { instance: 'gw-1', version: idOf(doc(1)) }, 'reported at once')
  t.ok((report?.expires as number) >= started + 15_000 && (report?.expires as number) <= Date.now() + 15_000, 'a report lives three heartbeats (3 × 5000 ms by default)')

  const next = await publishPolicy(redis, doc(2), { prefix: 'p:', actor: 'ops@example.com' })
  t.ok(await until(() => manager.active?.version === next.version), 'an announcement is applied at once')
  t.same(outcomes.at(-1), { version: next.version })
  t.match(events.at(-1), { action: 'activate', version: next.version, source: 'redis', actor: 'ops@example.com' })
  t.ok(await until(() => JSON.parse(redis.keys.get('p:instances:gw-1')?.value as string).version === next.version), 'and reported')

  await publishPolicy(redis, doc(3), { prefix: 'other:' })
  await sleep(30)
  t.equal(manager.active?.version, next.version, 'announcements of another prefix are not heard')

  const count = outcomes.length
  await redis.publish('p:updates', next.version)
  await sync.refresh()
  await sleep(30)
  t.equal(outcomes.length, count, 'the version already running is not applied again')
})

test('after a reconnection, the instance reads what was published meanwhile', async (t) => {
  const redis = new MemoryRedis()
  const subscriber = new MemorySubscriber(redis)
  const { manager, onUpdate, outcomes } = instance()
  await manager.apply(doc(1))
  const sync = await syncPolicyFromRedis(manager, { client: redis, subscriber, instanceId: 'gw-1', onUpdate })
  t.teardown(sync.close)
  t.equal(manager.active?.version, idOf(doc(1)), 'nothing published: the instance keeps its own version')
  t.same(outcomes, [])
  t.match(JSON.parse(redis.keys.get('portcullis:policy:instances:gw-1')?.value as string), { version: idOf(doc(1)) }, 'and reports it')
  // Published while the subscriber was disconnected: the announcement is lost.
  await redis.set('portcullis:policy:current', JSON.stringify({ version: idOf(doc(2)), text: doc(2), publishedAt: new Date().toISOString() }))
  await sleep(20)
  t.equal(manager.active?.version, idOf(doc(1)))
  subscriber.emit('ready')
  t.ok(await until(() => manager.active?.version === idOf(doc(2))))
  await redis.set('portcullis:policy:current', JSON.stringify({ version: idOf(doc(3)), text: doc(3), publishedAt: new Date().toISOString() }))
  await sync.refresh()
  t.equal(manager.active?.version, idOf(doc(3)), 'refresh() reads it now')
})

test('a refused version is reported by the instance that refused it, which keeps its own', async (t) => {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519')
  const redis = new MemoryRedis()
  const subscriber = new MemorySubscriber(redis)
  await publishPolicy(redis, doc(1), { signature: signPolicy(doc(1), privateKey) })
  const { manager, outcomes, onUpdate } = instance({ publicKey })
  const sync = await syncPolicyFromRedis(manager, { client: redis, subscriber, instanceId: 'gw-2', onUpdate })
  t.teardown(sync.close)
  t.equal(manager.active?.version, idOf(doc(1)), 'a signed version is applied')

  const unsigned = await publishPolicy(redis, doc(2), { actor: 'mallory' })
  t.ok(await until(() => sync.status().refused !== undefined))
  t.same(sync.status().refused, { version: unsigned.version, reason: 'redis:portcullis:policy:current: the document is not signed, and only signed documents are taken' })
  t.match(outcomes.at(-1), { error: { stage: 'signature' } })
  t.equal(manager.active?.version, idOf(doc(1)), 'the instance keeps its version')
  t.ok(await until(() => JSON.parse(redis.keys.get('portcullis:policy:instances:gw-2')?.value as string).refused?.version === unsigned.version), 'the refusal is reported to the fleet')

  // A foreign publisher wrote text that does not parse: refused with no version.
  await redis.set('portcullis:policy:current', JSON.stringify({ version: 'ffffffffffffffff', text: 'version: [', publishedAt: new Date().toISOString() }))
  await sync.refresh()
  t.match(sync.status().refused, { version: null, reason: /^redis:portcullis:policy:current:\d+:\d+: / })

  const signed = await publishPolicy(redis, doc(3), { signature: signPolicy(doc(3), privateKey) })
  t.ok(await until(() => manager.active?.version === signed.version))
  t.notOk('refused' in sync.status(), 'a version applied clears the refusal')
})

test('Redis failures are reported, and do not stop the instance', async (t) => {
  const redis = new MemoryRedis()
  const subscriber = new MemorySubscriber(redis)
  const { manager, outcomes, onUpdate } = instance()
  await manager.apply(doc(1))
  redis.failSet = new Error('READONLY You can\'t write against a read only replica')
  const sync = await syncPolicyFromRedis(manager, { client: redis, subscriber, instanceId: 'gw-3', onUpdate })
  t.teardown(sync.close)
  t.equal(redis.keys.size, 0, 'a report that cannot be written is skipped')
  redis.failSet = null
  redis.failGet = new Error('connect ECONNREFUSED 127.0.0.1:6379')
  await sync.refresh()
  t.match(outcomes.at(-1), { error: { message: 'connect ECONNREFUSED 127.0.0.1:6379' } })
  redis.failGet = null
  await redis.set('portcullis:policy:current', '{not json')
  await sync.refresh()
  t.match(outcomes.at(-1), { error: { name: 'SyntaxError' } })
  t.equal(manager.active?.version, idOf(doc(1)), 'the version in force keeps serving')
})

test('the report is refreshed every heartbeat; close() stops listening and reporting', async (t) => {
  const redis = new MemoryRedis()
  const subscriber = new MemorySubscriber(redis)
  const { manager } = instance()
  await manager.apply(doc(1))
  const started = Date.now()
  const sync = await syncPolicyFromRedis(manager, { client: redis, subscriber, instanceId: 'gw-4', heartbeatMs: 100 })
  const first = redis.sets
  const expires = redis.keys.get('portcullis:policy:instances:gw-4')?.expires as number
  t.ok(expires >= started + 300 && expires <= Date.now() + 300, 'a report lives three heartbeats')
  t.ok(await until(() => redis.sets >= first + 2, 1000), 'reported again every heartbeat')
  t.equal(subscriber.listenerCount('message'), 1)
  t.equal(subscriber.listenerCount('ready'), 1)

  await sync.close()
  t.equal(subscriber.listenerCount('message'), 0)
  t.equal(subscriber.listenerCount('ready'), 0)
  const closed = redis.sets
  await publishPolicy(redis, doc(2))
  await sync.refresh()
  await sleep(250)
  t.equal(manager.active?.version, idOf(doc(1)), 'nothing is applied after close')
  t.equal(redis.sets, closed + 1, 'only the publish wrote: no more reports')
})

test('fleetStatus() lists what each instance of the fleet reported, by name', async (t) => {
  const redis = new MemoryRedis()
  t.same(await fleetStatus(redis), [], 'no instance')
  const syncs: RedisSync[] = []
  await publishPolicy(redis, doc(1))
  for (const name of ['gw-c', 'gw-a', 'gw-b']) {
    const { manager } = instance()
    syncs.push(await syncPolicyFromRedis(manager, { client: redis, subscriber: new MemorySubscriber(redis), instanceId: name }))
  }
  const { manager: other } = instance()
  syncs.push(await syncPolicyFromRedis(other, { client: redis, subscriber: new MemorySubscriber(redis), prefix: 'elsewhere:', instanceId: 'gw-z' }))
  t.teardown(async () => { for (const sync of syncs) await sync.close() })
  // A report that expired after SCAN listed it, before MGET read it.
  await redis.set('portcullis:policy:instances:gw-gone', JSON.stringify({ instance: 'gw-gone' }), 'PX', 1)
  await sleep(5)
  const fleet = await fleetStatus(redis)
  t.same(fleet.map((entry: InstanceStatus) => [entry.instance, entry.version]), [['gw-a', idOf(doc(1))], ['gw-b', idOf(doc(1))], ['gw-c', idOf(doc(1))]], 'sorted, the other prefix and the expired report left out')
  t.ok(redis.keys.size > redis.pageSize * 2, 'read over several SCAN pages')
  t.same((await fleetStatus(redis, 'elsewhere:')).map((entry) => entry.instance), ['gw-z'])
})

test('bad sync options are refused, naming the option', async (t) => {
  const redis = new MemoryRedis()
  const subscriber = new MemorySubscriber(redis)
  const { manager } = instance()
  const cases: Array<[Partial<RedisSyncOptions>, RegExp]> = [
    [{ client: undefined }, /^redis\.client must be a Redis client such as an ioredis instance$/],
    [{ client: { get: async () => null } as never }, /^redis\.client must be a Redis client/],
    [{ subscriber: undefined }, /^redis\.subscriber must be a second Redis client, for subscribing$/],
    [{ subscriber: { on: () => {} } as never }, /^redis\.subscriber must be/],
    [{ prefix: '' }, /^redis\.prefix must be a non-empty string/],
    [{ heartbeatMs: 99 }, /^redis\.heartbeatMs must be milliseconds, from 100 to 600000 \(got 99\)$/],
    [{ heartbeatMs: 600_001 }, /^redis\.heartbeatMs must be milliseconds, from 100 to 600000 \(got 600001\)$/],
    [{ heartbeatMs: 150.5 }, /^redis\.heartbeatMs must be/],
    [{ instanceId: '' }, /^redis\.instanceId must be a non-empty string \(got ""\)$/],
    [{ instanceId: 7 as never }, /^redis\.instanceId must be a non-empty string \(got 7\)$/]
  ]
  for (const [options, message] of cases) {
    await t.rejects(syncPolicyFromRedis(manager, { client: redis, subscriber, ...options } as RedisSyncOptions), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, message.source)
  }
  t.equal(subscriber.channels.size, 0, 'nothing was subscribed')
  t.equal(redis.keys.size, 0)

  const sync = await syncPolicyFromRedis(manager, { client: redis, subscriber })
  t.teardown(sync.close)
  t.match(sync.status().instance, new RegExp(`^${hostname().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}-[0-9a-f]{8}$`), 'by default, the host name and a random suffix')
  t.equal(sync.status().version, null, 'no version before the first')
})
