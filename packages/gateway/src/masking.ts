import { constants } from 'node:buffer'
import { Readable } from 'node:stream'
import { promisify } from 'node:util'
import { brotliDecompress, gunzip, inflate, inflateRaw, type ZlibOptions } from 'node:zlib'
import fp from 'fastify-plugin'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { claimChainStep, checkKnownKeys, checkMode, checkNumber, deny, invalidOption, isJsonMediaType, readPayload, recordDecision, routeConfigOf, type Mode } from '@portcullis/core'
import { MaskingFailed } from './errors.js'
import { checkRegexSource } from './user-agents.js'

export const MASKING_PLUGIN = '@portcullis/gateway/masking'

/** The largest response body (after decompression) that is read to be masked. */
export const DEFAULT_MASKING_MAX_BYTES = 1024 * 1024

/** Personal data of your own to mask, such as national identity or account numbers. */
export interface MaskingPattern {
  /** Names the pattern in decisions (`pattern:<name>`): letters, digits, `_`, `.` and `-`. */
  name: string
  /** A regular expression, matched case-insensitively in every string of the body. @example '\\b\\d{3}-\\d{2}-\\d{4}\\b' */
  regex: string
  /** Literal text that replaces each match. @default '***' */
  replacement?: string
}

/** What a route may set for itself; each given key replaces the plugin's. */
export interface MaskingRouteOptions {
  /** Mask e-mail addresses: `alice@example.com` becomes `a***@example.com`. @default true */
  emails?: boolean
  /** Mask payment card numbers (13 to 19 digits that pass the Luhn check): all but the last four digits. @default true */
  cards?: boolean
  /** @default [] */
  patterns?: MaskingPattern[]
  /** The largest body, in bytes after decompression, that is masked; a larger one is refused (502). @default 1048576 */
  maxBytes?: number
}

export interface MaskingOptions extends MaskingRouteOptions {
  /** `report` records what would be masked and sends the body as it is. @default 'enforce' */
  mode?: Mode
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Masking of this route's JSON responses: options that replace the plugin's, or `false` to send them as they are. */
    masking?: MaskingRouteOptions | false
  }
}

// An e-mail address: a local part that starts where a run of local-part characters starts (so
// that a long run without an "@" is tried once, not once per character), and a domain with an
// alphabetic top-level label (so that `lodash@4.17.21` is not one). Non-ASCII characters count
// as letters: internationalised addresses are personal data too.
const EMAIL = "(?<![\\w.%+'\\u0080-\\uFFFF-])[\\w.%+'\\u0080-\\uFFFF-]+@(?:[\\w\\u0080-\\uFFFF-]+\\.)+[a-z\\u0080-\\uFFFF]{2,}"
// A run of at least 13 digits, single spaces or dashes allowed between them; which windows of it
// are card numbers is decided in code.
const DIGIT_RUN = '(?<!\\d)\\d(?:[ -]?\\d){12,}(?!\\d)'
// A JSON string, or a JSON number that could be a card number.
const STRING_TOKEN = '"[^"\\\\]*(?:\\\\.[^"\\\\]*)*"'
const CARD_NUMBER_TOKEN = '(?<![\\d.eE+-])[2-6]\\d{12,18}(?![\\d.eE])'
// Headers that describe the body as it was: wrong once it is masked.
const STALE_HEADERS = ['content-length', 'content-encoding', 'etag', 'content-md5', 'digest', 'content-digest', 'repr-digest']

interface Masker {
  readonly mode: Mode
  readonly maxBytes: number
  /** Over the raw body: anything that may need masking, including escapes that could hide it. */
  readonly scan: RegExp
  /** Over a decoded JSON string: what to mask. */
  readonly find: RegExp
  /** Over a valid JSON text: strings, and numbers that could be card numbers. */
  readonly tokens: RegExp
  readonly patterns: ReadonlyArray<{ readonly group: string, readonly name: string, readonly replacement: string }>
}

const ROUTE_KEYS = ['emails', 'cards', 'patterns', 'maxBytes']

function checkBoolean (value: unknown, path: string): boolean {
  if (value === undefined) return true
  if (typeof value !== 'boolean') throw invalidOption(path, 'a boolean', value)
  return value
}

