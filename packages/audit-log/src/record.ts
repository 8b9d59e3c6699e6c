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
 * What a route's records share, kept by the plugin per route: the route's text, and the
 * decisions part of its last record, reused while requests carry the same decisions.
 */
export interface RouteRecord {
  /** `"route":…` as the record writes it. */
  readonly route: string
  last: DecisionsPart | null
}

/** The decisions of a record, as text, and what they were made from. */
interface DecisionsPart {
  readonly decisions: readonly Decision[]
  readonly version: string | null
  /** `"decision":…,"decisions":[…],"policy":{"version":…},` */
  readonly text: string
  /** `"reason":"…",`, or nothing without a decision. */
  readonly reason: string
  readonly denied: boolean
}

/** A route's shared record parts: `route` is its pattern, or null for requests no route matched. */
export function routeRecord (route: string | null): RouteRecord {
  return { route: route === null ? '"route":null' : flat(`"route":"${esc(route)}"`), last: null }
}

// The record's fixed text between its values, joined once: each piece below is one string.
const EVENT = `"ecs":{"version":"${ECS_VERSION}"},`
const EVENT_START = `"event":{"action":"http-request","category":["web"],"dataset":"${DATASET}",`
const OUTCOMES = { success: '"kind":"event","outcome":"success",', failure: '"kind":"event","outcome":"failure",', unknown: '"kind":"event","outcome":"unknown",' }
const ALLOWED_REQUEST = '"type":["allowed"]},"http":{"request":{'
const DENIED_REQUEST = '"type":["denied"]},"http":{"request":{'

/**
 * The record of one request as its JSON line (RFC 8785 canonical form, without `event.hash`),
 * written straight to text: nothing raw but the path. `prev` is the chain's previous hash, or
 * `undefined` without a chain. Text that requests share (a route's, a principal's, a run of
 * decisions) is made once and reused, so that a record is a few dozen pieces of text.
 */
export function requestLine (request: FastifyRequest, reply: FastifyReply | null, ending: Ending, withBody: boolean, errorCode: string | null, route: RouteRecord, settings: RecordSettings, sequence: number, prev: string | null | undefined): string {
  // No reply is known for a request aborted before the plugin's onRequest hook ran: its time is the abort's.
  const elapsed = reply === null ? 0 : reply.elapsedTime
  const decided = decisionsPart(route, request.decisions, request.policySnapshot?.version ?? null)
  const status = ending === 'response' ? (reply as FastifyReply).statusCode : null
  const principal = request.principal
  const texts = principal === null ? null : principalTexts(principal)
  const url = request.url
  const q = url.indexOf('?')
  const headers = request.headers
  const contentLength = headers['content-length']
  const userAgent = headers['user-agent']
  const upstream = request.upstream
  const raw = request.raw
  const outcome = status === null ? OUTCOMES.unknown : decided.denied || status >= 400 ? OUTCOMES.failure : OUTCOMES.success

  let text = `{"@timestamp":"${isoTime(Date.now() - elapsed)}","client":{${clientIpText(request.clientIp)}},${EVENT}`
  if (errorCode !== null) text += `"error":{"code":"${esc(errorCode)}"},`
  text += reply === null ? EVENT_START : `${EVENT_START}"duration":${Math.round(elapsed * 1e6)},`
  text += `${outcome}${decided.reason}"sequence":${sequence},${decided.denied ? DENIED_REQUEST : ALLOWED_REQUEST}`
  if (contentLength !== undefined) text += `"body":${bodyOf(request, contentLength, withBody, settings)},`
  const requestHeaders = settings.requestHeaders.length === 0 ? null : settings.redaction.headers(headers, settings.requestHeaders)
  if (requestHeaders !== null) text += `"headers":${JSON.stringify(requestHeaders)},`
  text += `"id":"${esc(request.id)}","method":"${esc(request.method)}"},"response":{`
  const responseHeaders = settings.responseHeaders.length === 0 || reply === null ? null : settings.redaction.headers(reply.getHeaders(), settings.responseHeaders)
  if (responseHeaders !== null) text += `"headers":${JSON.stringify(responseHeaders)}${status === null ? '' : ','}`
  // Node makes the version from two numbers: nothing in it needs escaping.
  text += status === null ? `},"version":"${raw.httpVersion}"},"portcullis":{` : `"status_code":${status}},"version":"${raw.httpVersion}"},"portcullis":{`
  if (ending === 'aborted') text += '"aborted":true,'
  if (prev !== undefined) text += `"chain":{"prev":${prev === null ? 'null' : `"${prev}"`}},`
  text += texts === null ? `${decided.text}${route.route}` : `${decided.text}${texts.principal}${route.route}`
  if (ending === 'timed-out') text += ',"timed_out":true'
  if (upstream !== null) text += `,"upstream":{"address":"${esc(upstream.address)}","status_code":${upstream.statusCode ?? 'null'}}`
  // Left out when the socket is already gone: an aborted request, or one whose streamed body the
  // proxy consumed, after which Node has detached the request from its socket.
  text += `},"source":{${sourceIpText((raw.socket as Socket | null)?.remoteAddress)}},"url":{"path":"`
  text += q === -1 ? `${esc(url)}"}` : `${esc(url.slice(0, q))}","query":"${esc(settings.redaction.query(url.slice(q + 1)))}"}`
  if (texts !== null) text += texts.user
  return userAgent === undefined ? `${text}}` : `${text},"user_agent":{"original":"${esc(userAgent)}"}}`
}

