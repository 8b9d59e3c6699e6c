import { fileURLToPath } from 'node:url'
import { hashApiKey, type ApiKeyRecord, type DevIdentity } from '@portcullis/authn'

/** The demo principals: alice is a user, bob an administrator. */
export const PRINCIPALS = {
  alice: { roles: ['user'], scope: 'orders:read orders:write' },
  bob: { roles: ['admin'], scope: 'orders:read orders:write orders:admin' }
} as const

/**
 * Demo API keys, sent as `x-api-key`. They are public, in this file and the README: for trying
 * the quickstart only, never for anything reachable from outside this machine.
 */
export const DEMO_API_KEYS = {
  alice: 'demo-alice-key-0000000000000001',
  bob: 'demo-bob-key-0000000000000002'
} as const

/** Where the quickstart keeps its development identity (signing key), made on first start and never committed. */
export const DEFAULT_IDENTITY_FILE = fileURLToPath(new URL('../.portcullis/dev-identity.json', import.meta.url))

export const IDENTITY_DEFAULTS: Omit<DevIdentity, 'key'> = {
  issuer: 'portcullis-quickstart',
  audience: 'orders-api',
  principals: Object.fromEntries(Object.entries(PRINCIPALS).map(([name, p]) => [name, { roles: [...p.roles], scope: p.scope }]))
}

/** The demo keys as stored records: only their hashes. */
export function demoKeyRecords (): ApiKeyRecord[] {
  return Object.entries(DEMO_API_KEYS).map(([name, key]) => {
    const principal = PRINCIPALS[name as keyof typeof PRINCIPALS]
    return { id: `demo-${name}`, hash: hashApiKey(key), owner: { id: name, type: 'user', roles: [...principal.roles], scopes: principal.scope.split(' ') } }
  })
}
