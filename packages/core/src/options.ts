import { InvalidOption, type PortcullisError } from './errors.js'
import { MODES, type Mode } from './mode.js'

/** The error bad configuration fails startup with; its message names the option and what is allowed. */
export function invalidOption (path: string, expected: string, actual?: unknown): PortcullisError {
  const got = arguments.length > 2 ? ` (got ${describeValue(actual)})` : ''
  return new InvalidOption(`${path} must be ${expected}${got}`)
}

/** Refuses keys an options object does not know, so a typo cannot silently turn a protection off. */
export function checkKnownKeys (value: unknown, allowed: readonly string[], path: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalidOption(path, 'an object', value)
  }
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      throw new InvalidOption(`${path}.${key} is not a known option; allowed: ${allowed.join(', ')}`)
    }
  }
  return value as Record<string, unknown>
}

/** Checks an enforce/report mode option. */
export function checkMode (value: unknown, path: string): Mode {
  if (value === undefined) return 'enforce'
  if (!MODES.includes(value as Mode)) throw invalidOption(path, `one of ${MODES.join(', ')}`, value)
  return value as Mode
}

function describeValue (value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)
  if (Array.isArray(value)) return 'an array'
  if (value === null) return 'null'
  return typeof value === 'object' ? 'an object' : String(value)
}

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9a-z-]+$/i

/** Whether a string is an HTTP field name (RFC 9110 §5.1: a token). */
export function isHeaderName (name: unknown): name is string {
  return typeof name === 'string' && HEADER_NAME.test(name)
}

/** Checks the realm of `WWW-Authenticate` challenges: it must fit in a quoted-string as is. */
export function checkRealm (value: unknown, path: string): string {
  if (typeof value !== 'string' || !/^[^"\\\p{Cc}]+$/u.test(value)) throw invalidOption(path, 'a non-empty string without quotes, backslashes or control characters', value)
  return value
}

/** Checks an optional number option: `fallback` when absent, else it must pass `accept`. */
export function checkNumber (value: unknown, fallback: number, path: string, expected: string, accept: (n: number) => boolean): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || !accept(value)) throw invalidOption(path, expected, value)
  return value
}
