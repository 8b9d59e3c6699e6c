import { test } from 'tap'
import { generateKeyPairSync, sign as signData } from 'node:crypto'
import Fastify from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { portcullisAuthn } from '@portcullis/authn'
import { mtlsServerOptions, portcullisMtls, thumbprintOf } from '../src/index.js'
import { createPki } from './pki.js'
import { call } from './helpers.js'

const pki = await createPki()
const ISSUER = 'https://login.example.com/'
const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })

function token (extra: Record<string, unknown>): string {
  const now = Math.floor(Date.now() / 1000)
  const part = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')
  const input = `${part({ alg: 'ES256', typ: 'JWT' })}.${part({ iss: ISSUER, aud: 'orders', sub: 'alice', iat: now, exp: now + 300, ...extra })}`
  return `${input}.${signData('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`
}

test('over real TLS: a certificate-bound token works with its certificate only', async (t) => {
  const app = Fastify({ https: mtlsServerOptions({ key: pki.server.key, cert: pki.server.cert, ca: pki.ca.cert }) })
  await app.register(portcullisCore)
  // The certificate binds tokens; the token's subject is the principal.
  await app.register(portcullisMtls, { principal: false, required: false })
  await app.register(portcullisAuthn, {
    methods: { staff: { type: 'jwt', issuer: ISSUER, audience: 'orders', keys: [{ algorithms: ['ES256'], key: publicKey.export({ type: 'spki', format: 'pem' }).toString() }] } }
  })
  app.get('/whoami', async (request) => ({ principal: request.principal }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())

  const bound = { authorization: `Bearer ${token({ cnf: { 'x5t#S256': thumbprintOf(pki.service.der) } })}` }
  const ok = await call(app, pki, '/whoami', pki.service, bound)
  t.same([ok.status, ok.body.principal.id, ok.body.principal.method], [200, 'alice', 'jwt'])
  const wrong = await call(app, pki, '/whoami', pki.cnOnly, bound)
  t.same([wrong.status, wrong.body.code], [401, 'PORTCULLIS_AUTHN_INVALID_TOKEN'])
  const none = await call(app, pki, '/whoami', undefined, bound)
  t.same([none.status, none.body.code], [401, 'PORTCULLIS_AUTHN_INVALID_TOKEN'])
  // A certificate that does not verify sets nothing a token could be bound to: mtls refuses it first.
  const foreign = await call(app, pki, '/whoami', pki.foreign, bound)
  t.same([foreign.status, foreign.body.code], [401, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID'])
  // An unbound token needs no certificate.
  t.equal((await call(app, pki, '/whoami', undefined, { authorization: `Bearer ${token({})}` })).status, 200)
})

test('a certificate or a token: anonymous allowed by authn keeps the certificate\'s principal', async (t) => {
  const app = Fastify({ https: mtlsServerOptions({ key: pki.server.key, cert: pki.server.cert, ca: pki.ca.cert, minVersion: 'TLSv1.3' }) })
  await app.register(portcullisCore)
  await app.register(portcullisMtls, { required: false })
  await app.register(portcullisAuthn, {
    methods: { staff: { type: 'jwt', issuer: ISSUER, audience: 'orders', keys: [{ algorithms: ['ES256'], key: publicKey.export({ type: 'spki', format: 'pem' }).toString() }] } },
    defaults: { anonymous: true }
  })
  app.get('/whoami', async (request) => ({ principal: request.principal }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  t.equal((await call(app, pki, '/whoami', pki.service)).body.principal.id, 'spiffe://example.org/ns/shop/sa/orders')
  t.equal((await call(app, pki, '/whoami', undefined, { authorization: `Bearer ${token({})}` })).body.principal.id, 'alice')
  t.equal((await call(app, pki, '/whoami')).body.principal.id, 'anonymous')
})
