import type { FastifyCorsOptions } from '@fastify/cors'
import type { FastifyRequest } from 'fastify'
import { invalidOption } from '@portcullis/core'

/** Options of CORS: those of `@fastify/cors`, with `origin` required. */
export type CorsOptions = Omit<FastifyCorsOptions, 'hook' | 'delegator' | 'strictPreflight' | 'preflight'>

/**
 * The options `@fastify/cors` is registered with. CORS runs at `onRequest` (step 2), before
 * authentication: a browser's preflight carries no credentials and must be answered without them,
 * and the `Access-Control-Allow-Origin` it sets lets the browser read a later 401 or 403 too.
 *
 * Only a real preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered
 * here; any other `OPTIONS` request goes on to its route like any request, rather than being
 * refused with `@fastify/cors`'s plain-text 400.
 */
export function corsRegistration (options: CorsOptions, path: string): FastifyCorsOptions {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw invalidOption(path, '@fastify/cors options, an object with at least origin', options)
  for (const fixed of ['hook', 'delegator', 'strictPreflight', 'preflight']) {
    if (fixed in options) throw invalidOption(`${path}.${fixed}`, 'left out: CORS runs at onRequest, before authentication, and answers real preflights only')
  }
  const { origin, credentials } = options
  // @fastify/cors allows every origin when none is given: here that has to be said.
  if (origin === undefined) throw invalidOption(`${path}.origin`, 'the origins allowed to call, such as ["https://app.example.com"] (or "*" for any, without credentials)')
  const anyOrigin = origin === true || origin === '*' || (Array.isArray(origin) && origin.includes('*'))
  if (credentials === true && anyOrigin) {
    throw invalidOption(`${path}.origin`, 'a list of origins when credentials is true: any site could otherwise send requests with the user\'s cookies and read the answers', origin)
  }
  const preflight: FastifyCorsOptions = { ...options, preflight: true, strictPreflight: true }
  const other: FastifyCorsOptions = { ...options, preflight: false }
  return {
    hook: 'onRequest',
    delegator: (request: FastifyRequest, callback: (error: Error | null, options: FastifyCorsOptions) => void) => {
      const isPreflight = request.raw.method === 'OPTIONS' && request.headers.origin !== undefined && request.headers['access-control-request-method'] !== undefined
      callback(null, isPreflight ? preflight : other)
    }
  } as FastifyCorsOptions
}
