import type { Writable } from 'node:stream'
import { LineBuffer } from './lines.js'
import { DEFAULT_FLUSH_BYTES } from './options.js'

/** What a sink reports in `app.audit.stats()`. */
export interface SinkStats {
  name: string
  /** Whether it takes records now (not failing, buffer not full). */
  healthy: boolean
  /** Records it has delivered (written to its file or stream, accepted by its collector). */
  written: number
  /** Records it has dropped: its buffer was full, or it was closed or refused them. */
  dropped: number
  /** Records (or, for streams and files, bytes) waiting. */
  buffered: number
  /** The last failure, as an error code or HTTP status; never a message that could hold a secret. */
  lastError: string | null
}

/** Called when a sink that dropped records takes them again: how many it dropped, and since when. */
export type RecoveryListener = (sink: Sink, dropped: number, since: number) => void

/** Where records go. Writing never blocks: a sink buffers up to a bound, then drops and counts. */
export interface Sink {
  readonly name: string
  readonly healthy: boolean
  /** Takes one record (a JSON line without its newline); false when it had to drop it. */
  write: (line: string) => boolean
  stats: () => SinkStats
  /** Resolves once what is buffered is delivered, or delivery has failed for now. */
  flush: () => Promise<void>
  /** Delivers what it can, then releases its resources. */
  close: () => Promise<void>
}

/** Drop accounting shared by the sinks: drops are counted, then reported once the sink recovers. */
export abstract class BaseSink {
  readonly name: string
  protected written = 0
  protected dropped = 0
  protected lastError: string | null = null
  #unreported = 0
  #since = 0
  readonly #onRecover: RecoveryListener

  constructor (name: string, onRecover: RecoveryListener) {
    this.name = name
    this.#onRecover = onRecover
  }

  protected drop (count: number): void {
    if (this.#unreported === 0) this.#since = Date.now()
    this.#unreported += count
    this.dropped += count
  }

  /** The sink takes records again: what it dropped meanwhile is reported, once. */
  protected recovered (): void {
    if (this.#unreported === 0) return
    const count = this.#unreported
    this.#unreported = 0
    this.#onRecover(this as unknown as Sink, count, this.#since)
  }
}

/**
 * Records as JSON lines on a writable stream: the process's stdout, or one of yours. Lines are
 * handed over in batches (every `flushInterval`, or once 64 KiB wait), never waiting on the
 * stream: what it has not taken counts against the bound.
 */
export class StreamSink extends BaseSink implements Sink {
  readonly #stream: Writable
  readonly #maxBytes: number
  readonly #flushInterval: number
  readonly #lines = new LineBuffer(false)
  #timer: NodeJS.Timeout | null = null
  #broken = false

  constructor (name: string, stream: Writable, maxBytes: number, flushInterval: number, onRecover: RecoveryListener) {
    super(name, onRecover)
    this.#stream = stream
    this.#maxBytes = maxBytes
    this.#flushInterval = flushInterval
    stream.on('drain', () => { this.recovered() })
    stream.on('error', (err: NodeJS.ErrnoException) => {
      this.#broken = true
      this.lastError = err.code ?? 'ERROR'
    })
  }

  get healthy (): boolean {
    return !this.#broken && this.#lines.bytes + this.#stream.writableLength < this.#maxBytes
  }

  write (line: string): boolean {
    if (!this.healthy) {
      this.drop(1)
      return false
    }
    this.recovered()
    this.#lines.push(line)
    if (this.#lines.bytes >= DEFAULT_FLUSH_BYTES) this.#handOver()
    else this.#timer ??= setTimeout(() => { this.#handOver() }, this.#flushInterval).unref()
    return true
  }

  stats (): SinkStats {
    return { name: this.name, healthy: this.healthy, written: this.written, dropped: this.dropped, buffered: this.#lines.bytes + this.#stream.writableLength, lastError: this.lastError }
  }

  async flush (): Promise<void> {
    this.#handOver()
    if (this.#broken || this.#stream.writableLength === 0) return
    // An empty write completes after every write before it.
    await new Promise<void>((resolve) => { this.#stream.write('', () => { resolve() }) })
  }

  // The stream is the caller's (or the process's): it is flushed, never ended.
  async close (): Promise<void> {
    await this.flush()
  }

  #handOver (): void {
    if (this.#timer !== null) {
      clearTimeout(this.#timer)
      this.#timer = null
    }
    // A stream that failed meanwhile takes nothing more: what waited is dropped.
    if (this.#broken) {
      const lost = this.#lines.clear()
      if (lost > 0) this.drop(lost)
      return
    }
    const taken = this.#lines.take()
    if (taken === null) return
    const last = taken.buffers.length - 1
    for (let i = 0; i < last; i++) this.#stream.write(taken.buffers[i])
    // Once the stream is done with them, the chunks are filled again.
    this.#stream.write(taken.buffers[last], () => { this.#lines.recycle(taken.emptied) })
    this.written += taken.lines
  }
}
