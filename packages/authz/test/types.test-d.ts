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
