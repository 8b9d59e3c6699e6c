import type { FastifyRequest } from 'fastify'

/** The `Authorization` header, parsed once per request. */
export interface Authorization {
  /** The scheme, lower-cased: schemes are case-insensitive (RFC 9110 §11.1). */
  scheme: string
  /** What follows the scheme and its separating spaces. */
  value: string
}

// token68 (RFC 9110 §11.2): the form of Bearer tokens and Basic credentials.
const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*$/

/**
 * Parses the request's `Authorization` header. Returns `null` without one, and `'duplicate'` when
 * it is sent more than once: Node keeps only the first, so the raw headers are the only place a
 * second one shows, and two credentials are never guessed between.
 */
export function parseAuthorization (request: FastifyRequest): Authorization | null | 'duplicate' {
  const header = request.headers.authorization
  if (header === undefined) return null
  const raw = request.raw.rawHeaders
  let seen = 0
  for (let i = 0; i < raw.length; i += 2) {
    if ((raw[i] as string).length === 13 && (raw[i] as string).toLowerCase() === 'authorization' && ++seen > 1) return 'duplicate'
  }
  const space = header.indexOf(' ')
  if (space === -1) return { scheme: header.toLowerCase(), value: '' }
  return { scheme: header.slice(0, space).toLowerCase(), value: header.slice(space + 1).trim() }
}

/** Whether a value has the token68 form of Bearer tokens and Basic credentials. */
export function isToken68 (value: string): boolean {
  return TOKEN68.test(value)
}

/** A quoted-string for an auth-param, with `\` and `"` escaped. */
export function quote (value: string): string {
  return `"${value.replace(/[\\"]/g, '\\$&')}"`
}
