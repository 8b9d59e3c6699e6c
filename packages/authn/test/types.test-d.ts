// Type tests, checked by `pnpm typecheck`: each @ts-expect-error must be an error, or the check fails.
import Fastify from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { portcullisAuthn, type AuthnOptions } from '../src/index.js'

const app = Fastify()
app.register(portcullisCore)
const options: AuthnOptions = {
  methods: {
    keys: { type: 'api-key', keys: [] },
    staff: { type: 'jwt', issuer: 'https://idp', audience: 'api', keys: [{ algorithms: ['ES256'], key: '-----BEGIN PUBLIC KEY-----' }] }
  },
  defaults: { methods: ['staff'], require: 'any' }
}
app.register(portcullisAuthn, options)
// @ts-expect-error a method needs a known type
app.register(portcullisAuthn, { methods: { x: { type: 'saml' } } })
// @ts-expect-error algorithms are the JOSE names
const badAlg: AuthnOptions = { methods: { j: { type: 'jwt', issuer: 'i', audience: 'a', keys: [{ algorithms: ['SHA256'], key: 'k' }] } } }

app.get('/open', { config: { authn: false } }, async () => 'ok')
app.get('/maybe', { config: { authn: { anonymous: true, methods: ['keys'] } } }, async () => 'ok')
// @ts-expect-error require is any or all
app.get('/bad', { config: { authn: { require: 'some' } } }, async () => 'ok')

export { badAlg }