function compilePatterns (value: unknown, path: string): Array<{ name: string, source: string, replacement: string }> {
  if (value === undefined) return []
  if (!Array.isArray(value)) throw invalidOption(path, 'a list of { name, regex, replacement? }', value)
  const names = new Set<string>()
  return value.map((item: unknown, index) => {
    const at = `${path}[${index}]`
    const { name, regex, replacement = '***' } = checkKnownKeys(item, ['name', 'regex', 'replacement'], at)
    if (typeof name !== 'string' || !/^[\w.-]+$/.test(name) || names.has(name)) throw invalidOption(`${at}.name`, 'a name of its own, of letters, digits, _, . and -', name)
    names.add(name)
    if (typeof replacement !== 'string') throw invalidOption(`${at}.replacement`, 'a string', replacement)
    return { name, source: checkRegexSource(regex, `${at}.regex`), replacement }
  })
}

/** Compiles masking options once; `null` when they mask nothing. */
function compileMasker (options: MaskingRouteOptions, path: string, mode: Mode): Masker | null {
  const emails = checkBoolean(options.emails, `${path}.emails`)
  const cards = checkBoolean(options.cards, `${path}.cards`)
  const patterns = compilePatterns(options.patterns, `${path}.patterns`)
  const maxBytes = checkNumber(options.maxBytes, DEFAULT_MASKING_MAX_BYTES, `${path}.maxBytes`, `a positive whole number of bytes, at most ${constants.MAX_LENGTH}`, (n) => Number.isSafeInteger(n) && n > 0 && n <= constants.MAX_LENGTH)
  // Your patterns first: where one of them and a built-in one match at the same place, yours wins.
  const parts = patterns.map((p, index) => `(?<p${index}>${p.source})`)
  if (emails) parts.push(`(?<e>${EMAIL})`)
  if (cards) parts.push(`(?<c>${DIGIT_RUN})`)
  if (parts.length === 0) return null
  // A JSON escape can spell what a pattern looks for (`\u0040` is "@"): a body with one is
  // decoded before it is passed. Built-in patterns only care for \u escapes; yours for any.
  const escape = patterns.length > 0 ? '(?<x>\\\\)' : '(?<x>\\\\u)'
  return {
    mode,
    maxBytes,
    scan: new RegExp([...parts, escape].join('|'), 'gi'),
    find: new RegExp(parts.join('|'), 'gi'),
    tokens: new RegExp(cards ? `${STRING_TOKEN}|${CARD_NUMBER_TOKEN}` : STRING_TOKEN, 'g'),
    patterns: patterns.map((p, index) => ({ group: `p${index}`, name: p.name, replacement: p.replacement }))
  }
}

function isDigit (code: number): boolean {
  return code >= 48 && code <= 57
}

/** The Luhn check over the digits of text[start, end), separators skipped: no string is made. */
function luhn (text: string, start: number, end: number): boolean {
  let sum = 0
  let double = false
  for (let i = end - 1; i >= start; i--) {
    let digit = text.charCodeAt(i) - 48
    if (digit < 0 || digit > 9) continue
    if (double && (digit *= 2) > 9) digit -= 9
    sum += digit
    double = !double
  }
  return sum % 10 === 0
}

/** The end of the digit group that starts at `at`. */
function groupEnd (run: string, at: number): number {
  while (at < run.length && isDigit(run.charCodeAt(at))) at++
  return at
}

/**
 * The card numbers in a run of digit groups (separated by one space or dash), as [start, end)
 * ranges: from each group, the longest window of whole groups that is a card number: 13 to 19
 * digits of the major networks' ranges (2 to 6, so not millisecond timestamps) that pass the Luhn
 * check. A card next to other digits (`4111 1111 1111 1111 123`) is still found. Cards are written
 * whole or in groups of three digits or more, so a shorter group ends a window: that also keeps a
 * long run of `1 2 3 …` cheap. Nothing is allocated for a run without a card.
 */
function cardRanges (run: string): Array<[number, number]> {
  const ranges: Array<[number, number]> = []
  for (let start = 0; start < run.length;) {
    const first = run.charCodeAt(start)
    let found = -1
    if (first >= 50 && first <= 54) {
      let digits = 0
      for (let at = start; at < run.length;) {
        const end = groupEnd(run, at)
        if (end - at < 3 || (digits += end - at) > 19) break
        if (digits >= 13 && luhn(run, start, end)) found = end
        at = end + 1
      }
    }
    if (found === -1) {
      start = groupEnd(run, start) + 1
    } else {
      ranges.push([start, found])
      start = found + 1
    }
  }
  return ranges
}

