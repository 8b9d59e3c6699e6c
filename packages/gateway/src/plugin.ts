import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { checkKnownKeys, portcullisCore, type CoreOptions } from '@portcullis/core'

export interface PortcullisOptions {
  /** Options of `@portcullis/core`: trusted proxies, the policy snapshot, problem+json. */
  core?: CoreOptions
}

// The parts of the chain this version provides, in RECOMMENDED_ORDER. A part is added here when
// its package exists; options for parts that do not exist yet are refused, never ignored.
const PARTS = [
  { key: 'core', plugin: portcullisCore }
] as const

/**
 * Registers the Portcullis suite in the recommended order (see `RECOMMENDED_ORDER`) with one
 * options object, and answers every rejection with `application/problem+json`.
 *
 * @example
 * await app.register(portcullis, { core: { trustedProxies: ['10.0.0.0/8'] } })
 */
const plugin: FastifyPluginAsync<PortcullisOptions> = async (app, options) => {
  checkKnownKeys(options, PARTS.map((part) => part.key), 'portcullis')
  for (const part of PARTS) {
    await app.register(part.plugin, options[part.key] ?? {})
  }
}

export const portcullis = fp(plugin, { fastify: '5.x', name: '@portcullis/gateway' })
