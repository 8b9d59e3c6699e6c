import type { KeyObject } from 'node:crypto'
import type { Writable } from 'node:stream'
import { checkKnownKeys, checkNumber, invalidOption, isHeaderName } from '@portcullis/core'
import type { AuditWriter } from './writer.js'

/** Records on the process's standard output, one JSON line each. */
export interface StdoutSinkOptions {
  type: 'stdout'
  /** Longest a record waits to be written with others, in milliseconds (64 KiB waiting are written at once). @default 1000 */
  flushInterval?: number
  /**
   * Bytes that may wait for a slow reader before records are dropped (and counted).
   * @default 8388608 (8 MiB)
   */
  maxBufferBytes?: number
}

/** Records on a writable stream of your own (a pipe, a socket), one JSON line each. */
export interface StreamSinkOptions {
  type: 'stream'
  stream: Writable
  /** @default 1000 */
  flushInterval?: number
  /** @default 8388608 (8 MiB) */
  maxBufferBytes?: number
  /** How the sink is named in stats and drop records. @default 'stream' */
  name?: string
}

/** Records appended to a file, rotated by size. */
export interface FileSinkOptions {
  type: 'file'
  /** The file records are appended to; its directory is created when missing. */
  path: string
  /**
   * Rotate once the file reaches this many bytes: `audit.log` becomes `audit.log.1`, `.1`
   * becomes `.2`, and so on. Unset: never rotated here (use `app.audit.reopen()` after an external rotation).
   */
  maxSize?: number
  /** Rotated files kept; older ones are deleted. @default 10 */
  maxFiles?: number
  /** Longest a record waits to be written with others, in milliseconds (64 KiB waiting are written at once). @default 1000 */
  flushInterval?: number
  /** @default 8388608 (8 MiB) */
  maxBufferBytes?: number
  /** Waits between attempts to write again after a failure (the file is reopened each time). */
  retry?: RetryOptions
}

/** Records posted in batches to a collector, as NDJSON (`application/x-ndjson`). */
export interface HttpSinkOptions {
  type: 'http'
  /** The collector's endpoint (http or https). */
  url: string
  /** Headers sent with every batch, such as the collector's `authorization`. Never logged. */
  headers?: Record<string, string>
  /** Records per request. @default 500 */
  batchSize?: number
  /** Longest a record waits for its batch to fill, in milliseconds. @default 1000 */
  flushInterval?: number
  /** Records kept while the collector is slow or down; past it, new records are dropped (and counted). @default 10000 */
  maxBufferRecords?: number
  /** Longest a delivery may take, in milliseconds. @default 10000 */
  timeout?: number
  /** Waits between deliveries after a failure: doubled each time, with jitter. */
  retry?: RetryOptions
}

/** Records handed to a pino transport (any `pino.transport()` target: pino-elasticsearch, pino-loki, pino/file, …). */
export interface PinoSinkOptions {
  type: 'pino'
  /** The transport's module name or path, as `pino.transport({ target })` takes it. */
  target: string
  /** The transport's own options. */
  options?: Record<string, unknown>
}

export type SinkOptions = StdoutSinkOptions | StreamSinkOptions | FileSinkOptions | HttpSinkOptions | PinoSinkOptions

export interface RetryOptions {
  /** @default 250 */
  minDelay?: number
  /** @default 30000 */
  maxDelay?: number
}

export interface RedactOptions {
  /**
   * Request and response headers whose values are never written, besides `authorization`,
   * `proxy-authorization`, `cookie`, `set-cookie` and `x-api-key`, which always are.
   * @example ['x-session-token']
   */
  headers?: string[]
  /**
   * Query parameters whose values are never written, besides the defaults (`access_token`,
   * `api_key`, `apikey`, `code`, `id_token`, `key`, `password`, `refresh_token`, `secret`,
   * `sig`, `signature`, `token`). Compared case-insensitively.
   */
  query?: string[]
  /**
   * Body locations never written, as JSON pointers where `*` stands for any one property or
   * array index, when `body` is on.
   * @example ['/card/number', '/payments/*\/cvv']
   */
  body?: string[]
  /**
   * Body property names never written wherever they appear, besides the defaults (`password`,
   * `secret`, `token`, `cvv`, `cvc`, `card_number`, `cardNumber`, `pan`, …). Compared case-insensitively.
   */
  bodyKeys?: string[]
}

