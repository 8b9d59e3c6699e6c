import { mkdir, open, rename, stat, unlink, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import { BaseSink, type RecoveryListener, type Sink, type SinkStats } from './sink.js'
import { DEFAULT_FLUSH_BYTES, DEFAULT_FLUSH_INTERVAL, DEFAULT_MAX_BUFFER_BYTES, DEFAULT_RETRY, type FileSinkOptions } from './options.js'

// How much of a file's end is read to find its last record, to go on with its chain.
const TAIL_BYTES = 256 * 1024

/**
 * Appends records to a file, in batches (every `flushInterval`, or once 64 KiB wait), one write
 * in flight at a time. A failing write keeps
 * its bytes and is tried again on a reopened file, after a delay that doubles; meanwhile
 * records wait in a bounded buffer, and what does not fit is dropped and counted.
 */
export class FileSink extends BaseSink implements Sink {
  readonly path: string
  readonly #maxSize: number | undefined
  readonly #maxFiles: number
  readonly #maxBytes: number
  readonly #flushInterval: number
  readonly #minDelay: number
  readonly #maxDelay: number
  #file: FileHandle | null
  #size: number
  #queue: string[] = []
  #queuedBytes = 0
  // Bytes taken from the queue and not yet all written, and how many records they hold.
  #pending: Buffer | null = null
  #pendingRecords = 0
  #pendingUnits = 0
  #busy = false
  #failing = false
  #delay: number
  #retry: NodeJS.Timeout | null = null
  #timer: NodeJS.Timeout | null = null
  #reopen = false
  #idle: Array<() => void> = []
  #closed = false

  private constructor (options: FileSinkOptions, file: FileHandle, size: number, onRecover: RecoveryListener) {
    super(`file:${options.path}`, onRecover)
    this.path = options.path
    this.#maxSize = options.maxSize
    this.#maxFiles = options.maxFiles ?? 10
    this.#maxBytes = options.maxBufferBytes ?? DEFAULT_MAX_BUFFER_BYTES
    this.#flushInterval = options.flushInterval ?? DEFAULT_FLUSH_INTERVAL
    this.#minDelay = options.retry?.minDelay ?? DEFAULT_RETRY.minDelay
    this.#maxDelay = options.retry?.maxDelay ?? DEFAULT_RETRY.maxDelay
    this.#delay = this.#minDelay
    this.#file = file
    this.#size = size
  }

  /** Opens (or creates) the file; fails when it cannot be written. Also returns its last record. */
  static async open (options: FileSinkOptions, onRecover: RecoveryListener): Promise<{ sink: FileSink, lastLine: string | null }> {
    const file = await openAppending(options.path)
    const { size } = await file.stat()
    const lastLine = size > 0 ? await lastLineOf(file, size) : await lastLineOfPath(`${options.path}.1`)
    return { sink: new FileSink(options, file, size, onRecover), lastLine }
  }

  get healthy (): boolean {
    return !this.#failing && !this.#closed && this.#queuedBytes < this.#maxBytes
  }

  write (line: string): boolean {
    // Counted in UTF-16 units: close enough to bytes for a bound, and free.
    const bytes = line.length + 1
    if (this.#closed || this.#queuedBytes + bytes > this.#maxBytes) {
      this.drop(1)
      return false
    }
    this.#queue.push(line)
    this.#queuedBytes += bytes
    // Written once enough waits, or the interval is up: one write for many records.
    if (this.#queuedBytes >= DEFAULT_FLUSH_BYTES) this.#schedule()
    else this.#timer ??= setTimeout(() => { this.#timer = null; this.#schedule() }, this.#flushInterval).unref()
    return true
  }

  stats (): SinkStats {
    return { name: this.name, healthy: this.healthy, written: this.written, dropped: this.dropped, buffered: this.#queuedBytes, lastError: this.lastError }
  }

  /** Closes and opens the file again, after what is buffered: for rotation by another program (logrotate). */
  async reopen (): Promise<void> {
    this.#reopen = true
    this.#schedule()
    await this.flush()
  }

  async flush (): Promise<void> {
    if (this.#queue.length > 0) this.#schedule()
    if (!this.#busy) return
    await new Promise<void>((resolve) => { this.#idle.push(resolve) })
  }

  async close (): Promise<void> {
    await this.flush()
    this.#closed = true
    if (this.#retry !== null) clearTimeout(this.#retry)
    if (this.#timer !== null) clearTimeout(this.#timer)
    // What could not be written by now is lost: counted as dropped.
    const lost = this.#pendingRecords + this.#queue.length
    if (lost > 0) this.drop(lost)
    this.#queue = []
    this.#queuedBytes = 0
    await this.#file?.close().catch(() => {})
    this.#file = null
  }

  #schedule (): void {
    if (!this.#busy && !this.#failing) this.#start()
  }

  #start (): void {
    this.#busy = true
    setImmediate(() => { this.#drain() })
  }

  async #drain (): Promise<void> {
    try {
      if (this.#reopen || this.#file === null) {
        this.#reopen = false
        await this.#file?.close().catch(() => {})
        this.#file = null
        this.#file = await openAppending(this.path)
        this.#size = (await this.#file.stat()).size
      }
      while (this.#pending !== null || this.#queue.length > 0) {
        if (this.#pending === null) {
          const lines = this.#queue.splice(0, this.#fitting())
          const text = `${lines.join('\n')}\n`
          this.#pending = Buffer.from(text)
          this.#pendingRecords = lines.length
          this.#pendingUnits = text.length
        }
        await this.#writePending(this.#file as FileHandle)
        if (this.#maxSize !== undefined && this.#size >= this.#maxSize) await this.#rotate()
      }
    } catch (err) {
      this.#fail(err as NodeJS.ErrnoException)
      return
    }
    this.#busy = false
    for (const resolve of this.#idle.splice(0)) resolve()
  }

  async #writePending (file: FileHandle): Promise<void> {
    const pending = this.#pending as Buffer
    let offset = 0
    try {
      while (offset < pending.length) {
        const { bytesWritten } = await file.write(pending, offset, pending.length - offset)
        offset += bytesWritten
      }
    } finally {
      // A write cut short keeps only what is left, so that no record is written twice.
      this.#pending = offset < pending.length ? pending.subarray(offset) : null
      this.#size += offset
    }
    this.#queuedBytes -= this.#pendingUnits
    this.written += this.#pendingRecords
    this.#pendingRecords = 0
    if (this.#failing) {
      this.#failing = false
      this.#delay = this.#minDelay
    }
    this.recovered()
  }

  // How many queued records to write now: all of them, or with rotation on, those that fill the file (at least one).
  #fitting (): number {
    if (this.#maxSize === undefined) return this.#queue.length
    let bytes = this.#size
    let count = 0
    while (count < this.#queue.length && bytes < this.#maxSize) bytes += Buffer.byteLength(this.#queue[count++] as string) + 1
    return count
  }

  #fail (err: NodeJS.ErrnoException): void {
    this.#failing = true
    this.lastError = String(err.code)
    this.#busy = false
    for (const resolve of this.#idle.splice(0)) resolve()
    // Still failing until a write succeeds: the retry reopens the file and tries again.
    this.#retry = setTimeout(() => {
      this.#retry = null
      this.#reopen = true
      this.#start()
    }, this.#delay)
    this.#retry.unref()
    this.#delay = Math.min(this.#delay * 2, this.#maxDelay)
  }

  // audit.log becomes audit.log.1, audit.log.1 becomes audit.log.2, …; the oldest beyond maxFiles goes.
  async #rotate (): Promise<void> {
    await (this.#file as FileHandle).close()
    this.#file = null
    // Older files are moved on as far as they can be (most are simply not there yet).
    await unlink(`${this.path}.${this.#maxFiles}`).catch(() => {})
    for (let i = this.#maxFiles - 1; i >= 1; i--) await rename(`${this.path}.${i}`, `${this.path}.${i + 1}`).catch(() => {})
    await rename(this.path, `${this.path}.1`)
    this.#file = await openAppending(this.path)
    this.#size = 0
  }
}

async function openAppending (path: string): Promise<FileHandle> {
  await mkdir(dirname(path), { recursive: true })
  // Readable too: its last record is read to go on with its chain.
  return await open(path, 'a+', 0o640)
}

async function lastLineOfPath (path: string): Promise<string | null> {
  const size = await stat(path).then((s) => s.size, () => 0)
  if (size === 0) return null
  const file = await open(path, 'r')
  try {
    return await lastLineOf(file, size)
  } finally {
    await file.close()
  }
}

async function lastLineOf (file: FileHandle, size: number): Promise<string | null> {
  const length = Math.min(size, TAIL_BYTES)
  const { buffer } = await file.read(Buffer.alloc(length), 0, length, size - length)
  const lines = buffer.toString('utf8').split('\n').filter((line) => line !== '')
  return lines.at(-1) ?? null
}
