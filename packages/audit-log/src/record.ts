import type { Socket } from 'node:net'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Decision, Principal } from '@portcullis/core'
import type { Redaction } from './redact.js'

/**
 * The Elastic Common Schema version the records follow. Fields ECS has (`event.*`, `http.*`,
 * `url.*`, `client.ip`, `user.id`, …) carry ECS names; the rest is under `portcullis.*`.
 */
export const ECS_VERSION = '8.17.0'
/** `event.dataset` of every record. */
export const DATASET = 'portcullis.audit'

/** One decision as a record lists it. */
export interface RecordedDecision {
  outcome: Decision['outcome']
  plugin: string
  reason: string
  rule?: string
}

/**
 * An audit record. Keys are in code-unit order at every level, as RFC 8785 orders them, so that
 * a record's JSON text is its canonical form and the chain hashes it as written.
 */
export interface AuditRecord {
  '@timestamp': string
  event: { sequence: number, [field: string]: unknown }
  portcullis: { chain?: { prev: string | null }, [field: string]: unknown }
  [field: string]: unknown
}

export interface RecordSettings {
  redaction: Redaction
  requestHeaders: string[] | '*'
  responseHeaders: string[] | '*'
  bodyMaxBytes: number
  chained: boolean
}

/** How a request ended, when it did not end with a response. */
export type Ending = 'response' | 'aborted' | 'timed-out'

/**
 * The record of one request as its JSON line (RFC 8785 canonical form, without `event.hash`),
 * written straight to text: nothing raw but the path. `prev` is the chain's previous hash, or
 * `undefined` without a chain.
 */
export function requestLine (request: FastifyRequest, reply: FastifyReply | null, ending: Ending, withBody: boolean, errorCode: string | null, route: string | null, settings: RecordSettings, sequence: number, prev: string | null | undefined): string {
  // No reply is known for a request aborted before the plugin's onRequest hook ran: its time is the abort's.
  const elapsed = reply === null ? 0 : reply.elapsedTime
  const decisions = request.decisions
  const deciding = decidingOf(decisions)
  const denied = deciding?.outcome === 'deny'
  const status = ending === 'response' ? (reply as FastifyReply).statusCode : null
  const principal = request.principal
  const url = request.url
  const q = url.indexOf('?')
  const headers = request.headers
  const contentLength = headers['content-length']
  const userAgent = headers['user-agent']
  const upstream = request.upstream
  const failed = denied || status === null || status >= 400
  const raw = request.raw

  let text = `{"@timestamp":"${isoTime(Date.now() - elapsed)}","client":{${optional('ip', request.clientIp)}},"ecs":{"version":"${ECS_VERSION}"},`
  if (errorCode !== null) text += `"error":{"code":"${esc(errorCode)}"},`
  text += `"event":{"action":"http-request","category":["web"],"dataset":"${DATASET}",${reply === null ? '' : `"duration":${Math.round(elapsed * 1e6)},`}"kind":"event","outcome":"${status === null ? 'unknown' : failed ? 'failure' : 'success'}",`
  if (deciding !== null) text += `"reason":"${esc(deciding.reason)}",`
  text += `"sequence":${sequence},"type":["${denied ? 'denied' : 'allowed'}"]},"http":{"request":{`
  if (contentLength !== undefined) text += `"body":${bodyOf(request, contentLength, withBody, settings)},`
  const requestHeaders = settings.requestHeaders.length === 0 ? null : settings.redaction.headers(headers, settings.requestHeaders)
  if (requestHeaders !== null) text += `"headers":${JSON.stringify(requestHeaders)},`
  text += `"id":"${esc(request.id)}","method":"${esc(request.method)}"},"response":{`
  const responseHeaders = settings.responseHeaders.length === 0 || reply === null ? null : settings.redaction.headers(reply.getHeaders(), settings.responseHeaders)
  if (responseHeaders !== null) text += `"headers":${JSON.stringify(responseHeaders)}${status === null ? '' : ','}`
  if (status !== null) text += `"status_code":${status}`
  text += `},"version":"${esc(raw.httpVersion)}"},"portcullis":{`
  if (ending === 'aborted') text += '"aborted":true,'
  if (prev !== undefined) text += `"chain":{"prev":${prev === null ? 'null' : `"${prev}"`}},`
  if (deciding !== null) text += `"decision":${decisionText(deciding)},`
  text += '"decisions":['
  if (decisions !== null) {
    for (let i = 0; i < decisions.length; i++) text += `${i === 0 ? '' : ','}${decisionText(decisions[i] as Decision)}`
  }
  const version = request.policySnapshot?.version
  text += `],"policy":{"version":${version === undefined || version === null ? 'null' : `"${esc(version)}"`}},`
  if (principal !== null) text += `"principal":${principalText(principal)},`
  text += `"route":${route === null ? 'null' : `"${esc(route)}"`}`
  if (ending === 'timed-out') text += ',"timed_out":true'
  if (upstream !== null) text += `,"upstream":{"address":"${esc(upstream.address)}","status_code":${upstream.statusCode ?? 'null'}}`
  // Left out when the socket is already gone: an aborted request, or one whose streamed body the
  // proxy consumed, after which Node has detached the request from its socket.
  text += `},"source":{${optional('ip', (raw.socket as Socket | null)?.remoteAddress)}},"url":{`
  text += q === -1 ? `"path":"${esc(url)}"}` : `"path":"${esc(url.slice(0, q))}","query":"${esc(settings.redaction.query(url.slice(q + 1)))}"}`
  if (principal !== null) text += `,"user":{"id":"${esc(principal.id)}","roles":${stringsText(principal.roles)}}`
  if (userAgent !== undefined) text += `,"user_agent":{"original":"${esc(userAgent)}"}`
  return `${text}}`
}