export interface ChainOptions {
  /**
   * The key that signs checkpoints (PEM text or a `KeyObject`; Ed25519, ECDSA or RSA). Without
   * one, records are chained but no checkpoint is written.
   */
  signingKey?: string | KeyObject
  /** Names the key in checkpoints, so that verifiers pick the right public key. */
  keyId?: string
  /** A checkpoint after this many records. @default 1000 */
  checkpointEvery?: number
  /** And at least this often while records are written, in milliseconds. @default 60000 */
  checkpointInterval?: number
}

export interface AuditLogOptions {
  /** Where records go; each gets every record. @default [{ type: 'stdout' }] */
  sinks?: SinkOptions[]
  /** What is never written. Authorization, cookies and the common key headers and parameters always are redacted. */
  redact?: RedactOptions
  /**
   * Header fields written with each request record, by name (`'*'`: all), their secret ones
   * redacted. `user-agent` is always written, as `user_agent.original`.
   * @default { request: [], response: [] }
   */
  headers?: { request?: string[] | '*', response?: string[] | '*' }
  /**
   * Write JSON request bodies (redacted) as `http.request.body.content`; other bodies are
   * never written, only their size.
   * @default false
   */
  body?: boolean
  /** Bodies longer than this (once redacted) are left out, their size kept. @default 8192 */
  bodyMaxBytes?: number
  /**
   * Share of allowed requests that are recorded, from 0 to 1. Denials (also in report mode),
   * errors, aborted and timed-out requests are always recorded.
   * @default 1
   */
  sample?: number
  /** A hash chain over records (SHA-256 of each record's canonical JSON, RFC 8785), with signed checkpoints. @default false */
  chain?: boolean | ChainOptions
  /**
   * What happens while a sink cannot take records: `drop` keeps serving and counts what is
   * dropped; `refuse` answers new requests with 503 until every sink takes records again.
   * @default 'drop'
   */
  onSinkFailure?: 'drop' | 'refuse'
  /**
   * Record an activation whenever the core's policy snapshot is swapped (with the versions and
   * a summary of the difference). Turn off when the policy package records its own changes.
   * @default true
   */
  policySwaps?: boolean
  /**
   * Write to this writer, made once by {@link openAuditWriter}, instead of opening sinks: several
   * Fastify instances (a gateway's policy versions) then write one log and one chain. Its sinks,
   * chain and `onSinkFailure` are the writer's, so those options are left out; the plugin never
   * closes it.
   */
  writer?: AuditWriter
}

/** Per-route audit settings, in `config.audit`. */
export interface RouteAuditOptions {
  /** Share of this route's allowed requests that are recorded. */
  sample?: number
  /** Write this route's JSON request bodies (redacted). */
  body?: boolean
}

export const DEFAULT_MAX_BUFFER_BYTES = 8 * 1024 * 1024
/** How long a record may wait to be written with others, in milliseconds (stdout, stream and file sinks). */
export const DEFAULT_FLUSH_INTERVAL = 1000
/** Written at once when this many bytes wait. */
export const DEFAULT_FLUSH_BYTES = 64 * 1024
export const DEFAULT_BODY_MAX_BYTES = 8192
export const DEFAULT_CHECKPOINT_EVERY = 1000
export const DEFAULT_CHECKPOINT_INTERVAL = 60_000
export const DEFAULT_RETRY = Object.freeze({ minDelay: 250, maxDelay: 30_000 })
export const DEFAULT_HTTP = Object.freeze({ batchSize: 500, flushInterval: 1000, maxBufferRecords: 10_000, timeout: 10_000 })

export interface ValidOptions {
  sinks: SinkOptions[]
  redact: Required<RedactOptions>
  requestHeaders: string[] | '*'
  responseHeaders: string[] | '*'
  body: boolean
  bodyMaxBytes: number
  sample: number
  chain: ChainOptions | null
  onSinkFailure: 'drop' | 'refuse'
  policySwaps: boolean
  writer: AuditWriter | null
}

const OPTION_KEYS = ['sinks', 'redact', 'headers', 'body', 'bodyMaxBytes', 'sample', 'chain', 'onSinkFailure', 'policySwaps', 'writer']
const WRITER_KEYS = ['sinks', 'chain', 'onSinkFailure'] as const
const SINK_KEYS: Record<SinkOptions['type'], string[]> = {
  stdout: ['type', 'flushInterval', 'maxBufferBytes'],
  stream: ['type', 'stream', 'flushInterval', 'maxBufferBytes', 'name'],
  file: ['type', 'path', 'maxSize', 'maxFiles', 'flushInterval', 'maxBufferBytes', 'retry'],
  http: ['type', 'url', 'headers', 'batchSize', 'flushInterval', 'maxBufferRecords', 'timeout', 'retry'],
  pino: ['type', 'target', 'options']
}

