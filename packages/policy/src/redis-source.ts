import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import { checkNumber, invalidOption } from '@portcullis/core'
import type { PolicyManager } from './manager.js'
import { parsePolicy } from './document.js'
import { policyVersion } from './version.js'

/** The Redis commands the fleet sync uses, as ioredis offers them (overloads, so that an ioredis client fits as it is). */
export interface PolicyRedis {
  get (key: string): Promise<string | null>
  set (key: string, value: string): Promise<unknown>
  set (key: string, value: string, expiry: 'PX', milliseconds: number): Promise<unknown>
  publish (channel: string, message: string): Promise<unknown>
  scan (cursor: string, match: 'MATCH', pattern: string, count: 'COUNT', size: number): Promise<[string, string[]]>
  mget (...keys: string[]): Promise<Array<string | null>>
}

/** A connection in subscriber mode (ioredis: a second client). */
export interface PolicySubscriber {
  subscribe (channel: string): Promise<unknown>
  on (event: 'message' | 'ready', listener: (...args: string[]) => void): unknown
  removeListener (event: 'message' | 'ready', listener: (...args: string[]) => void): unknown
}

/** The version Redis holds for the fleet. */
export interface PublishedPolicy {
  version: string
  text: string
  signature?: string
  publishedAt: string
  /** Who published it, when told. */
  actor?: string
}

/** What one instance reports: the version it runs, and the last one it refused, if any. */
export interface InstanceStatus {
  instance: string
  host: string
  /** The version it enforces; `null` before its first. */
  version: string | null
  /** The version it was last asked to run and refused, with why. */
  refused?: { version: string | null, reason: string }
  /** When it last reported. */
  at: string
}

export interface RedisSyncOptions {
  /** Commands: reads the published version, and reports this instance's. */
  client: PolicyRedis
  /** A second connection, in subscriber mode, that hears of new versions at once. */
  subscriber: PolicySubscriber
  /** Prepended to every key and channel. @default 'portcullis:policy:' */
  prefix?: string
  /** This instance's name in reports. @default host name and a random suffix */
  instanceId?: string
  /** How often this instance reports its version, in ms; a report lives three times as long. @default 5000 */
  heartbeatMs?: number
  /** Called with each outcome of applying a published version. */
  onUpdate?: (outcome: { version: string } | { error: Error }) => void
}

/** What {@link syncPolicyFromRedis} returns. */
export interface RedisSync {
  /** Reads the published version now and applies it if it is not running yet. */
  refresh: () => Promise<void>
  /** This instance's report, as the fleet sees it. */
  status: () => InstanceStatus
  close: () => Promise<void>
}

export const DEFAULT_REDIS_PREFIX = 'portcullis:policy:'
const DEFAULT_HEARTBEAT_MS = 5000

/**
 * Publishes a policy document for every instance that syncs from the same Redis and prefix: it
 * becomes the fleet's version, and each instance applies it at once (checking it, and its
 * signature, as any update). The document is parsed first, so nothing that does not parse is
 * ever published; resolves to what was published.
 */
export async function publishPolicy (client: Pick<PolicyRedis, 'set' | 'publish'>, text: string, options: { prefix?: string | undefined, signature?: string | undefined, actor?: string | undefined, name?: string | undefined } = {}): Promise<PublishedPolicy> {
  const prefix = checkPrefix(options.prefix)
  const version = policyVersion(parsePolicy(text, options.name).data)
  const published: PublishedPolicy = {
    version,
    text,
    ...(options.signature === undefined ? {} : { signature: options.signature }),
    publishedAt: new Date().toISOString(),
    ...(options.actor === undefined ? {} : { actor: options.actor })
  }
  await client.set(`${prefix}current`, JSON.stringify(published))
  await client.publish(`${prefix}updates`, version)
  return published
}

/** The version Redis holds for the fleet, or `null` when none was published. */
export async function publishedPolicy (client: Pick<PolicyRedis, 'get'>, prefix?: string): Promise<PublishedPolicy | null> {
  const text = await client.get(`${checkPrefix(prefix)}current`)
  return text === null ? null : JSON.parse(text) as PublishedPolicy
}

