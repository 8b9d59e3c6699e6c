import { Transform, type TransformCallback } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import { PayloadTooLarge } from '@portcullis/core'

/**
 * Holds every request body to `bodyLimit` bytes, whether a parser reads it or it is streamed to
 * an upstream as it arrives (Fastify's own limit covers parsed bodies only). A declared length
 * over the limit is refused before anything is read; a chunked body is counted as it streams and
 * cut off with 413 at the limit.
 */
export function limitBodies (app: FastifyInstance, bodyLimit: number): void {
  app.addHook('preParsing', (request, _reply, payload, done) => {
    const length = request.headers['content-length']
    // Node's parser never lets a body run past its declared length.
    if (length !== undefined) return done(Number(length) > bodyLimit ? new PayloadTooLarge() : null, payload)
    if (request.headers['transfer-encoding'] === undefined) return done(null, payload)
    const cap = new BodyCap(bodyLimit)
    // A client that goes away mid-body ends the capped stream too, with its error.
    payload.on('error', (err) => { cap.destroy(err) })
    // Past the limit, the rest is read and dropped rather than the connection torn down, so that
    // the client gets its 413 (and its connection is closed after it).
    cap.on('error', () => {
      payload.unpipe(cap)
      payload.resume()
    })
    done(null, payload.pipe(cap))
  })
}

class BodyCap extends Transform {
  #left: number

  constructor (limit: number) {
    super()
    this.#left = limit
  }

  override _transform (chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#left -= chunk.length
    callback(this.#left < 0 ? new PayloadTooLarge() : null, chunk)
  }
}

/**
 * What the listener is created with: the header size limit, and how often Node checks connections
 * against `requestTimeout`: every second, where Node's default of 30 s would let a slow request
 * run up to 30 s past its limit.
 */
export function listenerOptions ({ maxHeaderSize }: { maxHeaderSize: number }): { maxHeaderSize: number, connectionsCheckingInterval: number } {
  return { maxHeaderSize, connectionsCheckingInterval: 1000 }
}
