import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createPrincipal, invalidOption, within, type Principal, type PrincipalInput } from '@portcullis/core'
import type { RedisLike } from './redis.js'

/** Who a key stands for: a principal without `method` and `credentialId`, which authn sets. */
export type KeyOwner = Omit<PrincipalInput, 'method' | 'credentialId'>

/** A stored API key. The key itself is never stored: only its SHA-256 hash. */
export interface ApiKeyRecord {
  /** Public identifier of the key, reported as `principal.credentialId` and in audit records. */
  id: string
  /** `sha256:` and the base64url SHA-256 of the key, as made by {@link hashApiKey}. */
  hash: string
  owner: KeyOwner
  /** The key is refused from this time on (ISO 8601 or a Date). */
  expiresAt?: string | Date
  /** The key is refused before this time. */
  notBefore?: string | Date
  revoked?: boolean
}

/** Where API keys are looked up, by hash. */
export interface ApiKeyStore {
  find: (hash: string) => ApiKeyRecord | undefined | Promise<ApiKeyRecord | undefined>
}

const HASH_PREFIX = 'sha256:'
// Keys shorter than this cannot be random enough; longer ones are not hashed at all (no free CPU for floods).
export const MIN_API_KEY_LENGTH = 16
export const MAX_API_KEY_LENGTH = 512

/**
 * Hashes an API key for storage and lookup. SHA-256 suits API keys, which are long random
 * strings: unlike passwords they cannot be guessed, so a slow hash would add cost and no safety.
 */
export function hashApiKey (key: string): string {
  return HASH_PREFIX + createHash('sha256').update(key, 'utf8').digest('base64url')
}

/**
 * Creates a new random API key. The key is returned once, to be handed to its owner; only the
 * record, which holds its hash, is kept.
 */
export function createApiKey (input: { id: string, owner: KeyOwner, expiresAt?: string | Date, notBefore?: string | Date, prefix?: string }): { key: string, record: ApiKeyRecord } {
  const key = `${input.prefix ?? 'pk_'}${randomBytes(32).toString('base64url')}`
  const { prefix: _prefix, ...rest } = input
  return { key, record: checkRecord({ ...rest, hash: hashApiKey(key) }, 'apiKey') }
}

/** An in-memory key store, optionally loaded from a JSON file of records. */
export class MemoryApiKeyStore implements ApiKeyStore {
  readonly #byHash = new Map<string, ApiKeyRecord>()
  readonly #byId = new Map<string, ApiKeyRecord>()

  constructor (records: readonly ApiKeyRecord[] = []) {
    records.forEach((record, i) => { this.add(checkRecord(record, `keys[${i}]`)) })
  }

  /** Reads records (`[{ id, hash, owner, expiresAt?, notBefore?, revoked? }]`) from a JSON file. */
  static async fromFile (file: string): Promise<MemoryApiKeyStore> {
    const records: unknown = JSON.parse(await readFile(file, 'utf8'))
    if (!Array.isArray(records)) throw invalidOption(file, 'a JSON array of API key records')
    return new MemoryApiKeyStore(records as ApiKeyRecord[])
  }

  find (hash: string): ApiKeyRecord | undefined {
    return this.#byHash.get(hash)
  }

  add (record: ApiKeyRecord): void {
    const checked = checkRecord(record, 'apiKey')
    if (this.#byId.has(checked.id)) throw invalidOption(`apiKey ${checked.id}`, 'a key id not used by another key')
    this.#byHash.set(checked.hash, checked)
    this.#byId.set(checked.id, checked)
  }

  /** Revokes a key at once. Returns false when no key has that id. */
  revoke (id: string): boolean {
    const record = this.#byId.get(id)
    if (record === undefined) return false
    this.#replace(record, { ...record, revoked: true })
    return true
  }

  /**
   * Issues a new key for the owner of key `id` and lets the old one work for `overlapSeconds`
   * more, so clients can switch without an outage. Returns the new key (shown once) and record.
   */
  rotate (id: string, newId: string, overlapSeconds: number): { key: string, record: ApiKeyRecord } {
    const old = this.#byId.get(id)
    const { created, retired } = rotation(old, id, newId, overlapSeconds)
    this.add(created.record)
    this.#replace(old as ApiKeyRecord, retired)
    return created
  }

  #replace (old: ApiKeyRecord, next: ApiKeyRecord): void {
    this.#byHash.set(old.hash, next)
    this.#byId.set(old.id, next)
  }
}

/** The new key of a rotation, and the old record with its expiry brought to the end of the overlap. */
function rotation (old: ApiKeyRecord | undefined, id: string, newId: string, overlapSeconds: number): { created: { key: string, record: ApiKeyRecord }, retired: ApiKeyRecord } {
  if (old === undefined) throw invalidOption('rotate id', 'the id of a stored key', id)
  if (!Number.isInteger(overlapSeconds) || overlapSeconds < 0) throw invalidOption('overlapSeconds', 'a whole number of seconds, 0 or more', overlapSeconds)
  const end = new Date(Date.now() + overlapSeconds * 1000)
  const current = old.expiresAt === undefined ? undefined : new Date(old.expiresAt)
  return {
    created: createApiKey({ id: newId, owner: old.owner }),
    retired: { ...old, expiresAt: current !== undefined && current < end ? current : end }
  }
}

