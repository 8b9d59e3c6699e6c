import { test } from 'tap'
import Fastify from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { portcullisMtls, thumbprintOf, type MtlsOptions } from '../src/index.js'
import { createPki } from './pki.js'
import { call, rejectsOptions, serve } from './helpers.js'

const pki = await createPki()

test('the identity is the one SAN URI, else the first DNS name, else the CN; roles come from the mapping', async (t) => {
  const app = await serve(pki, {
    principal: {
      roles: {
        'spiffe://example.org/ns/shop/sa/orders': ['orders', 'reader'],
        'billing.internal': ['billing']
      }
    }
  })
  t.teardown(() => app.close())
  const cases: Array<[keyof typeof pki, string, string[]]> = [
    ['service', 'spiffe://example.org/ns/shop/sa/orders', ['orders', 'reader']],
    ['dnsOnly', 'billing.internal', ['billing']],
    ['cnOnly', 'legacy-batch', []],
    // SPIFFE requires exactly one URI: with two, the URI says nothing and the CN is next.
    ['twoUris', 'two', []]
  ]
  for (const [client, id, roles] of cases) {
    const res = await call(app, pki, '/whoami', pki[client])
    t.equal(res.status, 200, client)
    t.same([res.body.principal.id, res.body.principal.roles], [id, roles], client)
  }
  // Verified, but nothing in it names anyone: not allowed.
  const nameless = await call(app, pki, '/whoami', pki.nameless)
  t.same([nameless.status, nameless.body.code], [403, 'PORTCULLIS_MTLS_CERTIFICATE_NOT_ALLOWED'])
})

test('the sources and their order are configurable; a user type too', async (t) => {
  const app = await serve(pki, { principal: { from: ['cn'], type: 'user' } })
  t.teardown(() => app.close())
  const res = await call(app, pki, '/whoami', pki.service)
  t.same([res.body.principal.id, res.body.principal.type], ['orders', 'user'])
  const dnsFirst = await serve(pki, { principal: { from: ['dns', 'uri'] } })
  t.teardown(() => dnsFirst.close())
  t.equal((await call(dnsFirst, pki, '/whoami', pki.service)).body.principal.id, 'orders.internal')
  t.same((await call(dnsFirst, pki, '/whoami', pki.cnOnly)).body.code, 'PORTCULLIS_MTLS_CERTIFICATE_NOT_ALLOWED')
})

test('principal: false verifies and exposes the certificate, and leaves the principal to authn', async (t) => {
  const app = await serve(pki, { principal: false })
  t.teardown(() => app.close())
  const res = await call(app, pki, '/whoami', pki.nameless)
  t.equal(res.status, 200)
  t.equal(res.body.principal, null)
  t.match(res.body.certificate, { thumbprint: thumbprintOf(pki.nameless.der), commonName: null, dnsNames: [], uris: [] })
  t.equal((await call(app, pki, '/whoami', pki.foreign)).status, 401)
})

test('pins accept only the pinned certificates, each as its pinned principal', async (t) => {
  const app = await serve(pki, {
    pins: { [thumbprintOf(pki.cnOnly.der)]: { id: 'batch-runner', roles: ['batch'] } }
  })
  t.teardown(() => app.close())
  const pinned = await call(app, pki, '/whoami', pki.cnOnly)
  t.same([pinned.status, pinned.body.principal.id, pinned.body.principal.roles, pinned.body.principal.type], [200, 'batch-runner', ['batch'], 'service'])
  // As well as it verifies, a certificate not pinned is refused.
  const other = await call(app, pki, '/whoami', pki.service)
  t.same([other.status, other.body.code], [403, 'PORTCULLIS_MTLS_CERTIFICATE_NOT_ALLOWED'])
  // A pinned certificate that has expired is refused as expired, pinned or not.
  const expiredPin = await serve(pki, { pins: { [thumbprintOf(pki.expired.der)]: { id: 'old' } } })
  t.teardown(() => expiredPin.close())
  t.equal((await call(expiredPin, pki, '/whoami', pki.expired)).body.code, 'PORTCULLIS_MTLS_CERTIFICATE_EXPIRED')
  // With principal: false, pins still decide which certificates are accepted.
  const pinsOnly = await serve(pki, { principal: false, pins: { [thumbprintOf(pki.cnOnly.der)]: { id: 'batch-runner' } } })
  t.teardown(() => pinsOnly.close())
  t.equal((await call(pinsOnly, pki, '/whoami', pki.cnOnly)).body.principal.id, 'batch-runner')
  t.equal((await call(pinsOnly, pki, '/whoami', pki.service)).status, 403)
})

test('bad options fail startup, naming the option and what it allows', async (t) => {
  const thumbprint = thumbprintOf(pki.service.der)
  const cases: Array<[MtlsOptions, RegExp]> = [
    [{ requird: true } as never, /mtls\.requird is not a known option; allowed: ca, crl/],
    [{ required: 'yes' } as never, /mtls\.required must be a boolean/],
    [{ mode: 'audit' } as never, /mtls\.mode must be one of enforce, report/],
    [{ principal: { from: [] } }, /mtls\.principal\.from must be a non-empty list of uri, dns, cn/],
    [{ principal: { from: ['email'] } } as never, /mtls\.principal\.from must be a non-empty list/],
    [{ principal: { type: 'anonymous' } } as never, /mtls\.principal\.type must be service or user/],
    [{ principal: { roles: { a: 'admin' } } } as never, /mtls\.principal\.roles\["a"\] must be a list of role names/],
    [{ principal: { from: ['cn'] }, pins: { [thumbprint]: { id: 'x' } } }, /mtls\.principal must be left out when mtls\.pins is set/],
    [{ pins: {} }, /mtls\.pins must be at least one pinned thumbprint/],
    [{ pins: null } as never, /mtls\.pins must be an object/],
    [{ pins: { 'AB:CD': { id: 'x' } } }, /mtls\.pins must be keyed by SHA-256 thumbprints in base64url/],
    [{ pins: { [thumbprint]: { id: '' } } }, /mtls\.pins\["[^"]+"\]\.id must be a non-empty string/],
    [{ pins: { [thumbprint]: { id: 'x', roles: [1] } } } as never, /\.roles must be a list of role names/],
    [{ ca: 'not a certificate' }, /mtls\.ca must be one or more PEM certificates/],
    [{ ca: [42] } as never, /mtls\.ca\[0\] must be PEM text/],
    [{ ca: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----' }, /mtls\.ca must be PEM certificates \(got "a block that is not a certificate"\)/]
  ]
  await rejectsOptions(t, cases)
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisMtls)
  t.throws(() => app.get('/x', { config: { mtls: { required: 1 } as never } }, async () => 'x'), { message: /route GET \/x config\.mtls\.required must be a boolean/ })
  t.throws(() => app.get('/y', { config: { mtls: { mode: 'loud' } as never } }, async () => 'y'), { message: /route GET \/y config\.mtls\.mode must be one of enforce, report/ })
  t.throws(() => app.get('/z', { config: { mtls: { require: true } as never } }, async () => 'z'), { message: /route GET \/z config\.mtls\.require is not a known option; allowed: required, mode/ })
})
