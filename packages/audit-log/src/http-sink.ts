import { BaseSink, type RecoveryListener, type Sink, type SinkStats } from './sink.js'
import { DEFAULT_HTTP, DEFAULT_RETRY, type HttpSinkOptions } from './options.js'

/**
 * Posts records in batches of NDJSON to a collector, one batch in flight at a time. A batch the
 * collector does not take (no answer, 408, 429, 5xx) is sent again after a delay that doubles
 * (with jitter, or as its Retry-After says); records wait meanwhile in a bounded buffer, and
 * what does not fit is dropped and counted. A batch refused as such (another 4xx) is dropped.
 */
export class HttpSink extends BaseSink implements Sink {
  readonly #url: string
  readonly #headers: Record<string, string>
  readonly #batchSize: number
  readonly #flushInterval: number
  readonly #maxRecords: number
  readonly #timeout: number
  readonly #minDelay: number
  readonly #maxDelay: number
  #queue: string[] = []
  #sending = false
  #failing = false
  #delay: number
  #timer: NodeJS.Timeout | null = null
  #idle: Array<() => void> = []
  #closing = false
  #closed = false

  constructor (options: HttpSinkOptions, onRecover: RecoveryListener) {
    const url = new URL(options.url)
    // Named without its query, which could hold a credential.
    super(`http:${url.origin}${url.pathname}`, onRecover)
    this.#url = options.url
    this.#headers = { 'content-type': 'application/x-ndjson', ...options.headers }
    this.#batchSize = options.batchSize ?? DEFAULT_HTTP.batchSize
    this.#flushInterval = options.flushInterval ?? DEFAULT_HTTP.flushInterval
    this.#maxRecords = options.maxBufferRecords ?? DEFAULT_HTTP.maxBufferRecords
    this.#timeout = options.timeout ?? DEFAULT_HTTP.timeout
    this.#minDelay = options.retry?.minDelay ?? DEFAULT_RETRY.minDelay
    this.#maxDelay = options.retry?.maxDelay ?? DEFAULT_RETRY.maxDelay
    this.#delay = this.#minDelay
  }

  get healthy (): boolean {
    return !this.#failing && !this.#closed && this.#queue.length < this.#maxRecords
  }

  write (line: string): boolean {
    if (this.#closed || this.#queue.length >= this.#maxRecords) {
      this.drop(1)
      return false
    }
    this.#queue.push(line)
    // While sending, the loop takes it; while failing, the retry does.
    if (this.#sending || this.#failing) return true
    if (this.#queue.length >= this.#batchSize) this.#send()
    else this.#timer ??= setTimeout(() => { this.#send() }, this.#flushInterval).unref()
    return true
  }

  stats (): SinkStats {
    return { name: this.name, healthy: this.healthy, written: this.written, dropped: this.dropped, buffered: this.#queue.length, lastError: this.lastError }
  }

  /** Sends what is buffered now; resolves once it is delivered, or a delivery has failed. */
  async flush (): Promise<void> {
    if (this.#queue.length === 0 && !this.#sending) return
    const done = new Promise<void>((resolve) => { this.#idle.push(resolve) })
    if (!this.#sending) this.#send()
    await done
  }

  /** One last attempt at what is buffered; what it cannot deliver is dropped (and counted). */
  async close (): Promise<void> {
    this.#closing = true
    if (this.#failing) {
      this.#failing = false
      this.#send()
    }
    await this.flush()
    this.#closed = true
    this.#clearTimer()
    if (this.#queue.length > 0) this.drop(this.#queue.length)
    this.#queue = []
  }

  #send (): void {
    this.#clearTimer()
    this.#sending = true
    this.#deliver()
  }

  async #deliver (): Promise<void> {
    while (this.#queue.length > 0) {
      const batch = this.#queue.slice(0, this.#batchSize)
      const retryAfter = await this.#post(batch)
      if (typeof retryAfter === 'number') {
        this.#failing = true
        this.#sending = false
        this.#settle()
        if (this.#closing) return
        this.#timer = setTimeout(() => { this.#send() }, retryAfter).unref()
        this.#delay = Math.min(this.#delay * 2, this.#maxDelay)
        return
      }
      this.#queue.splice(0, batch.length)
      if (this.#failing) {
        this.#failing = false
        this.#delay = this.#minDelay
      }
      // Only a delivery shows the collector takes records again: a refusal reported to it would be refused too.
      if (retryAfter === 'delivered') this.recovered()
    }
    this.#sending = false
    this.#settle()
  }

  // Whether the batch was delivered or refused for good; else the delay before sending it again.
  async #post (batch: string[]): Promise<'delivered' | 'refused' | number> {
    let response: Response
    try {
      response = await fetch(this.#url, { method: 'POST', headers: this.#headers, body: `${batch.join('\n')}\n`, signal: AbortSignal.timeout(this.#timeout) })
      await response.arrayBuffer()
    } catch (err) {
      this.lastError = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name
      return this.#jittered()
    }
    if (response.ok) {
      this.written += batch.length
      return 'delivered'
    }
    this.lastError = `HTTP ${response.status}`
    if (response.status === 408 || response.status === 429 || response.status >= 500) {
      const seconds = Number(response.headers.get('retry-after'))
      return Number.isInteger(seconds) && seconds > 0 ? Math.min(seconds * 1000, this.#maxDelay) : this.#jittered()
    }
    // The collector refuses the batch as such: sending it again would not help.
    this.drop(batch.length)
    return 'refused'
  }

  #jittered (): number {
    return Math.round(this.#delay * (0.5 + Math.random() / 2))
  }

  #settle (): void {
    for (const resolve of this.#idle.splice(0)) resolve()
  }

  #clearTimer (): void {
    if (this.#timer === null) return
    clearTimeout(this.#timer)
    this.#timer = null
  }
}
