/** Bytes a chunk holds, unless one line needs more. */
const CHUNK_BYTES = 64 * 1024

// Chunks kept for reuse. Each new chunk is memory outside the heap that only a full garbage
// collection gives back, and enough of them bring such collections on: a sink that gives its
// chunks back once written allocates none in the steady state.
const SPARE_CHUNKS = 8

interface Chunk {
  readonly bytes: Buffer
  /** Where the lines not yet taken start. */
  start: number
  /** Where the next line goes. */
  used: number
  /** Lines not yet taken. */
  lines: number
  /** Where each line not yet taken ends (with its newline), when kept. */
  readonly ends: number[]
}

/** Lines taken from a {@link LineBuffer}: runs of bytes to write in order. */
export interface TakenLines {
  buffers: Buffer[]
  /** Bytes in all of `buffers`. */
  bytes: number
  lines: number
  /** The chunks this take emptied, to give back with {@link LineBuffer.recycle} once `buffers` are written. */
  emptied: Buffer[]
}

/**
 * Lines waiting to be written, kept as UTF-8 bytes: each line is encoded once, when it is
 * pushed, into chunks of 64 KiB outside the JavaScript heap, and followed by a newline. Strings
 * kept until the next write would live long enough for the garbage collector to copy them;
 * bytes cost it nothing, and are written as they are.
 */
export class LineBuffer {
  /** Bytes waiting. */
  bytes = 0
  /** Lines waiting. */
  lines = 0
  readonly #chunks: Chunk[] = []
  readonly #spare: Buffer[] = []
  readonly #keepEnds: boolean

  /** With `keepEnds`, {@link take} can stop at a number of bytes, at the end of a line. */
  constructor (keepEnds: boolean) {
    this.#keepEnds = keepEnds
  }

  push (line: string): void {
    // A UTF-16 unit takes at most 3 bytes in UTF-8 (a surrogate pair, 4 bytes for 2 units).
    const most = 3 * line.length + 1
    let chunk = this.#chunks[this.#chunks.length - 1]
    if (chunk === undefined || chunk.bytes.length - chunk.used < most) {
      const bytes = most <= CHUNK_BYTES ? this.#spare.pop() ?? Buffer.allocUnsafeSlow(CHUNK_BYTES) : Buffer.allocUnsafeSlow(most)
      chunk = { bytes, start: 0, used: 0, lines: 0, ends: [] }
      this.#chunks.push(chunk)
    }
    const written = chunk.bytes.write(line, chunk.used) + 1
    chunk.bytes[chunk.used + written - 1] = 0x0a
    chunk.used += written
    chunk.lines++
    if (this.#keepEnds) chunk.ends.push(chunk.used)
    this.bytes += written
    this.lines++
  }

  /**
   * Takes the waiting lines, oldest first: all of them, or, when at most `budget` bytes are
   * wanted, the fewest whole lines that reach it (at least one). Null when nothing waits. The
   * bytes stay valid: new lines never go where taken ones are.
   */
  take (budget = Number.POSITIVE_INFINITY): TakenLines | null {
    if (this.lines === 0) return null
    const taken: TakenLines = { buffers: [], bytes: 0, lines: 0, emptied: [] }
    let left = budget
    // Every chunk has lines waiting: a take hands over each chunk it empties, the last one too.
    for (const chunk of this.#chunks) {
      let end = chunk.used
      let lines = chunk.lines
      if (left < end - chunk.start) {
        // Only a buffer that keeps ends is handed a budget.
        lines = 1
        while ((chunk.ends[lines - 1] as number) - chunk.start < left) lines++
        end = chunk.ends[lines - 1] as number
      }
      taken.buffers.push(chunk.bytes.subarray(chunk.start, end))
      taken.bytes += end - chunk.start
      taken.lines += lines
      left -= end - chunk.start
      chunk.start = end
      chunk.lines -= lines
      if (this.#keepEnds) chunk.ends.splice(0, lines)
      if (left <= 0) break
    }
    // Emptied chunks go, to be filled again once written; the next line starts a spare one.
    while (this.#chunks.length > 0 && (this.#chunks[0] as Chunk).lines === 0) taken.emptied.push((this.#chunks.shift() as Chunk).bytes)
    this.bytes -= taken.bytes
    this.lines -= taken.lines
    return taken
  }

  /** Takes back chunks emptied by {@link take} whose bytes are written, to fill them again. */
  recycle (chunks: readonly Buffer[]): void {
    for (const chunk of chunks) if (chunk.length === CHUNK_BYTES && this.#spare.length < SPARE_CHUNKS) this.#spare.push(chunk)
  }

  /** Forgets every waiting line; returns how many there were. */
  clear (): number {
    const lines = this.lines
    this.#chunks.length = 0
    this.bytes = 0
    this.lines = 0
    return lines
  }
}