// The decisions part of a record: the route's last one while the request carries the same
// decisions (most are prepared once per rule and shared), else made and kept.
function decisionsPart (route: RouteRecord, decisions: Decision[] | null, version: string | null): DecisionsPart {
  const list = decisions ?? NO_DECISIONS
  const last = route.last
  if (last !== null && last.version === version && sameDecisions(last.decisions, list)) return last
  const deciding = decidingOf(list)
  let text = deciding === null ? '"decisions":[' : `"decision":${decisionText(deciding)},"decisions":[`
  for (let i = 0; i < list.length; i++) text += i === 0 ? decisionText(list[i] as Decision) : `,${decisionText(list[i] as Decision)}`
  text += `],"policy":{"version":${version === null ? 'null' : `"${esc(version)}"`}},`
  route.last = { decisions: list.slice(), version, text: flat(text), reason: deciding === null ? '' : flat(`"reason":"${esc(deciding.reason)}",`), denied: deciding?.outcome === 'deny' }
  return route.last
}

const NO_DECISIONS: readonly Decision[] = []

function sameDecisions (a: readonly Decision[], b: readonly Decision[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

// What JSON.stringify writes between the quotes of a string, without its cost when nothing is
// to be escaped (quotes, backslashes, control characters, lone surrogates): most values come back
// as they are, with nothing to copy or concatenate. A loop over the characters costs less than a
// regular expression on the short values records hold.
function esc (value: string): string {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i)
    if (c < 0x20 || c === 0x22 || c === 0x5c || (c >= 0xd800 && c <= 0xdfff)) return JSON.stringify(value).slice(1, -1)
  }
  return value
}

// `"ip":"…"`, or nothing when the address is missing (JSON.stringify leaves out undefined). Most
// records repeat the last address of each kind, so its text is kept: one for the client, one for
// the peer, which differ behind a proxy.
function lastIpText (): (ip: string | undefined) => string {
  let last: string | undefined
  let text = ''
  return (ip) => {
    if (ip === last) return text
    last = ip
    text = typeof ip === 'string' ? flat(`"ip":"${esc(ip)}"`) : ''
    return text
  }
}
const clientIpText = lastIpText()
const sourceIpText = lastIpText()

// Text made by concatenation is a tree of its pieces until something needs it whole, and each
// record that copies it would walk the tree again. Text kept to be reused is made whole once:
// reading a character of it does that, in place.
function flat (text: string): string {
  text.charCodeAt(0)
  return text
}

function stringsText (values: readonly string[]): string {
  return values.length === 0 ? '[]' : `["${values.map(esc).join('","')}"]`
}

// Decisions and principals are frozen, and most are shared by many requests (decisions prepared
// once per rule, principals kept by authn's cache of verified credentials): their text is made once.
const decisionTexts = new WeakMap<Decision, string>()

function decisionText (decision: Decision): string {
  let text = decisionTexts.get(decision)
  if (text === undefined) {
    text = `{"outcome":"${decision.outcome}","plugin":"${esc(decision.plugin)}","reason":"${esc(decision.reason)}"`
    text = decision.rule === undefined ? `${text}}` : `${text},"rule":"${esc(decision.rule)}"}`
    decisionTexts.set(decision, flat(text))
  }
  return text
}

interface PrincipalTexts {
  /** `"principal":{…},` */
  principal: string
  /** `,"user":{…}` */
  user: string
}

const principalTextsOf = new WeakMap<Principal, PrincipalTexts>()

function principalTexts (principal: Principal): PrincipalTexts {
  let texts = principalTextsOf.get(principal)
  if (texts !== undefined) return texts
  let text = '"principal":{'
  if (principal.credentialId !== undefined) text += `"credential_id":"${esc(principal.credentialId)}",`
  text += `"method":"${esc(principal.method)}"`
  if (principal.plan !== undefined) text += `,"plan":"${esc(principal.plan)}"`
  // Scopes, with the roles in user.roles, let a candidate policy judge the request again (policy preview).
  text += `,"scopes":${stringsText(principal.scopes)}`
  if (principal.tenant !== undefined) text += `,"tenant":"${esc(principal.tenant)}"`
  texts = {
    principal: flat(`${text},"type":"${esc(principal.type)}"},`),
    user: flat(`,"user":{"id":"${esc(principal.id)}","roles":${stringsText(principal.roles)}}`)
  }
  principalTextsOf.set(principal, texts)
  return texts
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
function decidingOf (decisions: readonly Decision[]): Decision | null {
  if (decisions.length === 0) return null
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
