import type { FastifyRequest } from 'fastify'
import { BadGateway, GatewayTimeout, invalidOption, InvalidOption } from '@portcullis/core'
import type { ResourceLoader } from '@portcullis/authz'

/**
 * The object a declared route addresses, fetched from the route's upstream so that authz can
 * check who owns it (`owner: { resource: 'owner' }`) or test it in a condition.
 */
export interface UpstreamResource {
  /**
   * The upstream's own path of the object, with the route's parameters: `/orders/:id`. Each
   * parameter is filled with the validated, percent-encoded value of the request.
   */
  path: string
}

type Part = string | { param: string }

/** Checks a resource path against the parameters of its route, once, at startup. */
export function compileResourcePath (input: unknown, routePath: string, path: string): Part[] {
  const spec = typeof input === 'object' && input !== null && !Array.isArray(input) ? input as Record<string, unknown> : null
  if (spec === null || typeof spec.path !== 'string' || !spec.path.startsWith('/') || /[?#]/.test(spec.path)) {
    throw invalidOption(`${path}.path`, 'the upstream path of the object, starting with "/", such as "/orders/:id"', spec?.path ?? input)
  }
  const unknown = Object.keys(spec).find((key) => key !== 'path')
  if (unknown !== undefined) throw new InvalidOption(`${path}.${unknown} is not a known option; allowed: path`)
  const params = new Set([...routePath.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1] as string))
  return spec.path.split(/(:[A-Za-z0-9_]+)/).filter((part) => part !== '').map((part) => {
    if (!part.startsWith(':')) return part
    const param = part.slice(1)
    if (!params.has(param)) throw invalidOption(`${path}.path`, `a path whose parameters are those of the route ${routePath}`, spec.path)
    return { param }
  })
}

/**
 * A loader that asks the upstream for the object with a GET of its own: no header of the
 * client's goes with it. 404 and 410 mean there is no such object (`null`); any other answer
 * that is not 2xx JSON, or no answer within the timeout, fails the request with 502 or 504.
 */
export function upstreamResourceLoader (origin: string, parts: readonly Part[], timeout: number): ResourceLoader {
  return async (request: FastifyRequest) => {
    const params = request.params as Record<string, string>
    const path = parts.map((part) => typeof part === 'string' ? part : encodeURIComponent(params[part.param] as string)).join('')
    let response: Response
    try {
      response = await fetch(origin + path, { headers: { accept: 'application/json' }, redirect: 'error', signal: AbortSignal.timeout(timeout) })
    } catch (err) {
      request.log.warn({ err, path }, 'resource lookup failed')
      throw (err as Error).name === 'TimeoutError' ? new GatewayTimeout() : new BadGateway()
    }
    if (response.status === 404 || response.status === 410) return null
    const type = response.headers.get('content-type') ?? ''
    if (!response.ok || !/^application\/(?:[\w.+-]+\+)?json/i.test(type)) {
      request.log.warn({ path, status: response.status, type }, 'resource lookup answered something else than a JSON object')
      throw new BadGateway()
    }
    try {
      return await response.json()
    } catch {
      request.log.warn({ path }, 'resource lookup answered malformed JSON')
      throw new BadGateway()
    }
  }
}
