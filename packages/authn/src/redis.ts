/**
 * The few Redis commands the stores use, as ioredis (and node-redis with legacy mode) offer
 * them. Any such client fits; the package does not depend on one.
 */
export interface RedisLike {
  get: (key: string) => Promise<string | null>
  set: (key: string, value: string, ...args: Array<string | number>) => Promise<unknown>
  exists: (...keys: string[]) => Promise<number>
}

/** Rejects when `promise` does not settle within `ms`: a slow store must not hold requests. */
export async function within<T> (promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`no answer within ${ms} ms`)) }, ms) })
    ])
  } finally {
    clearTimeout(timer)
  }
}