/** Checks the plugin's options once, at registration; a bad one fails startup naming it. */
export function validateOptions (options: AuditLogOptions): ValidOptions {
  checkKnownKeys(options, OPTION_KEYS, 'audit')
  const writer = options.writer ?? null
  if (writer !== null) {
    const given = WRITER_KEYS.find((key) => options[key] !== undefined)
    if (given !== undefined) throw invalidOption(`audit.${given}`, 'left out with audit.writer, which has its own sinks, chain and onSinkFailure')
  }
  const sinks = options.sinks ?? [{ type: 'stdout' }]
  if (!Array.isArray(sinks) || sinks.length === 0) throw invalidOption('audit.sinks', 'a non-empty list of sinks', sinks)
  sinks.forEach((sink, i) => { checkSink(sink, `audit.sinks[${i}]`) })
  const headers = options.headers ?? {}
  checkKnownKeys(headers, ['request', 'response'], 'audit.headers')
  const sample = checkShare(options.sample, 'audit.sample')
  const onSinkFailure = options.onSinkFailure ?? 'drop'
  if (onSinkFailure !== 'drop' && onSinkFailure !== 'refuse') throw invalidOption('audit.onSinkFailure', 'one of drop, refuse', onSinkFailure)
  return {
    sinks,
    redact: checkRedact(options.redact ?? {}),
    requestHeaders: checkHeaderList(headers.request, 'audit.headers.request'),
    responseHeaders: checkHeaderList(headers.response, 'audit.headers.response'),
    body: checkBoolean(options.body, false, 'audit.body'),
    bodyMaxBytes: checkNumber(options.bodyMaxBytes, DEFAULT_BODY_MAX_BYTES, 'audit.bodyMaxBytes', 'a whole number of bytes from 1', isCount),
    sample: sample ?? 1,
    chain: checkChain(options.chain),
    onSinkFailure,
    policySwaps: checkBoolean(options.policySwaps, true, 'audit.policySwaps'),
    writer
  }
}

/** Checks a route's `config.audit`. */
export function checkRouteOptions (value: unknown, path: string): RouteAuditOptions | false {
  if (value === false) return false
  const route = checkKnownKeys(value, ['sample', 'body'], path) as RouteAuditOptions
  checkShare(route.sample, `${path}.sample`)
  checkBoolean(route.body, false, `${path}.body`)
  return route
}

function checkSink (sink: SinkOptions, path: string): void {
  if (typeof sink !== 'object' || sink === null || !Object.hasOwn(SINK_KEYS, String(sink.type))) {
    throw invalidOption(`${path}.type`, 'one of stdout, stream, file, http, pino', (sink as { type?: unknown } | null)?.type)
  }
  checkKnownKeys(sink, SINK_KEYS[sink.type], path)
  if ('maxBufferBytes' in sink) checkNumber(sink.maxBufferBytes, 0, `${path}.maxBufferBytes`, 'a whole number of bytes from 1', isCount)
  if (sink.type !== 'http' && sink.type !== 'pino') checkNumber(sink.flushInterval, 0, `${path}.flushInterval`, 'a number of milliseconds from 1 to 60000', (n) => n >= 1 && n <= 60_000)
  switch (sink.type) {
    case 'stream':
      if (typeof sink.stream?.write !== 'function') throw invalidOption(`${path}.stream`, 'a writable stream', sink.stream)
      if (sink.name !== undefined && (typeof sink.name !== 'string' || sink.name === '')) throw invalidOption(`${path}.name`, 'a non-empty string', sink.name)
      break
    case 'file':
      if (typeof sink.path !== 'string' || sink.path === '') throw invalidOption(`${path}.path`, 'a file path', sink.path)
      checkNumber(sink.maxSize, 0, `${path}.maxSize`, 'a whole number of bytes from 1024', (n) => Number.isInteger(n) && n >= 1024)
      checkNumber(sink.maxFiles, 0, `${path}.maxFiles`, 'a whole number from 1 to 1000', (n) => Number.isInteger(n) && n >= 1 && n <= 1000)
      checkRetry(sink.retry, `${path}.retry`)
      break
    case 'http':
      checkHttpSink(sink, path)
      break
    case 'pino':
      if (typeof sink.target !== 'string' || sink.target === '') throw invalidOption(`${path}.target`, 'the module name or path of a pino transport', sink.target)
      if (sink.options !== undefined && (typeof sink.options !== 'object' || sink.options === null || Array.isArray(sink.options))) throw invalidOption(`${path}.options`, 'an object', sink.options)
  }
}