// What JSON.stringify writes between the quotes of a string, without its cost when nothing is
// to be escaped (quotes, backslashes, control characters, lone surrogates): most values come back
// as they are, with nothing to copy or concatenate.
// eslint-disable-next-line no-control-regex -- control characters are exactly what JSON escapes
const NEEDS_ESCAPING = /["\\\u0000-\u001f\ud800-\udfff]/
function esc (value: string): string {
  return NEEDS_ESCAPING.test(value) ? JSON.stringify(value).slice(1, -1) : value
}

// A key with a string value, or nothing when the value is missing (JSON.stringify leaves out undefined).
function optional (key: string, value: string | undefined): string {
  return typeof value === 'string' ? `"${key}":"${esc(value)}"` : ''
}

function stringsText (values: readonly string[]): string {
  return values.length === 0 ? '[]' : `["${values.map(esc).join('","')}"]`
}

function decisionText (decision: Decision): string {
  const text = `{"outcome":"${decision.outcome}","plugin":"${esc(decision.plugin)}","reason":"${esc(decision.reason)}"`
  return decision.rule === undefined ? `${text}}` : `${text},"rule":"${esc(decision.rule)}"}`
}

function principalText (principal: Principal): string {
  let text = '{'
  if (principal.credentialId !== undefined) text += `"credential_id":"${esc(principal.credentialId)}",`
  text += `"method":"${esc(principal.method)}"`
  if (principal.plan !== undefined) text += `,"plan":"${esc(principal.plan)}"`
  // Scopes, with the roles in user.roles, let a candidate policy judge the request again (policy preview).
  text += `,"scopes":${stringsText(principal.scopes)}`
  if (principal.tenant !== undefined) text += `,"tenant":"${esc(principal.tenant)}"`
  return `${text},"type":"${esc(principal.type)}"}`
}

// ISO 8601 times, the date and second part made once a second rather than per record, and the
// last one kept: records come many to the millisecond.
let isoSecond = Number.NaN
let isoPrefix = ''
let isoMillisecond = Number.NaN
let isoText = ''
/** `new Date(ms).toISOString()`, for times from 1970 on. */
export function isoTime (ms: number): string {
  const whole = Math.floor(ms)
  if (whole === isoMillisecond) return isoText
  isoMillisecond = whole
  const second = Math.floor(whole / 1000)
  if (second !== isoSecond) {
    isoSecond = second
    isoPrefix = new Date(second * 1000).toISOString().slice(0, 20)
  }
  const millis = whole - second * 1000
  isoText = `${isoPrefix}${millis < 10 ? '00' : millis < 100 ? '0' : ''}${millis}Z`
  return isoText
}

/** Whether the request is one that sampling may leave out: allowed, answered, and not an error. */
export function isSampleable (request: FastifyRequest, reply: FastifyReply): boolean {
  if (reply.statusCode >= 400) return false
  const decisions = request.decisions
  if (decisions === null) return true
  for (const decision of decisions) if (decision.outcome !== 'allow') return false
  return true
}

// The decision that tells the outcome: the first denial, else the first report-only denial, else the last allow.
function decidingOf (decisions: Decision[] | null): Decision | null {
  if (decisions === null || decisions.length === 0) return null
  let wouldDeny: Decision | null = null
  for (const decision of decisions) {
    if (decision.outcome === 'deny') return decision
    if (decision.outcome === 'would-deny') wouldDeny ??= decision
  }
  return wouldDeny ?? decisions[decisions.length - 1] as Decision
}

// The body's size, and its JSON content once redacted when asked for; any other body is never written.
function bodyOf (request: FastifyRequest, contentLength: string, withBody: boolean, settings: RecordSettings): string {
  // Node's parser has checked the header: it is a number.
  const bytes = `{"bytes":${Number(contentLength)}`
  const parsed = request.body
  // What a JSON parser makes: objects and arrays. Buffers, streams and strings are never written.
  if (withBody && typeof parsed === 'object' && parsed !== null && (Array.isArray(parsed) || Object.getPrototypeOf(parsed) === Object.prototype)) {
    const content = JSON.stringify(settings.redaction.body(parsed))
    if (Buffer.byteLength(content) <= settings.bodyMaxBytes) return `${bytes},"content":${JSON.stringify(content)}}`
  }
  return `${bytes}}`
}
