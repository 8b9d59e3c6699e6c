import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import helmet, { type HelmetOptions } from 'helmet'
import { claimChainStep, invalidOption, routeConfigOf } from '@portcullis/core'

/** Options of the security headers: those of helmet, whose defaults suit an API. */
export type SecurityHeadersOptions = HelmetOptions

declare module 'fastify' {
  interface FastifyContextConfig {
    /** `false` sends no security headers on this route (`@portcullis/gateway`'s `helmet` part). */
    helmet?: false
  }
}

export const SECURITY_HEADERS_PLUGIN = '@portcullis/gateway/security-headers'

/**
 * The headers helmet would set, computed once. Helmet builds them from its options alone, so they
 * are the same for every response; building its middleware per request, as a wrapper around it
 * would, costs more than everything else this step does.
 */
export function securityHeadersOf (options: SecurityHeadersOptions, path: string): Record<string, string> {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw invalidOption(path, 'helmet\'s options, an object (true for its defaults)', options)
  const directives = (options.contentSecurityPolicy as { directives?: Record<string, unknown> } | undefined)?.directives ?? {}
  for (const [name, value] of Object.entries(directives)) {
    const values: unknown[] = Array.isArray(value) ? value : [value]
    if (values.some((item) => typeof item === 'function')) {
      throw invalidOption(`${path}.contentSecurityPolicy.directives.${name}`, 'fixed values: the security headers are computed once, not per request')
    }
  }
  const headers: Record<string, string> = {}
  const response = {
    setHeader (name: string, value: string) { headers[name.toLowerCase()] = value },
    removeHeader () {}
  }
  try {
    helmet(options)({} as never, response as never, () => {})
  } catch (err) {
    throw invalidOption(path, `valid helmet options: ${(err as Error).message}`)
  }
  return headers
}

const plugin: FastifyPluginAsync<SecurityHeadersOptions> = async (app, options) => {
  claimChainStep(app, { step: 2, name: SECURITY_HEADERS_PLUGIN, hooks: ['onRequest'] })
  const headers = securityHeadersOf(options, 'helmet')
  // Set as the request arrives, so that every answer has them, rejections included.
  app.addHook('onRequest', (request, reply, done) => {
    if (routeConfigOf(request).helmet !== false) reply.headers(headers)
    done()
  })
}

/**
 * Security response headers (`Strict-Transport-Security`, `X-Content-Type-Options`,
 * `Content-Security-Policy`, …) from helmet's options, computed at startup and set on every
 * response, step 2 of the request path. A route turns them off with `config.helmet: false`; a
 * handler or an upstream may still set its own.
 */
export const portcullisSecurityHeaders = fp(plugin, { fastify: '5.x', name: SECURITY_HEADERS_PLUGIN, dependencies: ['@portcullis/core'] })
