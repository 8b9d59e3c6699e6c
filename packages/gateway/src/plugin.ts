import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { checkKnownKeys, portcullisCore, type CoreOptions } from '@portcullis/core'
import { portcullisAuthn, type AuthnOptions } from '@portcullis/authn'
import { portcullisAuthz, portcullisIpRules, type AuthzOptions, type IpRulesOptions } from '@portcullis/authz'

export interface PortcullisOptions {
  /** Options of `@portcullis/core`: trusted proxies, the policy snapshot, problem+json. Always registered. */
  core?: CoreOptions
  /** IP allow/deny lists (`@portcullis/authz`), step 2; registered when given. */
  ipRules?: IpRulesOptions
  /** Options of `@portcullis/authn`, step 5; registered when given. */
  authn?: AuthnOptions
  /** Options of `@portcullis/authz`, step 7; registered when given. */
  authz?: AuthzOptions
}

interface Part {
  key: keyof PortcullisOptions
  plugin: FastifyPluginAsync<never>
  /** Registered even without options. */
  always: boolean
}

// The parts of the chain this version provides, in RECOMMENDED_ORDER. A part is added here when
// its package exists; options for parts that do not exist yet are refused, never ignored.
const PARTS: readonly Part[] = [
  { key: 'core', plugin: portcullisCore as FastifyPluginAsync<never>, always: true },
  { key: 'ipRules', plugin: portcullisIpRules as FastifyPluginAsync<never>, always: false },
  { key: 'authn', plugin: portcullisAuthn as FastifyPluginAsync<never>, always: false },
  { key: 'authz', plugin: portcullisAuthz as FastifyPluginAsync<never>, always: false }
]

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
    const partOptions = options[part.key]
    if (partOptions !== undefined || part.always) await app.register(part.plugin, (partOptions ?? {}) as never)
  }
}

export const portcullis = fp(plugin, { fastify: '5.x', name: '@portcullis/gateway' })
