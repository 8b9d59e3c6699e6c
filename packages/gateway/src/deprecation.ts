import fp from 'fastify-plugin'
import type { FastifyPluginAsync, onSendHookHandler } from 'fastify'
import { claimChainStep, checkKnownKeys, hooksOf, invalidOption, recordDecision, routeConfigOf, withHeaders } from '@portcullis/core'
import { SunsetGone } from './errors.js'

export const DEPRECATION_PLUGIN = '@portcullis/gateway/deprecation'

/** An ISO 8601 date (`2026-01-31`) or date-time with an offset (`2026-01-31T12:00:00Z`), or a Date. */
export type DeprecationDate = string | Date

/** How a route is being retired. At least one of `deprecated` and `sunset` is required. */
export interface RouteDeprecation {
  /**
   * When the route was (or will be) deprecated: sent as `Deprecation: @<seconds>` (RFC 9745).
   * The header carries a date, so a date is required: `true` alone is refused.
   * @example '2025-07-01'
   */
  deprecated?: DeprecationDate
  /** When the route stops working: sent as `Sunset: <HTTP-date>` (RFC 8594). Not before `deprecated`. */
  sunset?: DeprecationDate
  /** Documentation of the deprecation: `Link: <url>; rel="deprecation"`. An http(s) URL or a path. */
  link?: string
  /** Documentation of the sunset (such as the migration guide): `Link: <url>; rel="sunset"`. */
  sunsetLink?: string
  /**
   * Once the sunset has passed, answer 410 Gone (`PORTCULLIS_GATEWAY_SUNSET`) at step 2, before
   * authentication, instead of serving the route.
   * @default false
   */
  cutoff?: boolean
}

export interface DeprecationOptions {
  /** The clock `cutoff` compares the sunset with, in milliseconds since the epoch. @default Date.now */
  now?: () => number
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Announces this route's deprecation and sunset; `false` (or nothing) for a route that is not retiring. */
    deprecation?: RouteDeprecation | false
  }
}

interface CompiledDeprecation {
  /** `METHOD /path`, for decisions. */
  readonly name: string
  /** The Sunset header value; `null` without a sunset. */
  readonly sunset: string | null
  /** When `cutoff` is on, the time from which the route answers 410; `null` otherwise. */
  readonly cutoffAt: number | null
}

const ROUTE_KEYS = ['deprecated', 'sunset', 'link', 'sunsetLink', 'cutoff']
const ISO_DATE = /^(\d{4})-(\d{2})-(\d{2})(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,3})?)?(?:Z|[+-]\d{2}:\d{2}))?$/
// The years an IMF-fixdate (RFC 9110 §5.6.7) can write: four digits.
const LATEST = Date.UTC(9999, 11, 31, 23, 59, 59, 999)
const kDeprecation = Symbol('portcullis.deprecation')

/** A date option as milliseconds since the epoch. Date-times need an offset: a local time would depend on the server's zone. */
export function parseDate (value: unknown, path: string): number {
  const expected = 'an ISO 8601 date ("2026-01-31") or date-time with an offset ("2026-01-31T12:00:00Z"), or a Date, from 1970 to 9999'
  let time = Number.NaN
  if (value instanceof Date) {
    time = value.getTime()
  } else if (typeof value === 'string') {
    const parts = ISO_DATE.exec(value)
    if (parts !== null) {
      const [year, month, day] = parts.slice(1, 4).map(Number) as [number, number, number]
      // Date.parse rolls 2025-02-30 over to March; a date that is not in the calendar is a typo.
      const calendar = new Date(Date.UTC(year, month - 1, day))
      if (calendar.getUTCMonth() === month - 1 && calendar.getUTCDate() === day) time = Date.parse(value)
    }
  }
  if (!(time >= 0 && time <= LATEST)) throw invalidOption(path, expected, value)
  return time
}