/** All digits but the last four become `*`; spaces and dashes stay. */
function maskDigits (text: string): string {
  let digitsLeft = text.replace(/\D/g, '').length
  let masked = ''
  for (const c of text) {
    if (c >= '0' && c <= '9') masked += digitsLeft-- > 4 ? '*' : c
    else masked += c
  }
  return masked
}

function maskRun (run: string): string {
  let masked = run
  for (const [start, end] of cardRanges(run)) masked = masked.slice(0, start) + maskDigits(run.slice(start, end)) + masked.slice(end)
  return masked
}

/** `alice@example.com` → `a***@example.com`: the first character and the domain stay. */
function maskEmail (address: string): string {
  return String.fromCodePoint(address.codePointAt(0) as number) + '***' + address.slice(address.indexOf('@'))
}

/** The one pass over a body that does not need masking: no match, or only digit runs that are no card. */
function needsMasking (text: string, masker: Masker): boolean {
  const { scan } = masker
  scan.lastIndex = 0
  for (let match = scan.exec(text); match !== null; match = scan.exec(text)) {
    if (match.groups?.c === undefined || cardRanges(match[0]).length > 0) return true
  }
  return false
}

function maskString (value: string, masker: Masker, kinds: Set<string>): string {
  return value.replace(masker.find, (match: string, ...rest: unknown[]) => {
    const groups = rest[rest.length - 1] as Record<string, string | undefined>
    if (groups.e !== undefined) {
      kinds.add('email')
      return maskEmail(match)
    }
    if (groups.c !== undefined) {
      const masked = maskRun(match)
      if (masked !== match) kinds.add('card')
      return masked
    }
    const pattern = masker.patterns.find((p) => groups[p.group] !== undefined) as Masker['patterns'][number]
    kinds.add(`pattern:${pattern.name}`)
    return pattern.replacement
  })
}

/**
 * Masks a valid JSON text token by token: strings are decoded, masked and written again only when
 * something changed, card numbers written as JSON numbers become masked strings; everything else
 * (other numbers with their precision, the layout) is copied as it is. The result is valid JSON.
 */
function maskJson (text: string, masker: Masker, kinds: Set<string>): string {
  return text.replace(masker.tokens, (token) => {
    if (token.charCodeAt(0) !== 34) {
      if (!luhn(token, 0, token.length)) return token
      kinds.add('card')
      return `"${maskDigits(token)}"`
    }
    const value = token.includes('\\') ? JSON.parse(token) as string : token.slice(1, -1)
    const masked = maskString(value, masker, kinds)
    return masked === value ? token : JSON.stringify(masked)
  })
}

type Decoder = (body: Buffer, options: ZlibOptions) => Promise<Buffer>
const gunzipAsync = promisify(gunzip) as Decoder
const inflateAsync = promisify(inflate) as Decoder
const inflateRawAsync = promisify(inflateRaw) as Decoder
const DECODERS = new Map<string, Decoder>([
  ['gzip', gunzipAsync],
  ['x-gzip', gunzipAsync],
  ['br', promisify(brotliDecompress) as Decoder],
  // "deflate" is the zlib format (RFC 9110 §8.4.1.2), but some servers send it raw.
  ['deflate', async (body, options) => await inflateAsync(body, options).catch(async () => await inflateRawAsync(body, options))]
])

function encodingsOf (header: unknown): string[] | null {
  if (header === undefined) return null
  const encodings = String(header).toLowerCase().split(',').map((e) => e.trim()).filter((e) => e !== '' && e !== 'identity')
  return encodings.length === 0 ? null : encodings
}

/** Undoes the content codings, the last applied first; the output may not exceed `maxBytes`, so a small bomb cannot blow up. */
async function decode (body: Buffer, encodings: string[], maxBytes: number): Promise<Buffer> {
  for (const encoding of encodings.reverse()) {
    const decoder = DECODERS.get(encoding)
    if (decoder === undefined) throw new Error(`content coding ${encoding} is not supported`)
    body = await decoder(body, { maxOutputLength: maxBytes })
  }
  return body
}

type Body = string | Buffer | Readable

/**
 * Fails closed: a body that cannot be checked is not sent (502), since sending it would pass
 * whatever personal data it holds. In report mode it is recorded and sent as it is.
 */
