import Fastify from 'fastify'
import { portcullisCore, setPrincipal, createPrincipal } from '@portcullis/core'
import { portcullisAuthz } from '@portcullis/authz'
const principal = createPrincipal({ id: 'alice', type: 'user', method: 'bench', roles: ['user'], scopes: ['orders:read'] })
const app = Fastify()
await app.register(portcullisCore)
app.addHook('onRequest', (req, reply, done) => { setPrincipal(req, principal); done() })
await app.register(portcullisAuthz, { roles: { user: {}, admin: { inherits: ['user'] } } })
app.get('/orders/:id', { config: { authz: { anyRole: ['user'], allScopes: ['orders:read'] } } }, async (request) => ({ id: request.params.id }))
await app.ready()
for (let i = 0; i < 150000; i++) await app.inject({ method: 'GET', url: '/orders/42' })
