import type { RedactOptions } from './options.js'

/** What a redacted value is written as. */
export const REDACTED = '[REDACTED]'

/** Headers whose values are never written, whatever the configuration. */
export const ALWAYS_REDACTED_HEADERS: readonly string[] = Object.freeze(['authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'x-api-key'])
/** Query parameters never written by default: where keys, tokens and signatures travel in URLs. */
export const DEFAULT_REDACTED_QUERY: readonly string[] = Object.freeze([
  'access_token', 'api_key', 'apikey', 'code', 'id_token', 'key', 'password', 'refresh_token', 'secret', 'sig', 'signature', 'token'
])
/** Body properties never written by default, wherever they are. */
export const DEFAULT_REDACTED_BODY_KEYS: readonly string[] = Object.freeze([
  'password', 'passwd', 'secret', 'token', 'access_token', 'refresh_token', 'client_secret', 'api_key', 'apikey',
  'cvv', 'cvc', 'card_number', 'cardnumber', 'pan'
])

export interface Redaction {
  /** The headers to write, sorted by name, secret ones redacted; `null` when none is to be written. */
  headers: (headers: Record<string, string | number | string[] | undefined>, which: string[] | '*') => Record<string, string | string[]> | null
  /** The query string with the values of secret parameters redacted. */
  query: (query: string) => string
  /** A copy of a JSON body without its secret values. */
  body: (body: unknown) => unknown
}

/** Compiles the redaction rules once, at load time. */
export function compileRedaction (options: Required<RedactOptions>): Redaction {
  const secretHeaders = new Set([...ALWAYS_REDACTED_HEADERS, ...options.headers.map((name) => name.toLowerCase())])
  const secretParams = new Set([...DEFAULT_REDACTED_QUERY, ...options.query].map((name) => name.toLowerCase()))
  const secretKeys = new Set([...DEFAULT_REDACTED_BODY_KEYS, ...options.bodyKeys].map((name) => name.toLowerCase()))
  const paths = options.body.map(parsePointer)

  return {
    headers (headers, which) {
      const names = which === '*' ? Object.keys(headers).sort() : which
      let written: Record<string, string | string[]> | null = null
      for (const name of names) {
        const value = headers[name]
        if (value === undefined) continue
        written ??= {}
        written[name] = secretHeaders.has(name) ? REDACTED : Array.isArray(value) ? value.map(String) : String(value)
      }
      return written
    },
    query (query) {
      return query.split('&').map((pair) => {
        const equals = pair.indexOf('=')
        if (equals === -1) return pair
        const name = decodeName(pair.slice(0, equals))
        // A name that does not decode might be anything: its value is not written.
        return name === null || secretParams.has(name.toLowerCase()) ? `${pair.slice(0, equals)}=${REDACTED}` : pair
      }).join('&')
    },
    body (body) {
      let copy = withoutKeys(body, secretKeys)
      for (const path of paths) copy = withoutPath(copy, path, 0)
      return copy
    }
  }
}

function decodeName (text: string): string | null {
  try {
    return decodeURIComponent(text.replaceAll('+', ' '))
  } catch {
    return null
  }
}

function parsePointer (pointer: string): string[] {
  return pointer.slice(1).split('/').map((token) => token.replaceAll('~1', '/').replaceAll('~0', '~'))
}

// Copies plain JSON data (what a JSON body parses to), redacting the named properties at any depth.
function withoutKeys (value: unknown, keys: ReadonlySet<string>): unknown {
  if (Array.isArray(value)) return value.map((item) => withoutKeys(item, keys))
  if (typeof value !== 'object' || value === null) return value
  // Without a prototype, a "__proto__" key is a property like any other.
  const copy: Record<string, unknown> = Object.create(null)
  for (const [key, item] of Object.entries(value)) {
    copy[key] = keys.has(key.toLowerCase()) ? REDACTED : withoutKeys(item, keys)
  }
  return copy
}

// The copy is already private to the record, so the path is redacted in place.
function withoutPath (value: unknown, path: string[], at: number): unknown {
  if (typeof value !== 'object' || value === null) return value
  const token = path[at] as string
  const container = value as Record<string, unknown>
  const targets = token === '*' ? Object.keys(container) : Object.hasOwn(container, token) ? [token] : []
  for (const key of targets) {
    container[key] = at === path.length - 1 ? REDACTED : withoutPath(container[key], path, at + 1)
  }
  return value
}
