import { Readable } from 'node:stream'

/** What `readPayload` read: the whole body as text, or, past the limit, a stream that still holds all of it. */
export type ReadPayload = { text: string, payload: string | Buffer } | { text: null, payload: Readable }

/**
 * A response body as an `onSend` hook receives it (a string, a buffer or a stream, such as a
 * proxied answer), read in full as UTF-8 text when it is at most `maxBytes` long. A longer stream
 * is not lost: `payload` is then a stream that gives the bytes already read, then the rest.
 */
export async function readPayload (payload: string | Buffer | Readable, maxBytes: number): Promise<ReadPayload> {
  if (typeof payload === 'string' || Buffer.isBuffer(payload)) {
    const length = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length
    if (length <= maxBytes) return { text: payload.toString(), payload }
    return { text: null, payload: Readable.from([payload]) }
  }
  const chunks: Buffer[] = []
  let size = 0
  const iterator = payload[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>
  for (;;) {
    const next = await iterator.next()
    if (next.done === true) {
      const whole = Buffer.concat(chunks)
      return { text: whole.toString('utf8'), payload: whole }
    }
    const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value)
    chunks.push(chunk)
    size += chunk.length
    if (size > maxBytes) return { text: null, payload: Readable.from(replay(chunks, iterator)) }
  }
}

async function * replay (read: Buffer[], rest: AsyncIterator<Buffer | string>): AsyncGenerator<Buffer | string> {
  yield * read
  for (;;) {
    const next = await rest.next()
    if (next.done === true) return
    yield next.value
  }
}

/** Whether a `Content-Type` value is JSON: `application/json` or `application/…+json`, with any parameters. */
export function isJsonMediaType (type: unknown): boolean {
  return typeof type === 'string' && /^\s*application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i.test(type)
}
