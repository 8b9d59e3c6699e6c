import type { IncomingHttpHeaders } from 'node:http'
import type { MediaRule } from './operations.js'

export const JSON_TYPE = 'application/json'

// RFC 9110 token characters, for both halves of a media type.
const MEDIA_TYPE = /^[!#$%&'*+.^_`|~0-9a-z-]+\/[!#$%&'*+.^_`|~0-9a-z-]+$/

/**
 * The essence of a `Content-Type` value: `type/subtype`, lower case, without parameters or the
 * whitespace around it, so that `Application/JSON ; charset=utf-8` is `application/json`. Null
 * for a value that is not a media type.
 */
export function essenceOf (value: string): string | null {
  // What nearly every JSON client sends, answered with the literal, which later comparisons
  // with it can tell equal by reference.
  if (value === JSON_TYPE) return JSON_TYPE
  const semicolon = value.indexOf(';')
  const essence = (semicolon === -1 ? value : value.slice(0, semicolon)).trim().toLowerCase()
  return MEDIA_TYPE.test(essence) ? essence : null
}

/** The rule for a media type: the exact one, else `type/*`, else `*\/*`. */
export function ruleFor (rules: readonly MediaRule[], essence: string): MediaRule | undefined {
  for (const rule of rules) if (rule.range === essence) return rule
  const family = essence.slice(0, essence.indexOf('/') + 1) + '*'
  let any: MediaRule | undefined
  for (const rule of rules) {
    if (rule.range === family) return rule
    if (rule.range === '*/*') any = rule
  }
  return any
}

/**
 * Whether the request came with more than one `Content-Type` field (Node.js keeps the first of
 * them). `rawHeaders` holds names as sent: nearly always in lower case, so a name is lower-cased
 * only when it is not already.
 */
export function hasSeveralContentTypes (rawHeaders: readonly string[]): boolean {
  let seen = 0
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string
    if (name.length === 12 && (name === 'content-type' || name.toLowerCase() === 'content-type') && ++seen > 1) return true
  }
  return false
}

/** Whether a request carries a body, whatever it is: a length above zero, or chunks. */
export function hasBody (headers: IncomingHttpHeaders): boolean {
  const length = headers['content-length']
  return (length !== undefined && length !== '0') || headers['transfer-encoding'] !== undefined
}
