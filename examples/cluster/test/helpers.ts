import { Redis } from 'ioredis'

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

/** A key prefix of this test run's own, so that runs side by side count and publish apart. */
export function uniquePrefix (name: string): string {
  return `portcullis-cluster:test:${name}:${process.pid}:${Date.now()}:`
}

/** Deletes every key under the prefix. */
export async function deleteKeys (prefix: string): Promise<number> {
  const client = new Redis(REDIS_URL)
  try {
    let cursor = '0'
    let deleted = 0
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500)
      cursor = next
      if (keys.length > 0) deleted += await client.del(...keys)
    } while (cursor !== '0')
    return deleted
  } finally {
    client.disconnect()
  }
}

export async function status (url: string, headers: Record<string, string>): Promise<number> {
  const response = await fetch(url, { headers })
  await response.arrayBuffer()
  return response.status
}

export async function until (done: () => Promise<boolean>, ms = 5000): Promise<boolean> {
  const started = Date.now()
  while (Date.now() - started < ms) {
    if (await done()) return true
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return await done()
}
