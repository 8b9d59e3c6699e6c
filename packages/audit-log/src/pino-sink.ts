import { once } from 'node:events'
import pino from 'pino'
import { BaseSink, type RecoveryListener, type Sink, type SinkStats } from './sink.js'
import type { PinoSinkOptions } from './options.js'

interface TransportStream extends NodeJS.WritableStream {
  flush: (cb: (err?: Error) => void) => void
  end: () => this
}

/**
 * Hands records to a pino transport, which runs in a worker thread: pino-elasticsearch,
 * pino-loki, pino-socket, pino/file, or one of your own. While the transport's buffer is full,
 * records are dropped and counted until it drains.
 */
export class PinoSink extends BaseSink implements Sink {
  readonly #stream: TransportStream
  #full = false
  #broken = false

  private constructor (target: string, stream: TransportStream, onRecover: RecoveryListener) {
    super(`pino:${target}`, onRecover)
    this.#stream = stream
    stream.on('drain', () => {
      this.#full = false
      this.recovered()
    })
    stream.on('error', (err: NodeJS.ErrnoException) => {
      this.#broken = true
      this.lastError = err.code ?? 'ERROR'
    })
  }

  /** Starts the transport; fails when its module cannot be loaded or does not start. */
  static async open (options: PinoSinkOptions, onRecover: RecoveryListener): Promise<PinoSink> {
    const stream = pino.transport({ target: options.target, options: options.options ?? {} }) as unknown as TransportStream
    await once(stream, 'ready')
    return new PinoSink(options.target, stream, onRecover)
  }

  get healthy (): boolean {
    return !this.#full && !this.#broken
  }

  write (line: string): boolean {
    if (!this.healthy) {
      this.drop(1)
      return false
    }
    this.#full = !this.#stream.write(`${line}\n`)
    this.written++
    return true
  }

  stats (): SinkStats {
    return { name: this.name, healthy: this.healthy, written: this.written, dropped: this.dropped, buffered: 0, lastError: this.lastError }
  }

  async flush (): Promise<void> {
    if (this.#broken) return
    await new Promise<void>((resolve) => { this.#stream.flush(() => { resolve() }) })
  }

  async close (): Promise<void> {
    // A failed transport's worker is gone already.
    if (this.#broken) return
    await this.flush()
    // 'finish' once the worker has taken everything; its thread then ends on its own.
    const finished = once(this.#stream, 'finish')
    this.#stream.end()
    await finished
  }
}