/** Verifies a presented API key against a store; `null` when it is not a valid key right now. */
export async function verifyApiKey (store: ApiKeyStore, presented: string, now = Date.now()): Promise<{ record: ApiKeyRecord, principal: Principal } | null> {
  if (presented.length < MIN_API_KEY_LENGTH || presented.length > MAX_API_KEY_LENGTH) return null
  const hash = hashApiKey(presented)
  const record = await store.find(hash)
  // The lookup matched on the hash; the constant-time comparison guards stores that match loosely.
  if (record === undefined || !sameHash(record.hash, hash)) return null
  if (record.revoked === true) return null
  if (record.notBefore !== undefined && now < new Date(record.notBefore).getTime()) return null
  if (record.expiresAt !== undefined && now >= new Date(record.expiresAt).getTime()) return null
  return { record, principal: createPrincipal({ ...record.owner, method: 'api-key', credentialId: record.id }) }
}

function sameHash (a: string, b: string): boolean {
  const left = Buffer.from(a)
  const right = Buffer.from(b)
  return left.length === right.length && timingSafeEqual(left, right)
}

function checkRecord (record: ApiKeyRecord, path: string): ApiKeyRecord {
  if (typeof record !== 'object' || record === null) throw invalidOption(path, 'an API key record { id, hash, owner }', record)
  if (typeof record.id !== 'string' || record.id === '') throw invalidOption(`${path}.id`, 'a non-empty string', record.id)
  if (typeof record.hash !== 'string' || !/^sha256:[A-Za-z0-9_-]{43}$/.test(record.hash)) {
    throw invalidOption(`${path}.hash`, 'a hash made by hashApiKey() ("sha256:" and 43 base64url characters)')
  }
  for (const field of ['expiresAt', 'notBefore'] as const) {
    const value = record[field]
    if (value !== undefined && Number.isNaN(new Date(value).getTime())) throw invalidOption(`${path}.${field}`, 'an ISO 8601 time or a Date', value)
  }
  try {
    createPrincipal({ ...record.owner, method: 'api-key' })
  } catch (err) {
    throw invalidOption(`${path}.owner`, `a valid principal: ${(err as Error).message}`)
  }
  return Object.freeze({ ...record })
}

/**
 * API keys shared by every instance through Redis: each record is stored under its hash, and
 * an index from key id to hash serves `revoke()`.
 */
export class RedisApiKeyStore implements ApiKeyStore {
  readonly #client: RedisLike
  readonly #prefix: string
  readonly #timeout: number

  constructor (options: { client: RedisLike, prefix?: string, timeoutMs?: number }) {
    if (typeof options?.client?.get !== 'function') throw invalidOption('apiKeyStore.client', 'a Redis client such as an ioredis instance')
    this.#client = options.client
    this.#prefix = options.prefix ?? 'portcullis:apikey:'
    this.#timeout = options.timeoutMs ?? 200
  }

  async find (hash: string): Promise<ApiKeyRecord | undefined> {
    const text = await within(this.#client.get(`${this.#prefix}hash:${hash}`), this.#timeout)
    return text === null ? undefined : JSON.parse(text) as ApiKeyRecord
  }

  async add (record: ApiKeyRecord): Promise<void> {
    const checked = checkRecord(record, 'apiKey')
    const taken = await within(this.#client.set(`${this.#prefix}id:${checked.id}`, checked.hash, 'NX'), this.#timeout)
    if (taken === null) throw invalidOption(`apiKey ${checked.id}`, 'a key id not used by another key')
    await this.#put(checked)
  }

  /** Revokes a key for every instance at once. Returns false when no key has that id. */
  async revoke (id: string): Promise<boolean> {
    const record = await this.#byId(id)
    if (record === undefined) return false
    await this.#put({ ...record, revoked: true })
    return true
  }

  /** As `MemoryApiKeyStore.rotate()`, for every instance at once. */
  async rotate (id: string, newId: string, overlapSeconds: number): Promise<{ key: string, record: ApiKeyRecord }> {
    const { created, retired } = rotation(await this.#byId(id), id, newId, overlapSeconds)
    await this.add(created.record)
    await this.#put(retired)
    return created
  }

  async #byId (id: string): Promise<ApiKeyRecord | undefined> {
    const hash = await within(this.#client.get(`${this.#prefix}id:${id}`), this.#timeout)
    return hash === null ? undefined : await this.find(hash)
  }

  async #put (record: ApiKeyRecord): Promise<void> {
    await within(this.#client.set(`${this.#prefix}hash:${record.hash}`, JSON.stringify(record)), this.#timeout)
  }
}
