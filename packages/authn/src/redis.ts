/**
 * The few Redis commands the stores use, as ioredis (and node-redis with legacy mode) offer
 * them. Any such client fits; the package does not depend on one.
 */
export interface RedisLike {
  get: (key: string) => Promise<string | null>
  set: (key: string, value: string, ...args: Array<string | number>) => Promise<unknown>
  exists: (...keys: string[]) => Promise<number>
}
