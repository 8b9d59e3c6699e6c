import { checkNumber, invalidOption, within, type Principal } from '@portcullis/core'
import type { RedisLike } from './redis.js'

/** Where revoked credentials are kept until they would have expired anyway. */
export interface RevocationStore {
  /** Revokes the credential identified by `key` (see {@link revocationKey}) until `untilMs` (epoch ms). */
  revoke: (key: string, untilMs: number) => Promise<void>
  isRevoked: (key: string) => Promise<boolean>
}

/**
 * The revocation key of a principal's credential: its method and credential id, such as
 * `jwt:<jti>` or `api-key:<key id>`. `undefined` when the credential has no id to revoke by.
 */
export function revocationKey (principal: Pick<Principal, 'method' | 'credentialId'>): string | undefined {
  return principal.credentialId === undefined ? undefined : `${principal.method}:${principal.credentialId}`
}

/** Revocations held in this process: for a single instance, or tests. */
export class MemoryRevocationStore implements RevocationStore {
  readonly #until = new Map<string, number>()

  async revoke (key: string, untilMs: number): Promise<void> {
    checkRevocation(key, untilMs)
    this.#until.set(key, Math.max(untilMs, this.#until.get(key) ?? 0))
  }

  async isRevoked (key: string): Promise<boolean> {
    const until = this.#until.get(key)
    if (until === undefined) return false
    if (until > Date.now()) return true
    this.#until.delete(key) // past its expiry the credential is refused anyway
    return false
  }
}

export interface RedisRevocationOptions {
  client: RedisLike
  /** @default 'portcullis:revoked:' */
  prefix?: string
  /** How long a "not revoked" answer may be reused, in ms: the delay before every instance sees a revocation. @default 1000 */
  maxStalenessMs?: number
  /** How long to wait for Redis before refusing the request (503). @default 200 */
  timeoutMs?: number
  /** How many "not revoked" answers to keep. @default 10000 */
  cacheSize?: number
}

/**
 * Revocations shared by every instance through Redis. Each revocation is a key that expires when
 * the credential would have. A "not revoked" answer is reused for at most `maxStalenessMs`, so a
 * revocation reaches every instance within that time while hot credentials cost no round trip.
 */
export class RedisRevocationStore implements RevocationStore {
  readonly #client: RedisLike
  readonly #prefix: string
  readonly #staleness: number
  readonly #timeout: number
  readonly #size: number
  readonly #checked = new Map<string, number>()

  constructor (options: RedisRevocationOptions) {
    if (typeof options?.client?.exists !== 'function' || typeof options.client.set !== 'function') throw invalidOption('revocation.client', 'a Redis client such as an ioredis instance')
    this.#client = options.client
    this.#prefix = options.prefix ?? 'portcullis:revoked:'
    this.#staleness = nonNegative(options.maxStalenessMs, 1000, 'revocation.maxStalenessMs')
    this.#timeout = nonNegative(options.timeoutMs, 200, 'revocation.timeoutMs')
    this.#size = nonNegative(options.cacheSize, 10_000, 'revocation.cacheSize')
  }

  async revoke (key: string, untilMs: number): Promise<void> {
    checkRevocation(key, untilMs)
    if (untilMs <= Date.now()) return
    await within(this.#client.set(this.#prefix + key, '1', 'PXAT', Math.ceil(untilMs)), this.#timeout)
    this.#checked.delete(key)
  }

  async isRevoked (key: string): Promise<boolean> {
    const fresh = this.#checked.get(key)
    if (fresh !== undefined && fresh > Date.now()) return false
    const revoked = await within(this.#client.exists(this.#prefix + key), this.#timeout) > 0
    if (revoked) {
      this.#checked.delete(key)
    } else if (this.#staleness > 0) {
      if (this.#checked.size >= this.#size) this.#checked.delete(this.#checked.keys().next().value as string)
      this.#checked.set(key, Date.now() + this.#staleness)
    }
    return revoked
  }
}

function checkRevocation (key: string, untilMs: number): void {
  if (typeof key !== 'string' || key === '') throw invalidOption('revoke key', 'a revocation key such as "jwt:<jti>"', key)
  if (!Number.isFinite(untilMs)) throw invalidOption('revoke untilMs', 'a time in epoch milliseconds', untilMs)
}

function nonNegative (value: unknown, fallback: number, path: string): number {
  return checkNumber(value, fallback, path, 'a whole number, 0 or more', (n) => Number.isInteger(n) && n >= 0)
}