function checkHttpSink (sink: HttpSinkOptions, path: string): void {
  let url: URL | null = null
  try {
    url = new URL(sink.url)
  } catch {}
  if (url === null || (url.protocol !== 'http:' && url.protocol !== 'https:')) throw invalidOption(`${path}.url`, 'an http or https URL', sink.url)
  if (url.username !== '' || url.password !== '') throw invalidOption(`${path}.url`, 'a URL without credentials (send them in headers)')
  const headers = sink.headers ?? {}
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) throw invalidOption(`${path}.headers`, 'an object of header names and values', headers)
  for (const [name, value] of Object.entries(headers)) {
    if (!isHeaderName(name)) throw invalidOption(`${path}.headers`, 'keyed by header names', name)
    if (typeof value !== 'string') throw invalidOption(`${path}.headers.${name}`, 'a string')
  }
  checkNumber(sink.batchSize, 0, `${path}.batchSize`, 'a whole number from 1', isCount)
  checkNumber(sink.flushInterval, 0, `${path}.flushInterval`, 'a number of milliseconds from 10', (n) => n >= 10)
  checkNumber(sink.maxBufferRecords, 0, `${path}.maxBufferRecords`, 'a whole number from 1', isCount)
  checkNumber(sink.timeout, 0, `${path}.timeout`, 'a number of milliseconds from 100', (n) => n >= 100)
  checkRetry(sink.retry, `${path}.retry`)
}

function checkRetry (retry: RetryOptions | undefined, path: string): void {
  if (retry === undefined) return
  checkKnownKeys(retry, ['minDelay', 'maxDelay'], path)
  const min = checkNumber(retry.minDelay, DEFAULT_RETRY.minDelay, `${path}.minDelay`, 'a number of milliseconds from 1', (n) => n >= 1)
  checkNumber(retry.maxDelay, DEFAULT_RETRY.maxDelay, `${path}.maxDelay`, `a number of milliseconds from minDelay (${min})`, (n) => n >= min)
}

function checkRedact (redact: RedactOptions): Required<RedactOptions> {
  checkKnownKeys(redact, ['headers', 'query', 'body', 'bodyKeys'], 'audit.redact')
  const list = (value: unknown, path: string, valid: (item: string) => boolean, expected: string): string[] => {
    if (value === undefined) return []
    if (!Array.isArray(value) || !value.every((item) => typeof item === 'string' && valid(item))) throw invalidOption(path, expected, value)
    return value
  }
  return {
    headers: list(redact.headers, 'audit.redact.headers', isHeaderName, 'a list of header names'),
    query: list(redact.query, 'audit.redact.query', (item) => item !== '', 'a list of query parameter names'),
    body: list(redact.body, 'audit.redact.body', (item) => item.startsWith('/') && item.length > 1, 'a list of JSON pointers such as "/card/number" ("*" for any one step)'),
    bodyKeys: list(redact.bodyKeys, 'audit.redact.bodyKeys', (item) => item !== '', 'a list of property names')
  }
}

function checkHeaderList (value: unknown, path: string): string[] | '*' {
  if (value === undefined) return []
  if (value === '*') return '*'
  if (!Array.isArray(value) || !value.every(isHeaderName)) throw invalidOption(path, '"*" or a list of header names', value)
  // Sorted, as canonical JSON orders the keys they become.
  return [...new Set(value.map((name) => name.toLowerCase()))].sort()
}

function checkChain (value: AuditLogOptions['chain']): ChainOptions | null {
  if (value === undefined || value === false) return null
  if (value === true) return {}
  checkKnownKeys(value, ['signingKey', 'keyId', 'checkpointEvery', 'checkpointInterval'], 'audit.chain')
  if (value.keyId !== undefined && (typeof value.keyId !== 'string' || value.keyId === '')) throw invalidOption('audit.chain.keyId', 'a non-empty string', value.keyId)
  checkNumber(value.checkpointEvery, 0, 'audit.chain.checkpointEvery', 'a whole number of records from 1', isCount)
  checkNumber(value.checkpointInterval, 0, 'audit.chain.checkpointInterval', 'a number of milliseconds from 100', (n) => n >= 100)
  return value
}

function checkShare (value: unknown, path: string): number | undefined {
  if (value === undefined) return undefined
  return checkNumber(value, 1, path, 'a share from 0 to 1', (n) => n >= 0 && n <= 1)
}

function checkBoolean (value: unknown, fallback: boolean, path: string): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') throw invalidOption(path, 'a boolean', value)
  return value
}

function isCount (n: number): boolean {
  return Number.isInteger(n) && n >= 1
}
