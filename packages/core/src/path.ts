import type { FastifyInstance, FastifyRequest } from 'fastify'

/** The router settings that decide which request paths Fastify treats as the same route. */
export interface PathOptions {
  caseSensitive: boolean
  ignoreTrailingSlash: boolean
  ignoreDuplicateSlashes: boolean
  useSemicolonDelimiter: boolean
}

type RouterKey = keyof PathOptions
const DEFAULTS: Readonly<PathOptions> = Object.freeze({
  caseSensitive: true,
  ignoreTrailingSlash: false,
  ignoreDuplicateSlashes: false,
  useSemicolonDelimiter: false
})

/** Reads the router settings a Fastify instance was created with. */
export function pathOptionsOf (app: Pick<FastifyInstance, 'initialConfig'>): PathOptions {
  const config = app.initialConfig as Partial<Record<RouterKey, unknown>> & { routerOptions?: Partial<Record<RouterKey, unknown>> }
  const read = (key: RouterKey): boolean => {
    const value = config.routerOptions?.[key] ?? config[key]
    return typeof value === 'boolean' ? value : DEFAULTS[key]
  }
  return {
    caseSensitive: read('caseSensitive'),
    ignoreTrailingSlash: read('ignoreTrailingSlash'),
    ignoreDuplicateSlashes: read('ignoreDuplicateSlashes'),
    useSemicolonDelimiter: read('useSemicolonDelimiter')
  }
}

const ESCAPE = /%[0-9a-f]{2}/gi
const DUPLICATE_SLASHES = /\/{2,}/g

/**
 * The canonical form of a request target's path, such that two targets Fastify's router sends
 * to the same route (and the same parameters) have the same canonical path: the query string
 * is dropped, percent-encoding is decoded except where decoding would change the structure
 * (`%2F`, `%3F`, `%25`, …, whose hex digits are upper-cased), and then duplicate slashes,
 * a trailing slash and letter case are folded as the router is configured to fold them.
 *
 * Returns `null` for a path that is not valid percent-encoded UTF-8: the router refuses those too.
 */
export function canonicalPath (url: string, options: PathOptions = DEFAULTS): string | null {
  let end = url.length
  for (let i = 0; i < url.length; i++) {
    const c = url.charCodeAt(i)
    // '?' and '#' end the path; ';' too when the router is told so.
    if (c === 63 || c === 35 || (c === 59 && options.useSemicolonDelimiter)) { end = i; break }
  }
  let path = url.slice(0, end)
  if (path.includes('%')) {
    try {
      // decodeURI keeps reserved characters encoded; '%25' must survive it as an escape too.
      path = decodeURI(path.replace(/%25/g, '%2525')).replace(ESCAPE, (escape) => escape.toUpperCase())
    } catch {
      return null
    }
  }
  if (options.ignoreDuplicateSlashes) path = path.replace(DUPLICATE_SLASHES, '/')
  if (options.ignoreTrailingSlash && path.length > 1 && path.endsWith('/')) path = path.slice(0, -1)
  if (!options.caseSensitive) path = path.toLowerCase()
  return path
}

/**
 * A stable key for what a request asked for: the route pattern Fastify matched (`/orders/:id`),
 * or, for a request no route matched, its canonical path. Never the raw URL.
 */
export function routeKey (request: FastifyRequest, options: PathOptions = DEFAULTS): string {
  const pattern = request.routeOptions.url
  if (pattern !== undefined && request.is404 !== true) return pattern
  // Paths that are not valid percent-encoded UTF-8 all share one key rather than each its own.
  return canonicalPath(request.url, options) ?? MALFORMED_PATH_KEY
}

/** The {@link routeKey} of every request whose path cannot be decoded. */
export const MALFORMED_PATH_KEY = '(malformed)'