/** A Link target: an absolute http(s) URL, or a path on this server. */
function checkLink (value: unknown, path: string): string {
  if (typeof value === 'string') {
    if (/^https?:\/\//i.test(value) && URL.canParse(value)) return new URL(value).href
    if (/^\/(?!\/)/.test(value)) {
      const url = new URL(value, 'http://localhost')
      return url.pathname + url.search + url.hash
    }
  }
  throw invalidOption(path, 'an absolute http(s) URL or a path starting with /', value)
}

function compile (rule: unknown, name: string, headers: Array<[string, string]>): CompiledDeprecation {
  const path = `route ${name} config.deprecation`
  const { deprecated, sunset, link, sunsetLink, cutoff = false } = checkKnownKeys(rule, ROUTE_KEYS, path) as RouteDeprecation
  if ((deprecated as unknown) === true) throw invalidOption(`${path}.deprecated`, 'a date, not true: the Deprecation header (RFC 9745) says when', true)
  if (deprecated === undefined && sunset === undefined) throw invalidOption(path, 'an object with a deprecated date, a sunset date or both', rule)
  const since = deprecated === undefined ? null : parseDate(deprecated, `${path}.deprecated`)
  const until = sunset === undefined ? null : parseDate(sunset, `${path}.sunset`)
  if (since !== null && until !== null && until < since) throw invalidOption(`${path}.sunset`, `no earlier than ${path}.deprecated`, sunset)
  if (typeof cutoff !== 'boolean') throw invalidOption(`${path}.cutoff`, 'a boolean', cutoff)
  if (cutoff && until === null) throw invalidOption(`${path}.cutoff`, `used with ${path}.sunset`, cutoff)
  // Header values are written once, here; a response only copies them.
  if (since !== null) headers.push(['deprecation', `@${Math.floor(since / 1000)}`])
  const sunsetValue = until === null ? null : new Date(until).toUTCString()
  if (sunsetValue !== null) headers.push(['sunset', sunsetValue])
  const links: string[] = []
  if (link !== undefined) links.push(`<${checkLink(link, `${path}.link`)}>; rel="deprecation"`)
  if (sunsetLink !== undefined) links.push(`<${checkLink(sunsetLink, `${path}.sunsetLink`)}>; rel="sunset"`)
  if (links.length > 0) headers.push(['link', links.join(', ')])
  return { name, sunset: sunsetValue, cutoffAt: cutoff ? until : null }
}

function headersHook (headers: ReadonlyArray<[string, string]>): onSendHookHandler<unknown> {
  return function deprecationHeaders (_request, reply, payload, done) {
    for (const [name, value] of headers) {
      const current = name === 'link' ? reply.getHeader('link') : undefined
      // Other links (pagination, the upstream's own) stay: Link is a list.
      if (current === undefined) reply.header(name, value)
      else reply.header(name, Array.isArray(current) ? [...current, value] : `${String(current)}, ${value}`)
    }
    done(null, payload)
  }
}

const plugin: FastifyPluginAsync<DeprecationOptions> = async (app, options) => {
  checkKnownKeys(options, ['now'], 'deprecation')
  // Its cut-off answers before anyone is authenticated: a retired route is gone for everyone.
  claimChainStep(app, { step: 2, name: DEPRECATION_PLUGIN, hooks: ['onRequest'] })
  const now = options.now ?? Date.now
  if (typeof now !== 'function') throw invalidOption('deprecation.now', 'a function returning milliseconds since the epoch', now)

  // Until a route has a cutoff, no request needs its route's config looked up.
  let cutoffs = false
  app.addHook('onRoute', (route) => {
    const config = (route.config ?? {}) as { deprecation?: RouteDeprecation | false }
    if (config.deprecation === undefined || config.deprecation === false) return
    const headers: Array<[string, string]> = []
    const compiled = compile(config.deprecation, `${String(route.method)} ${route.url}`, headers)
    if (compiled.cutoffAt !== null) cutoffs = true
    // The headers belong to this route's responses only, rejections included: a route hook.
    route.onSend = [...hooksOf(route.onSend), headersHook(headers)]
    route.config = Object.assign({ ...config }, { [kDeprecation]: compiled })
  })

  // An instance hook, so that it runs in its place at step 2: a retired route answers 410
  // before anything authenticates, counts or reaches the handler or the upstream.
  app.addHook('onRequest', (request, _reply, done) => {
    if (!cutoffs) return done()
    const compiled = (routeConfigOf(request) as unknown as Record<typeof kDeprecation, CompiledDeprecation | undefined>)[kDeprecation]
    if (compiled?.cutoffAt == null || now() < compiled.cutoffAt) return done()
    recordDecision(request, { plugin: DEPRECATION_PLUGIN, outcome: 'deny', reason: 'PORTCULLIS_GATEWAY_SUNSET', rule: compiled.name })
    done(withHeaders(new SunsetGone(), { sunset: compiled.sunset as string }))
  })
}

/**
 * Deprecation (RFC 9745), Sunset (RFC 8594) and their Link relations on the responses of retiring
 * routes; with `cutoff`, a route past its sunset answers 410 Gone.
 */
export const portcullisDeprecation = fp(plugin, { fastify: '5.x', name: DEPRECATION_PLUGIN, dependencies: ['@portcullis/core'] })
