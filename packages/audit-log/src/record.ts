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

/** The record of one request, built from what the chain recorded on it; nothing raw but the path. */
export function requestRecord (request: FastifyRequest, reply: FastifyReply, ending: Ending, withBody: boolean, errorCode: string | null, settings: RecordSettings): AuditRecord {
  const elapsed = reply.elapsedTime
  const decisions = request.decisions
  const deciding = decidingOf(decisions)
  const denied = deciding?.outcome === 'deny'
  const status = ending === 'response' ? reply.statusCode : null
  const principal = request.principal
  const url = request.url
  const q = url.indexOf('?')
  const headers = request.headers
  const contentLength = headers['content-length']
  const userAgent = headers['user-agent']
  const upstream = request.upstream

  const requestFields: Record<string, unknown> = {}
  if (contentLength !== undefined) requestFields.body = bodyOf(request, contentLength, withBody, settings)
  const requestHeaders = settings.requestHeaders.length === 0 ? null : settings.redaction.headers(headers, settings.requestHeaders)
  if (requestHeaders !== null) requestFields.headers = requestHeaders
  requestFields.id = request.id
  requestFields.method = request.method
  const responseFields: Record<string, unknown> = {}
  const responseHeaders = settings.responseHeaders.length === 0 ? null : settings.redaction.headers(reply.getHeaders(), settings.responseHeaders)
  if (responseHeaders !== null) responseFields.headers = responseHeaders
  if (status !== null) responseFields.status_code = status

  const portcullis: Record<string, unknown> = {}
  if (ending === 'aborted') portcullis.aborted = true
  if (settings.chained) portcullis.chain = { prev: null }
  if (deciding !== null) portcullis.decision = recorded(deciding)
  portcullis.decisions = decisions === null ? [] : decisions.map(recorded)
  portcullis.policy = { version: request.policySnapshot?.version ?? null }
  if (principal !== null) portcullis.principal = principalOf(principal)
  portcullis.route = request.routeOptions.url ?? null
  if (ending === 'timed-out') portcullis.timed_out = true
  if (upstream !== null) portcullis.upstream = { address: upstream.address, status_code: upstream.statusCode }

  // Built key by key, in order: optional keys are added where they sort, without spreading.
  const failed = denied || status === null || status >= 400
  const event: AuditRecord['event'] = {
    action: 'http-request',
    category: CATEGORY_WEB,
    dataset: DATASET,
    duration: Math.round(elapsed * 1e6),
    kind: 'event',
    outcome: status === null ? 'unknown' : failed ? 'failure' : 'success'
  } as unknown as AuditRecord['event']
  if (deciding !== null) event.reason = deciding.reason
  event.sequence = 0
  event.type = denied ? TYPE_DENIED : TYPE_ALLOWED
  const record = {
    '@timestamp': new Date(Date.now() - elapsed).toISOString(),
    client: { ip: request.clientIp },
    ecs: ECS
  } as unknown as AuditRecord
  if (errorCode !== null) record.error = { code: errorCode }
  record.event = event
  record.http = { request: requestFields, response: responseFields, version: request.raw.httpVersion }
  record.portcullis = portcullis as AuditRecord['portcullis']
  // Left out when the socket is already gone (an aborted request).
  record.source = { ip: request.raw.socket.remoteAddress }
  record.url = q === -1 ? { path: url } : { path: url.slice(0, q), query: settings.redaction.query(url.slice(q + 1)) }
  if (principal !== null) record.user = { id: principal.id, roles: principal.roles }
  if (userAgent !== undefined) record.user_agent = { original: userAgent }
  return record
}

// Shared by every record: serialized, never changed.
const ECS = Object.freeze({ version: ECS_VERSION })
const CATEGORY_WEB = Object.freeze(['web'])
const TYPE_DENIED = Object.freeze(['denied'])
const TYPE_ALLOWED = Object.freeze(['allowed'])

function principalOf (principal: Principal): Record<string, unknown> {
  const fields: Record<string, unknown> = {}
  if (principal.credentialId !== undefined) fields.credential_id = principal.credentialId
  fields.method = principal.method
  if (principal.plan !== undefined) fields.plan = principal.plan
  if (principal.tenant !== undefined) fields.tenant = principal.tenant
  fields.type = principal.type
  return fields
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

function recorded (decision: Decision): RecordedDecision {
  return decision.rule === undefined
    ? { outcome: decision.outcome, plugin: decision.plugin, reason: decision.reason }
    : { outcome: decision.outcome, plugin: decision.plugin, reason: decision.reason, rule: decision.rule }
}

// The body's size, and its JSON content once redacted when asked for; any other body is never written.
function bodyOf (request: FastifyRequest, contentLength: string, withBody: boolean, settings: RecordSettings): Record<string, unknown> {
  // Node's parser has checked the header: it is a number.
  const body: Record<string, unknown> = { bytes: Number(contentLength) }
  const parsed = request.body
  // What a JSON parser makes: objects and arrays. Buffers, streams and strings are never written.
  if (withBody && typeof parsed === 'object' && parsed !== null && (Array.isArray(parsed) || Object.getPrototypeOf(parsed) === Object.prototype)) {
    const content = JSON.stringify(settings.redaction.body(parsed))
    if (Buffer.byteLength(content) <= settings.bodyMaxBytes) body.content = content
  }
  return body
}
