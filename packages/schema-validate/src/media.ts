import type { IncomingMessage } from 'node:http'
import type { MediaRule } from './operations.js'

// RFC 9110 token characters, for both halves of a media type.
const MEDIA_TYPE = /^[!#$%&'*+.^_`|~0-9a-z-]+\/[!#$%&'*+.^_`|~0-9a-z-]+$/

/**
 * The essence of a `Content-Type` value: `type/subtype`, lower case, without parameters or the
 * whitespace around it, so that `Application/JSON ; charset=utf-8` is `application/json`. Null
 * for a value that is not a media type.
 */
export function essenceOf (value: string): string | null {
  // What nearly every JSON client sends, as it is.
  if (value === 'application/json') return value
  const semicolon = value.indexOf(';')
  const essence = (semicolon === -1 ? value : value.slice(0, semicolon)).trim().toLowerCase()
  return MEDIA_TYPE.test(essence) ? essence : null
}

/** The rule for a media type: the exact one, else `type/*`, else `*\/*`. */
export function ruleFor (rules: readonly MediaRule[], essence: string): MediaRule | undefined {
  let range: MediaRule | undefined
  let any: MediaRule | undefined
  const family = essence.slice(0, essence.indexOf('/') + 1) + '*'
  for (const rule of rules) {
    if (rule.range === essence) return rule
    if (rule.range === family) range = rule
    else if (rule.range === '*/*') any = rule
  }
  return range ?? any
}

/** Whether the request came with more than one `Content-Type` field (Node.js keeps the first of them). */
export function hasSeveralContentTypes (raw: IncomingMessage): boolean {
  const headers = raw.rawHeaders
  let seen = 0
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i] as string
    if (name.length === 12 && name.toLowerCase() === 'content-type' && ++seen > 1) return true
  }
  return false
}

/** Whether a request carries a body, whatever it is: a length above zero, or chunks. */
export function hasBody (raw: IncomingMessage): boolean {
  const length = raw.headers['content-length']
  return (length !== undefined && length !== '0') || raw.headers['transfer-encoding'] !== undefined
}
