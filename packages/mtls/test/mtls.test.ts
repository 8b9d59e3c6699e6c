import { test } from 'tap'
import { connect } from 'node:tls'
import { thumbprintOf } from '../src/index.js'
import { createPki } from './pki.js'
import { call, portOf, serve } from './helpers.js'

const pki = await createPki()

test('a certificate of the CA is the principal; every other kind is refused with its own code', async (t) => {
  const app = await serve(pki, {}, { '/whoami': undefined, '/optional': { required: false }, '/off': false })
  t.teardown(() => app.close())

  const ok = await call(app, pki, '/whoami', pki.service)
  t.equal(ok.status, 200)
  t.same(ok.body.principal, {
    id: 'spiffe://example.org/ns/shop/sa/orders',
    type: 'service',
    method: 'mtls',
    roles: [],
    scopes: [],
    claims: {
      commonName: 'orders',
      dnsNames: ['orders.internal'],
      uris: ['spiffe://example.org/ns/shop/sa/orders'],
      serialNumber: ok.body.certificate.serialNumber,
      issuer: 'CN=Portcullis test CA'
    },
    credentialId: thumbprintOf(pki.service.der)
  })
  t.match(ok.body.certificate, { thumbprint: thumbprintOf(pki.service.der), commonName: 'orders', source: 'tls' })
  t.match(ok.body.decisions, [{ plugin: '@portcullis/mtls', outcome: 'allow', reason: 'PORTCULLIS_MTLS_OK' }])

  const refusals: Array<[string, keyof typeof pki | undefined, number, string]> = [
    ['no certificate', undefined, 401, 'PORTCULLIS_MTLS_CERTIFICATE_REQUIRED'],
    ['expired', 'expired', 401, 'PORTCULLIS_MTLS_CERTIFICATE_EXPIRED'],
    ['not yet valid', 'notYetValid', 401, 'PORTCULLIS_MTLS_CERTIFICATE_NOT_YET_VALID'],
    ['another CA', 'foreign', 401, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID'],
    ['self-signed', 'selfSigned', 401, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID']
  ]
  for (const [what, client, status, code] of refusals) {
    const res = await call(app, pki, '/whoami', client === undefined ? undefined : pki[client])
    t.equal(res.status, status, what)
    t.match(res.headers['content-type'], /^application\/problem\+json/, what)
    t.equal(res.body.code, code, what)
  }

  // A route that accepts requests without a certificate still refuses a bad one.
  const without = await call(app, pki, '/optional')
  t.equal(without.status, 200)
  t.same([without.body.principal, without.body.certificate], [null, null])
  t.match(without.body.decisions, [{ reason: 'PORTCULLIS_MTLS_NO_CERTIFICATE' }])
  t.equal((await call(app, pki, '/optional', pki.expired)).body.code, 'PORTCULLIS_MTLS_CERTIFICATE_EXPIRED')
  t.equal((await call(app, pki, '/optional', pki.service)).body.principal.id, 'spiffe://example.org/ns/shop/sa/orders')

  // A route with mtls off does not look: no identity from a good certificate, no refusal of a bad one.
  for (const client of [pki.service, pki.foreign]) {
    const off = await call(app, pki, '/off', client)
    t.equal(off.status, 200)
    t.same([off.body.principal, off.body.certificate, off.body.decisions], [null, null, null])
  }
})

test('the listener speaks TLS 1.3 when the client does, and nothing older than TLS 1.2', async (t) => {
  const app = await serve(pki)
  t.teardown(() => app.close())
  const handshake = async (options: { minVersion?: 'TLSv1' | 'TLSv1.2', maxVersion?: 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3' }): Promise<string> => await new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port: portOf(app), servername: 'localhost', ca: pki.ca.cert, ...options }, () => {
      resolve(String(socket.getProtocol()))
      socket.end()
    })
    socket.on('error', (err: NodeJS.ErrnoException) => { resolve(`refused: ${err.code ?? err.message}`) })
  })
  t.equal(await handshake({}), 'TLSv1.3')
  t.equal(await handshake({ maxVersion: 'TLSv1.2' }), 'TLSv1.2')
  t.match(await handshake({ minVersion: 'TLSv1', maxVersion: 'TLSv1.1' }), /^refused/)
})