/** What every instance that syncs from this Redis and prefix reported last, by instance name. */
export async function fleetStatus (client: Pick<PolicyRedis, 'scan' | 'mget'>, prefix?: string): Promise<InstanceStatus[]> {
  const pattern = `${checkPrefix(prefix)}instances:*`
  const keys: string[] = []
  let cursor = '0'
  do {
    const [next, found] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 100)
    cursor = next
    keys.push(...found)
  } while (cursor !== '0')
  if (keys.length === 0) return []
  const reports = await client.mget(...keys)
  return reports.filter((report): report is string => report !== null).map((report) => JSON.parse(report) as InstanceStatus).sort((a, b) => a.instance.localeCompare(b.instance))
}

/**
 * Keeps a policy manager on the version published in Redis: reads it at start, applies each new
 * one as soon as it is announced, and reads again after a lost connection, so no announcement is
 * missed for long. Each instance reports the version it runs (and any it refused) under
 * `<prefix>instances:<id>`, refreshed every `heartbeatMs`. An instance that refuses a version
 * keeps its own and says so; the others are not held back by it.
 */
export async function syncPolicyFromRedis<C> (manager: PolicyManager<C>, options: RedisSyncOptions): Promise<RedisSync> {
  const { client, subscriber } = options
  if (typeof client?.get !== 'function' || typeof client.publish !== 'function') throw invalidOption('redis.client', 'a Redis client such as an ioredis instance')
  if (typeof subscriber?.subscribe !== 'function') throw invalidOption('redis.subscriber', 'a second Redis client, for subscribing')
  const prefix = checkPrefix(options.prefix)
  const heartbeatMs = checkNumber(options.heartbeatMs, DEFAULT_HEARTBEAT_MS, 'redis.heartbeatMs', 'milliseconds, from 100 to 600000', (n) => Number.isInteger(n) && n >= 100 && n <= 600_000)
  const instance = options.instanceId ?? `${hostname()}-${randomUUID().slice(0, 8)}`
  if (typeof instance !== 'string' || instance === '') throw invalidOption('redis.instanceId', 'a non-empty string', instance)
  const onUpdate = options.onUpdate ?? (() => {})
  let refused: InstanceStatus['refused']
  let closed = false

  const status = (): InstanceStatus => ({
    instance,
    host: hostname(),
    version: manager.active?.version ?? null,
    ...(refused === undefined ? {} : { refused }),
    at: new Date().toISOString()
  })
  const report = async (): Promise<void> => {
    await client.set(`${prefix}instances:${instance}`, JSON.stringify(status()), 'PX', heartbeatMs * 3).catch(() => {})
  }
  const refresh = async (): Promise<void> => {
    if (closed) return
    let published: PublishedPolicy | null
    try {
      published = await publishedPolicy(client, prefix)
    } catch (err) {
      onUpdate({ error: err as Error })
      return
    }
    if (published === null || published.version === manager.active?.version) return
    try {
      const active = await manager.apply(published.text, { source: 'redis', name: `redis:${prefix}current`, ...(published.signature === undefined ? {} : { signature: published.signature }), ...(published.actor === undefined ? {} : { actor: published.actor }) })
      refused = undefined
      onUpdate({ version: active.version })
    } catch (err) {
      refused = { version: (err as { version?: string }).version ?? null, reason: (err as Error).message }
      onUpdate({ error: err as Error })
    }
    await report()
  }

  const onMessage = (channel: string): void => {
    if (channel === `${prefix}updates`) refresh().catch(() => {})
  }
  // After a reconnection: announcements made meanwhile were lost, so read what is published.
  const onReady = (): void => { refresh().catch(() => {}) }
  subscriber.on('message', onMessage)
  subscriber.on('ready', onReady)
  await subscriber.subscribe(`${prefix}updates`)
  await refresh()
  await report()
  const timer = setInterval(() => { report().catch(() => {}) }, heartbeatMs).unref()

  return {
    refresh,
    status,
    close: async () => {
      closed = true
      clearInterval(timer)
      subscriber.removeListener('message', onMessage)
      subscriber.removeListener('ready', onReady)
    }
  }
}

function checkPrefix (prefix: unknown): string {
  if (prefix === undefined) return DEFAULT_REDIS_PREFIX
  if (typeof prefix !== 'string' || prefix === '') throw invalidOption('redis.prefix', 'a non-empty string such as "portcullis:policy:"', prefix)
  return prefix
}
