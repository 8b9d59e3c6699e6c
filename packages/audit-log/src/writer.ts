import { InvalidOption } from '@portcullis/core'
import { Checkpointer, Sequencer, stateAfter } from './chain.js'
import { FileSink } from './file-sink.js'
import { HttpSink } from './http-sink.js'
import { PinoSink } from './pino-sink.js'
import { droppedRecord } from './policy.js'
import { requestLine, type AuditRecord, type Ending, type RecordSettings, type RouteRecord } from './record.js'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { StreamSink, type RecoveryListener, type Sink, type SinkStats } from './sink.js'
import { DEFAULT_FLUSH_INTERVAL, DEFAULT_MAX_BUFFER_BYTES, validateOptions, type AuditLogOptions, type ValidOptions } from './options.js'

export interface AuditStats {
  /** Records handed to the sinks. */
  records: number
  /** Allowed requests that sampling left out. */
  sampledOut: number
  /** Records dropped, summed over the sinks. */
  dropped: number
  sinks: SinkStats[]
}

/**
 * Numbers (and chains) each record once and hands the same line to every sink. Never waits on
 * a sink: each buffers up to its bound and counts what it drops, and once it takes records
 * again a record says how many it dropped.
 */
export class AuditWriter {
  readonly sinks: Sink[] = []
  /** Whether records are hash-chained. */
  readonly chained: boolean
  /** Whether requests are refused while a sink cannot take records (`onSinkFailure: 'refuse'`). */
  readonly refuseWhileUnhealthy: boolean
  #sequencer: Sequencer
  readonly #checkpointer: Checkpointer | null
  #sinceCheckpoint = 0
  #timer: NodeJS.Timeout | null = null
  #records = 0
  sampledOut = 0

  private constructor (options: Pick<ValidOptions, 'sinks' | 'chain' | 'onSinkFailure'>) {
    this.chained = options.chain !== null
    this.refuseWhileUnhealthy = options.onSinkFailure === 'refuse'
    this.#sequencer = new Sequencer(this.chained)
    this.#checkpointer = options.chain?.signingKey === undefined ? null : new Checkpointer(options.chain)
  }

  /** Opens every sink; a chain goes on from the last record of the first file sink. */
  static async open (options: Pick<ValidOptions, 'sinks' | 'chain' | 'onSinkFailure'>): Promise<AuditWriter> {
    const writer = new AuditWriter(options)
    const onRecover: RecoveryListener = (sink, count, since) => { writer.write(droppedRecord(sink.name, count, since, writer.chained)) }
    let resumed = false
    try {
      for (const [i, sink] of options.sinks.entries()) {
        switch (sink.type) {
          case 'stdout':
            writer.sinks.push(new StreamSink('stdout', process.stdout, sink.maxBufferBytes ?? DEFAULT_MAX_BUFFER_BYTES, sink.flushInterval ?? DEFAULT_FLUSH_INTERVAL, onRecover))
            break
          case 'stream':
            writer.sinks.push(new StreamSink(sink.name ?? 'stream', sink.stream, sink.maxBufferBytes ?? DEFAULT_MAX_BUFFER_BYTES, sink.flushInterval ?? DEFAULT_FLUSH_INTERVAL, onRecover))
            break
          case 'file': {
            const { sink: file, lastLine } = await FileSink.open(sink, onRecover).catch((err: NodeJS.ErrnoException) => {
              throw new InvalidOption(`audit.sinks[${i}].path cannot be opened for appending (${String(err.code)})`)
            })
            writer.sinks.push(file)
            if (!resumed && writer.chained) writer.#sequencer = new Sequencer(true, stateAfter(lastLine))
            resumed = true
            break
          }
          case 'http':
            writer.sinks.push(new HttpSink(sink, onRecover))
            break
          case 'pino':
            writer.sinks.push(await PinoSink.open(sink, onRecover).catch((err: Error) => {
              throw new InvalidOption(`audit.sinks[${i}].target could not start as a pino transport: ${err.message}`)
            }))
        }
      }
    } catch (err) {
      await writer.close()
      throw err
    }
    const checkpointer = writer.#checkpointer
    if (checkpointer !== null) {
      writer.#timer = setInterval(() => { writer.checkpoint() }, checkpointer.interval).unref()
    }
    return writer
  }

  /** Whether every sink takes records now. */
  get healthy (): boolean {
    for (const sink of this.sinks) if (!sink.healthy) return false
    return true
  }

  write (record: AuditRecord): void {
    this.#deliver(this.#sequencer.seal(record))
  }

  /** Writes the record of one request, serialized straight to its line. */
  writeRequest (request: FastifyRequest, reply: FastifyReply | null, ending: Ending, withBody: boolean, errorCode: string | null, route: RouteRecord, settings: RecordSettings): void {
    const sequencer = this.#sequencer
    this.#deliver(sequencer.link(requestLine(request, reply, ending, withBody, errorCode, route, settings, sequencer.next(), sequencer.prev)))
  }

  #deliver (line: string): void {
    for (const sink of this.sinks) sink.write(line)
    this.#records++
    if (this.#checkpointer !== null && ++this.#sinceCheckpoint >= this.#checkpointer.every) this.checkpoint()
  }

  /** Writes a signed checkpoint now, when records were written since the last one. */
  checkpoint (): void {
    if (this.#checkpointer === null || this.#sinceCheckpoint === 0) return
    this.#sinceCheckpoint = 0
    const line = this.#sequencer.seal(this.#checkpointer.record(this.#sequencer.state))
    for (const sink of this.sinks) sink.write(line)
    this.#records++
  }

  stats (): AuditStats {
    const sinks = this.sinks.map((sink) => sink.stats())
    return { records: this.#records, sampledOut: this.sampledOut, dropped: sinks.reduce((sum, sink) => sum + sink.dropped, 0), sinks }
  }

  async flush (): Promise<void> {
    await Promise.all(this.sinks.map(async (sink) => { await sink.flush() }))
  }

  /** Ends with a checkpoint (when signing), then delivers what it can and closes the sinks. */
  async close (): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.checkpoint()
    await Promise.all(this.sinks.map(async (sink) => { await sink.close() }))
  }
}

/**
 * Opens an audit log's sinks (and chain) once, for the `writer` option of several plugin
 * registrations; only `sinks`, `chain` and `onSinkFailure` are read. Close it with `close()`
 * once every registration that writes to it is closed.
 */
export async function openAuditWriter (options: { sinks?: AuditLogOptions['sinks'] | undefined, chain?: AuditLogOptions['chain'] | undefined, onSinkFailure?: AuditLogOptions['onSinkFailure'] | undefined }): Promise<AuditWriter> {
  const { sinks, chain, onSinkFailure } = validateOptions({ sinks: options.sinks, chain: options.chain, onSinkFailure: options.onSinkFailure } as AuditLogOptions)
  return await AuditWriter.open({ sinks, chain, onSinkFailure })
}
