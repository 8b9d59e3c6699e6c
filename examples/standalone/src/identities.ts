import { fileURLToPath } from 'node:url'
import { hashApiKey, type ApiKeyRecord, type DevIdentity } from '@portcullis/authn'

/** Where the development identity (the token signing key) is kept: made on first start, never committed. */
export const DEFAULT_IDENTITY_FILE = fileURLToPath(new URL('../.portcullis/dev-identity.json', import.meta.url))

/** The people who sign in with bearer tokens: alice is a customer, bob an administrator. */
export const IDENTITY_DEFAULTS: Omit<DevIdentity, 'key'> = {
  issuer: 'portcullis-standalone',
  audience: 'shop-api',
  principals: {
    alice: { roles: ['customer'], scope: 'orders:read orders:write' },
    bob: { roles: ['admin'], scope: 'orders:read orders:write' }
  }
}

/**
 * The partner acme's API key, sent as `x-api-key`. Public, here and in the README: for trying
 * the example on your machine only.
 */
export const ACME_API_KEY = 'demo-acme-key-000000000000000001'

/** acme's key as `policy.yaml` stores it: only its hash. */
export function acmeKeyRecord (): ApiKeyRecord {
  return { id: 'acme-1', hash: hashApiKey(ACME_API_KEY), owner: { id: 'acme', type: 'service', roles: ['partner'], plan: 'free' } }
}
