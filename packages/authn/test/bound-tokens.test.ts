import { test } from 'tap'
import Fastify from 'fastify'
import { createPrincipal, portcullisCore, setClientCertificate, setPrincipal } from '@portcullis/core'
import { portcullisAuthn, type AuthnOptions } from '../src/index.js'
import { AUDIENCE, claims, ec, ISSUER, sign } from './jwt-helpers.js'

// What @portcullis/mtls sets from a verified client certificate; its own tests make the
// connection for real. Here a hook in its place (step 3) sets it from a test header.
const THUMBPRINT = 'x4E3mq0QfH3W2qPRnJvGZ7Lq3s8eQeBkYk1mS6yZbXc'
const OTHER = 'y4E3mq0QfH3W2qPRnJvGZ7Lq3s8eQeBkYk1mS6yZbXc'

const OPTIONS: AuthnOptions = {
  methods: { staff: { type: 'jwt', issuer: ISSUER, audience: AUDIENCE, keys: [{ algorithms: ['ES256'], key: ec.publicPem }] } }
}

async function build () {
  const app = Fastify()
  await app.register(portcullisCore)
  app.addHook('onRequest', async (request) => {
    const thumbprint = request.headers['x-test-thumbprint']
    if (typeof thumbprint === 'string') {
      setClientCertificate(request, { thumbprint, commonName: 'orders', dnsNames: [], uris: [], serialNumber: '1', issuer: 'CN=CA', notBefore: 0, notAfter: Date.now() + 60_000, source: 'tls' })
      setPrincipal(request, createPrincipal({ id: 'orders', type: 'service', method: 'mtls', credentialId: thumbprint }))
    }
  })
  await app.register(portcullisAuthn, OPTIONS)
  app.get('/me', async (request) => request.principal)
  app.get('/maybe', { config: { authn: { anonymous: true } } }, async (request) => request.principal)
  return app
}

const token = (cnf?: unknown): string => sign(claims(cnf === undefined ? {} : { cnf }), { key: ec.privatePem, algorithm: 'ES256' })

test('a token bound to a certificate (RFC 8705 cnf x5t#S256) is accepted only with that certificate', async (t) => {
  const app = await build()
  const bound = token({ 'x5t#S256': THUMBPRINT })
  const send = async (jwt: string, thumbprint?: string) => await app.inject({
    url: '/me',
    headers: { authorization: `Bearer ${jwt}`, ...(thumbprint === undefined ? {} : { 'x-test-thumbprint': thumbprint }) }
  })
  const ok = await send(bound, THUMBPRINT)
  t.same([ok.statusCode, ok.json().id, ok.json().method], [200, 'alice', 'jwt'], 'the token\'s subject, over its certificate')
  for (const [what, jwt, thumbprint] of [
    ['another certificate', bound, OTHER],
    ['no certificate at all', bound, undefined],
    ['a thumbprint of another length', bound, THUMBPRINT.slice(1)],
    ['a cnf whose x5t#S256 is not a string', token({ 'x5t#S256': 42 }), THUMBPRINT]
  ] as Array<[string, string, string | undefined]>) {
    const res = await send(jwt, thumbprint)
    t.equal(res.statusCode, 401, what)
    t.equal(res.json().code, 'PORTCULLIS_AUTHN_INVALID_TOKEN', what)
    t.equal(res.headers['www-authenticate'], 'Bearer realm="api", error="invalid_token"', what)
  }
  // The token is cached once verified; the binding is still checked on every request.
  t.equal((await send(bound, THUMBPRINT)).statusCode, 200)
  t.equal((await send(bound, OTHER)).statusCode, 401)
  // Tokens without the confirmation, or with another kind of it, are not bound to certificates.
  t.equal((await send(token())).statusCode, 200)
  t.equal((await send(token({ jkt: 'some-dpop-key' }))).statusCode, 200)
})

test('with anonymous allowed, an identity set before authn (a client certificate) is kept', async (t) => {
  const app = await build()
  t.same((await app.inject({ url: '/maybe', headers: { 'x-test-thumbprint': THUMBPRINT } })).json(), { id: 'orders', type: 'service', method: 'mtls', roles: [], scopes: [], claims: {}, credentialId: THUMBPRINT })
  t.equal((await app.inject({ url: '/maybe' })).json().id, 'anonymous')
  // A token, when there is one, is the identity.
  t.equal((await app.inject({ url: '/maybe', headers: { 'x-test-thumbprint': THUMBPRINT, authorization: `Bearer ${token()}` } })).json().id, 'alice')
  // Where a credential is required, a certificate alone is not one of authn's.
  t.equal((await app.inject({ url: '/me', headers: { 'x-test-thumbprint': THUMBPRINT } })).statusCode, 401)
})