function refuse (request: FastifyRequest, reply: FastifyReply, masker: Masker, body: Body, rule: string): Body {
  // The problem body replaces this one: headers that describe this one (its coding above all)
  // would make the problem unreadable.
  if (masker.mode === 'enforce') removeStaleHeaders(reply)
  deny(request, masker.mode, MASKING_PLUGIN, new MaskingFailed(), `masking.${rule}`)
  return body
}

function removeStaleHeaders (reply: FastifyReply): void {
  for (const name of STALE_HEADERS) reply.removeHeader(name)
}

async function maskBody (request: FastifyRequest, reply: FastifyReply, payload: Body, masker: Masker): Promise<Body> {
  const read = await readPayload(payload, masker.maxBytes)
  if (read.text === null) {
    // Masking streamed bodies chunk by chunk would miss what spans two chunks: the body is read
    // whole, up to maxBytes. A larger one is refused rather than sent unchecked; raise maxBytes,
    // or turn masking off for routes that stream large bodies.
    if (masker.mode === 'enforce' && payload instanceof Readable) payload.destroy()
    return refuse(request, reply, masker, read.payload, 'maxBytes')
  }
  if (read.text === '') return read.payload
  let text = read.text
  const encodings = encodingsOf(reply.getHeader('content-encoding'))
  if (encodings !== null) {
    // Decoded to be masked, and sent decoded when anything was: compressing again is the job of
    // a compression plugin registered after this one.
    try {
      text = (await decode(Buffer.from(read.payload), encodings, masker.maxBytes)).toString('utf8')
    } catch {
      return refuse(request, reply, masker, read.payload, 'content-encoding')
    }
  }
  if (!needsMasking(text, masker)) return read.payload
  try {
    // The token walk relies on valid JSON; a body that only claims to be JSON is refused.
    JSON.parse(text)
  } catch {
    return refuse(request, reply, masker, read.payload, 'json')
  }
  const kinds = new Set<string>()
  const masked = maskJson(text, masker, kinds)
  if (kinds.size === 0) return read.payload
  const rule = [...kinds].join(',')
  if (masker.mode === 'report') {
    recordDecision(request, { plugin: MASKING_PLUGIN, outcome: 'would-deny', reason: 'PORTCULLIS_GATEWAY_MASKED', rule })
    return read.payload
  }
  recordDecision(request, { plugin: MASKING_PLUGIN, outcome: 'allow', reason: 'PORTCULLIS_GATEWAY_MASKED', rule })
  removeStaleHeaders(reply)
  return masked
}

const kMasker = Symbol('portcullis.masking')
const OPTION_KEYS = [...ROUTE_KEYS, 'mode']

const plugin: FastifyPluginAsync<MaskingOptions> = async (app, options) => {
  checkKnownKeys(options, OPTION_KEYS, 'masking')
  claimChainStep(app, { step: 11, name: MASKING_PLUGIN, hooks: ['onSend'] })
  const mode = checkMode(options.mode, 'masking.mode')
  const global = compileMasker(options, 'masking', mode)

  // Until a route has a say, no request needs its route's config looked up.
  let routesSay = false
  app.addHook('onRoute', (route) => {
    const config = (route.config ?? {}) as { masking?: MaskingRouteOptions | false }
    if (config.masking === undefined) return
    routesSay = true
    const path = `route ${String(route.method)} ${route.url} config.masking`
    const own = config.masking === false ? null : compileMasker({ ...options, ...checkKnownKeys(config.masking, ROUTE_KEYS, path) }, path, mode)
    route.config = Object.assign({ ...config }, { [kMasker]: own })
  })

  // An instance hook, so that it runs before compression plugins registered after it.
  app.addHook('onSend', (request, reply, payload, done) => {
    const own = routesSay ? (routeConfigOf(request) as unknown as Record<typeof kMasker, Masker | null | undefined>)[kMasker] : undefined
    const masker = own === undefined ? global : own
    if (masker === null || payload === null || payload === undefined || !isJsonMediaType(reply.getHeader('content-type'))) return done(null, payload)
    maskBody(request, reply, payload as Body, masker).then((body) => done(null, body), (err: Error) => done(err))
  })
}

/**
 * Masks personal data in JSON responses (step 11): e-mail addresses, payment card numbers and
 * patterns of your own, in bodies sent as text, buffers or streams (proxied answers), compressed
 * or not. A body that cannot be checked is not sent.
 */
export const portcullisMasking = fp(plugin, { fastify: '5.x', name: MASKING_PLUGIN, dependencies: ['@portcullis/core'] })
