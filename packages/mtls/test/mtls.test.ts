import { test } from 'tap'
import { connect } from 'node:tls'
import Fastify from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { mtlsServerOptions, portcullisMtls, thumbprintOf } from '../src/index.js'
import { createPki, issue } from './pki.js'
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

test('report mode records what would be refused, lets the request through, and grants no identity', async (t) => {
  const app = await serve(pki, { mode: 'report' }, { '/whoami': undefined, '/enforced': { mode: 'enforce' } })
  t.teardown(() => app.close())
  const without = await call(app, pki, '/whoami')
  t.equal(without.status, 200)
  t.match(without.body.decisions, [{ plugin: '@portcullis/mtls', outcome: 'would-deny', reason: 'PORTCULLIS_MTLS_CERTIFICATE_REQUIRED' }])
  const expired = await call(app, pki, '/whoami', pki.expired)
  t.equal(expired.status, 200)
  t.same([expired.body.principal, expired.body.certificate], [null, null])
  t.match(expired.body.decisions, [{ outcome: 'would-deny', reason: 'PORTCULLIS_MTLS_CERTIFICATE_EXPIRED' }])
  t.equal((await call(app, pki, '/whoami', pki.service)).body.principal.id, 'spiffe://example.org/ns/shop/sa/orders')
  t.equal((await call(app, pki, '/enforced', pki.expired)).status, 401)
})

test('a client may send its intermediate CA in the handshake', async (t) => {
  const intermediate = await issue({ cn: 'Portcullis test intermediate', ca: true, issuer: pki.ca, days: [-1, 365] })
  const leaf = await issue({ cn: 'deep', uris: ['spiffe://example.org/ns/deep/sa/worker'], issuer: intermediate })
  const app = await serve(pki)
  t.teardown(() => app.close())
  const withChain = { ...leaf, cert: leaf.cert + intermediate.cert }
  const res = await call(app, pki, '/whoami', withChain)
  t.same([res.status, res.body.principal.id], [200, 'spiffe://example.org/ns/deep/sa/worker'])
  t.equal((await call(app, pki, '/whoami', leaf)).body.code, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID', 'without it, the chain does not reach the CA')
})

test('mtlsServerOptions checks what it is given', async (t) => {
  const good = { key: pki.server.key, cert: pki.server.cert, ca: pki.ca.cert }
  t.same(mtlsServerOptions({ ...good, passphrase: 'secret' }), { ...good, ca: [pki.ca.cert], passphrase: 'secret', requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' })
  t.equal(mtlsServerOptions({ ...good, ca: [Buffer.from(pki.ca.cert)], minVersion: 'TLSv1.3' }).minVersion, 'TLSv1.3')
  const cases: Array<[unknown, RegExp]> = [
    [{ ...good, key: '' }, /mtlsServerOptions\.key must be PEM text/],
    [{ ...good, cert: Buffer.alloc(0) }, /mtlsServerOptions\.cert must be PEM text/],
    [{ ...good, ca: [] }, /mtlsServerOptions\.ca must be PEM certificates/],
    [{ ...good, ca: 'ca.pem' }, /mtlsServerOptions\.ca must be PEM certificates/],
    [{ ...good, minVersion: 'TLSv1.1' }, /mtlsServerOptions\.minVersion must be TLSv1\.2 or TLSv1\.3/],
    [{ ...good, rejectUnauthorized: true }, /mtlsServerOptions\.rejectUnauthorized is not a known option/]
  ]
  for (const [input, message] of cases) t.throws(() => mtlsServerOptions(input as never), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message })
})

test('serial numbers read the same however they are encoded, zero and high-bit ones too', async (t) => {
  const zero = await issue({ cn: 'zero', serial: 0, issuer: pki.ca })
  const highBit = await issue({ cn: 'high', serial: 0x80ff, issuer: pki.ca })
  const app = await serve(pki)
  t.teardown(() => app.close())
  t.equal((await call(app, pki, '/whoami', zero)).body.certificate.serialNumber, '0')
  t.equal((await call(app, pki, '/whoami', highBit)).body.certificate.serialNumber, '80FF')
})

test('routes of a plugin registered before mtls get the plugin\'s requirement', async (t) => {
  const app = Fastify({ https: mtlsServerOptions({ key: pki.server.key, cert: pki.server.cert, ca: pki.ca.cert }) })
  await app.register(portcullisCore)
  await app.register(async (routes) => { routes.get('/early', async (request) => request.principal) })
  await app.register(portcullisMtls)
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  t.equal((await call(app, pki, '/early')).body.code, 'PORTCULLIS_MTLS_CERTIFICATE_REQUIRED')
  t.equal((await call(app, pki, '/early', pki.service)).body.id, 'spiffe://example.org/ns/shop/sa/orders')
})
