// Type tests, checked by `pnpm typecheck`: each @ts-expect-error must be an error, or the check fails.
import Fastify from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { portcullisAuthz, portcullisIpRules, type AuthzOptions } from '../src/index.js'

const app = Fastify()
app.register(portcullisCore)
app.register(portcullisIpRules, { deny: ['192.0.2.0/24'] })
const options: AuthzOptions = { roles: { user: {}, admin: { inherits: ['user'], permissions: ['orders:delete'] } }, defaultRule: 'deny' }
app.register(portcullisAuthz, options)
// @ts-expect-error the default rule is deny or a rule
app.register(portcullisAuthz, { defaultRule: 'allow' })

app.get('/public', { config: { authz: false } }, async () => 'ok')
app.post('/orders', { config: { authz: { allScopes: ['orders:write'] } } }, async () => 'ok')
app.delete('/orders/:id', { config: { authz: { anyOf: [{ anyRole: ['admin'] }, { allPermissions: ['orders:delete'] }] } } }, async () => 'ok')
app.get('/internal', { config: { ipRules: { allow: ['10.0.0.0/8'] } } }, async () => 'ok')
// @ts-expect-error roles are a list
app.get('/typo', { config: { authz: { anyRole: 'admin' } } }, async () => 'ok')
// Rules are checked in full at startup too: unknown fields and `true` fail there (see authz.test.ts).

// Conditions, ownership and property rules sit next to the requirement.
app.get('/orders/:id', {
  config: {
    authz: {
      anyScope: ['orders:read'],
      resource: async (request) => ({ owner: (request.params as { id: string }).id }),
      owner: { resource: 'owner', status: 404 },
      when: 'request.method == "GET"',
      properties: { user: { read: ['id', 'item'], mask: ['card'] } }
    }
  }
}, async () => 'ok')
app.get('/carts/:userId', { config: { authz: { owner: { resolve: async (_request, principal) => principal.id !== '' } } } }, async () => 'ok')
// @ts-expect-error an ownership status is 403 or 404
app.get('/bad-status', { config: { authz: { owner: { param: 'id', status: 401 } } } }, async () => 'ok')
// @ts-expect-error a condition is CEL text
app.get('/bad-when', { config: { authz: { when: (x: unknown) => x !== null } } }, async () => 'ok')
// @ts-expect-error property paths are lists
app.get('/bad-props', { config: { authz: { properties: { user: { write: 'item' } } } } }, async () => 'ok')
