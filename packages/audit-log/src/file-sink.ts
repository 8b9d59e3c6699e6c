import { mkdir, open, rename, stat, unlink, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import { LineBuffer, type TakenLines } from './lines.js'
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
  readonly #lines: LineBuffer
  // Records taken from the buffer and not yet all written: counted as buffered until they are.
  #pending: TakenLines | null = null
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
    // With rotation, a write stops where the file is full, at the end of a record.
    this.#lines = new LineBuffer(this.#maxSize !== undefined)
  }

  /** Opens (or creates) the file; fails when it cannot be written. Also returns its last record. */
  static async open (options: FileSinkOptions, onRecover: RecoveryListener): Promise<{ sink: FileSink, lastLine: string | null }> {
    const file = await openAppending(options.path)
    const { size } = await file.stat()
    const lastLine = size > 0 ? await lastLineOf(file, size) : await lastLineOfPath(`${options.path}.1`)
    return { sink: new FileSink(options, file, size, onRecover), lastLine }
  }

  get healthy (): boolean {
    return !this.#failing && !this.#closed && this.#buffered() < this.#maxBytes
  }

  write (line: string): boolean {
    // The line's length, what it takes in bytes when it is ASCII (most are), stands for its size.
    if (this.#closed || this.#buffered() + line.length + 1 > this.#maxBytes) {
      this.drop(1)
      return false
    }
    this.#lines.push(line)
    // Written once enough waits, or the interval is up: one write for many records.
    if (this.#lines.bytes >= DEFAULT_FLUSH_BYTES) this.#schedule()
    else this.#timer ??= setTimeout(() => { this.#timer = null; this.#schedule() }, this.#flushInterval).unref()
    return true
  }

  stats (): SinkStats {
    return { name: this.name, healthy: this.healthy, written: this.written, dropped: this.dropped, buffered: this.#buffered(), lastError: this.lastError }
  }

  #buffered (): number {
    return this.#lines.bytes + (this.#pending?.bytes ?? 0)
  }

  /** Closes and opens the file again, after what is buffered: for rotation by another program (logrotate). */
  async reopen (): Promise<void> {
    this.#reopen = true
    this.#schedule()
    await this.flush()
  }

  async flush (): Promise<void> {
    if (this.#lines.lines > 0) this.#schedule()
    if (!this.#busy) return
    await new Promise<void>((resolve) => { this.#idle.push(resolve) })
  }

  async close (): Promise<void> {
    await this.flush()
    this.#closed = true
    if (this.#retry !== null) clearTimeout(this.#retry)
    if (this.#timer !== null) clearTimeout(this.#timer)
    // What could not be written by now is lost: counted as dropped.
    const lost = (this.#pending?.lines ?? 0) + this.#lines.clear()
    if (lost > 0) this.drop(lost)
    this.#pending = null
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
      while (this.#pending !== null || this.#lines.lines > 0) {
        if (this.#pending === null) {
          // All that waits, in one write however much it is, so that writing keeps up with
          // records however busy the event loop; with rotation on, the records that fill the file (at least one).
          this.#pending = this.#lines.take(this.#maxSize === undefined ? undefined : this.#maxSize - this.#size) as TakenLines
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
    const pending = this.#pending as TakenLines
    let buffers = pending.buffers
    while (buffers.length > 0) {
      const { bytesWritten } = await file.writev(buffers)
      this.#size += bytesWritten
      // A write cut short keeps only what is left, so that no record is written twice.
      buffers = after(buffers, bytesWritten)
      pending.buffers = buffers
    }
    this.#pending = null
    this.#lines.recycle(pending.emptied)
    this.written += pending.lines
    if (this.#failing) {
      this.#failing = false
      this.#delay = this.#minDelay
    }
    this.recovered()
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

// What is left of `buffers` once their first `bytes` are written.
function after (buffers: Buffer[], bytes: number): Buffer[] {
  let i = 0
  let left = bytes
  while (i < buffers.length && left >= (buffers[i] as Buffer).length) left -= (buffers[i++] as Buffer).length
  if (i === buffers.length) return []
  const rest = buffers.slice(i)
  rest[0] = (rest[0] as Buffer).subarray(left)
  return rest
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
