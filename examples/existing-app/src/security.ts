import { fileURLToPath } from 'node:url'
import type { SinkOptions } from '@portcullis/audit-log'
import { devJwtMethod, hashApiKey, type ApiKeyRecord, type DevIdentity } from '@portcullis/authn'
import type { PortcullisOptions } from '@portcullis/gateway'

/** Where the demo token signing key is kept: made on first start, never committed. */
export const DEFAULT_IDENTITY_FILE = fileURLToPath(new URL('../.portcullis/dev-identity.json', import.meta.url))

/**
 * The people who sign in with tokens: alice orders, bob is an administrator. In production their
 * tokens come from your identity provider; here from a local signing key (`portcullis token`).
 */
export const IDENTITY_DEFAULTS: Omit<DevIdentity, 'key'> = {
  issuer: 'orders-service',
  audience: 'orders-api',
  principals: {
    alice: { roles: ['user'], scope: 'orders:read orders:write' },
    bob: { roles: ['admin'], scope: 'orders:read orders:write' }
  }
}

/**
 * The warehouse's API key, sent as `x-api-key`. Public, here and in the README: for trying the
 * example on your machine only.
 */
export const WAREHOUSE_API_KEY = 'demo-warehouse-key-00000000000001'

/** The warehouse service: it reads orders and changes none. Only the key's hash is kept. */
export const API_KEYS: ApiKeyRecord[] = [
  { id: 'warehouse-1', hash: hashApiKey(WAREHOUSE_API_KEY), owner: { id: 'warehouse', type: 'service', roles: ['service'], scopes: ['orders:read'] } }
]

export interface SecuritySettings {
  /** The key that signs the demo tokens: its public half verifies them. */
  identity: DevIdentity
  /** Requests a minute for each principal (each person, each service). @default 60 */
  limitPerMinute?: number
  /** Where audit records go. */
  auditSinks: SinkOptions[]
}

/** Every option of the `portcullis` meta-plugin this service uses, in one object. */
export function securityOptions ({ identity, limitPerMinute = 60, auditSinks }: SecuritySettings): PortcullisOptions {
  return {
    // Security headers on every answer, and known attack tools refused by their User-Agent.
    helmet: true,
    userAgents: true,
    // Who: a bearer token signed by the identity's key, or the warehouse's API key.
    authn: { realm: 'orders', methods: { tokens: devJwtMethod(identity), services: { type: 'api-key', keys: API_KEYS } } },
    // How often: per principal, counted once it is known.
    rateLimit: { limits: [{ name: 'principal', limit: limitPerMinute, window: '1m' }] },
    // What each may do: the rules are on the routes (config.authz); a route without one is denied.
    authz: { realm: 'orders', roles: { user: {}, admin: { inherits: ['user'] }, service: {} } },
    // Request bodies against the routes' JSON Schemas (config.schemaValidate), never coerced.
    schemaValidate: {},
    // One record per request: who, what, which check decided and why.
    audit: { sinks: auditSinks }
  }
}
