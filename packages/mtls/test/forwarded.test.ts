import { test, type Test } from 'tap'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { portcullisMtls, thumbprintOf, type MtlsOptions } from '../src/index.js'
import { createPki, crlOf, issue, type Issued } from './pki.js'
import { call, callPlain, portOf, rejectsOptions, serve } from './helpers.js'

const pki = await createPki()
const PROXY = '127.0.0.2'
const CLIENT = '127.0.0.1'

/** The app behind a TLS-terminating proxy: plain HTTP, the proxy at 127.0.0.2. */
async function behindProxy (t: Test, options: Omit<MtlsOptions, 'forwarded'> & { forwarded?: Partial<NonNullable<MtlsOptions['forwarded']>> } = {}): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisMtls, { ca: pki.ca.cert, ...options, forwarded: { trustedProxies: [PROXY], ...options.forwarded } })
  const handler = async (request: any): Promise<unknown> => ({ principal: request.principal, certificate: request.clientCertificate, headers: request.headers })
  app.get('/whoami', handler)
  app.get('/optional', { config: { mtls: { required: false } } }, handler)
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  return app
}

const escaped = (issued: Issued): string => encodeURIComponent(issued.cert)
const xfcc = (issued: Issued, chain: Issued[] = []): string =>
  `By=spiffe://example.org/ns/edge/sa/gateway;Hash=${issued.der.toString('hex')};Cert="${escaped(issued)}"` +
  (chain.length === 0 ? '' : `;Chain="${encodeURIComponent(chain.map((c) => c.cert).join(''))}"`) +
  ';Subject="CN=orders,O=Example\\, Inc.;x";URI=spiffe://example.org/ns/shop/sa/orders'

test('a trusted proxy\'s X-Forwarded-Client-Cert is verified and becomes the principal', async (t) => {
  const app = await behindProxy(t)
  const res = await callPlain(portOf(app), '/whoami', { 'x-forwarded-client-cert': xfcc(pki.service) }, PROXY)
  t.equal(res.status, 200)
  t.equal(res.body.principal.id, 'spiffe://example.org/ns/shop/sa/orders')
  t.match(res.body.certificate, { source: 'forwarded', thumbprint: thumbprintOf(pki.service.der) })
  t.ok(res.body.headers['x-forwarded-client-cert'], 'a trusted proxy\'s header reaches the application')
  // The proxy appends its element last: that one is read, whatever a client put before it.
  const appended = await callPlain(portOf(app), '/whoami', { 'x-forwarded-client-cert': `${xfcc(pki.foreign)},${xfcc(pki.cnOnly)}` }, PROXY)
  t.equal(appended.body.principal.id, 'legacy-batch')
  // Verified results are kept: the same header again is answered alike.
  t.equal((await callPlain(portOf(app), '/whoami', { 'x-forwarded-client-cert': xfcc(pki.service) }, PROXY)).body.principal.id, 'spiffe://example.org/ns/shop/sa/orders')
})

test('from any other address the header is ignored and removed before anyone reads it', async (t) => {
  const app = await behindProxy(t)
  const forged = await callPlain(portOf(app), '/whoami', { 'x-forwarded-client-cert': xfcc(pki.service) }, CLIENT)
  t.same([forged.status, forged.body.code], [401, 'PORTCULLIS_MTLS_CERTIFICATE_REQUIRED'])
  const optional = await callPlain(portOf(app), '/optional', { 'x-forwarded-client-cert': xfcc(pki.service) }, CLIENT)
  t.equal(optional.status, 200)
  t.same([optional.body.principal, optional.body.certificate], [null, null])
  t.notOk('x-forwarded-client-cert' in optional.body.headers, 'the forged header is gone')
  // Even on a route that does not look at certificates, and on unknown paths.
  const app2 = await behindProxy(t)
  app2.log.level = 'silent'
  t.equal((await callPlain(portOf(app2), '/nowhere', { 'x-forwarded-client-cert': xfcc(pki.service) }, CLIENT)).status, 404)
})

test('a forwarded certificate is refused as the same certificate over TLS would be', async (t) => {
  const dir = t.testdir()
  const file = join(dir, 'ca.crl')
  await writeFile(file, await crlOf(pki.ca, [pki.revoked]))
  const app = await behindProxy(t, { crl: [file] })
  const cases: Array<[string, string, number, string]> = [
    ['another CA', xfcc(pki.foreign), 401, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID'],
    ['self-signed', xfcc(pki.selfSigned), 401, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID'],
    ['expired', xfcc(pki.expired), 401, 'PORTCULLIS_MTLS_CERTIFICATE_EXPIRED'],
    ['not yet valid', xfcc(pki.notYetValid), 401, 'PORTCULLIS_MTLS_CERTIFICATE_NOT_YET_VALID'],
    ['revoked', xfcc(pki.revoked), 401, 'PORTCULLIS_MTLS_CERTIFICATE_REVOKED'],
    ['no Cert element', 'By=spiffe://x;Hash=abc;URI=spiffe://example.org/ns/shop/sa/orders', 401, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID'],
    ['a Cert that is not PEM', 'Cert="hello"', 401, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID'],
    ['bad URL encoding', 'Cert="%E0%A4%A"', 401, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID'],
    ['a PEM block that is not a certificate', `Cert="${encodeURIComponent('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----')}"`, 401, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID'],
    ['two certificates in Cert', `Cert="${encodeURIComponent(pki.service.cert + pki.cnOnly.cert)}"`, 401, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID'],
    ['a chain that is not PEM', `Cert="${escaped(pki.service)}";Chain=nonsense`, 401, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID'],
    ['a chain block that is not a certificate', `Cert="${escaped(pki.service)}";Chain="${encodeURIComponent('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----')}"`, 401, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID'],
    ['a PEM header without a body', `Cert="${encodeURIComponent('-----BEGIN CERTIFICATE-----')}"`, 401, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID'],
    ['an element without values', 'garbage', 401, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID']
  ]
  for (const [what, header, status, code] of cases) {
    const res = await callPlain(portOf(app), '/whoami', { 'x-forwarded-client-cert': header }, PROXY)
    t.same([res.status, res.body.code], [status, code], what)
  }
  // Without the header, a request through the proxy has no certificate.
  t.equal((await callPlain(portOf(app), '/whoami', {}, PROXY)).body.code, 'PORTCULLIS_MTLS_CERTIFICATE_REQUIRED')
})

test('intermediates travel in the Chain element and are verified up to the CA', async (t) => {
  const intermediate = await issue({ cn: 'Portcullis test intermediate', ca: true, issuer: pki.ca, days: [-1, 365] })
  const leaf = await issue({ cn: 'deep', uris: ['spiffe://example.org/ns/deep/sa/worker'], issuer: intermediate })
  const app = await behindProxy(t)
  t.equal((await callPlain(portOf(app), '/whoami', { 'x-forwarded-client-cert': xfcc(leaf, [intermediate]) }, PROXY)).body.principal.id, 'spiffe://example.org/ns/deep/sa/worker')
  t.equal((await callPlain(portOf(app), '/whoami', { 'x-forwarded-client-cert': xfcc(leaf) }, PROXY)).body.code, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID')
  // A "CA" that is not one cannot issue.
  const notCa = await issue({ cn: 'not a CA', issuer: pki.ca })
  const underNotCa = await issue({ cn: 'sneaky', issuer: notCa })
  t.equal((await callPlain(portOf(app), '/whoami', { 'x-forwarded-client-cert': xfcc(underNotCa, [notCa]) }, PROXY)).body.code, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID')
})

test('the pem format: a URL-encoded PEM certificate (nginx) or base64 DER, in a header of your choice', async (t) => {
  const app = await behindProxy(t, { forwarded: { header: 'X-Client-Cert', format: 'pem' } })
  const port = portOf(app)
  t.equal((await callPlain(port, '/whoami', { 'x-client-cert': escaped(pki.service) }, PROXY)).body.principal.id, 'spiffe://example.org/ns/shop/sa/orders')
  t.equal((await callPlain(port, '/whoami', { 'x-client-cert': pki.cnOnly.der.toString('base64') }, PROXY)).body.principal.id, 'legacy-batch')
  t.equal((await callPlain(port, '/whoami', { 'x-client-cert': '!!!' }, PROXY)).body.code, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID')
  t.equal((await callPlain(port, '/whoami', { 'x-client-cert': 'AAAA' }, PROXY)).body.code, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID')
  // Only the configured header counts.
  t.equal((await callPlain(port, '/whoami', { 'x-forwarded-client-cert': xfcc(pki.service) }, PROXY)).body.code, 'PORTCULLIS_MTLS_CERTIFICATE_REQUIRED')
})

test('on a TLS listener, a trusted proxy\'s own certificate never stands for its clients', async (t) => {
  const app = await serve(pki, { ca: pki.ca.cert, forwarded: { trustedProxies: ['loopback'] } })
  t.teardown(() => app.close())
  t.equal((await call(app, pki, '/whoami', pki.service)).body.code, 'PORTCULLIS_MTLS_CERTIFICATE_REQUIRED')
  t.equal((await call(app, pki, '/whoami', pki.service, { 'x-forwarded-client-cert': xfcc(pki.cnOnly) })).body.principal.id, 'legacy-batch')
})

test('forwarded options are checked at startup', async (t) => {
  const cases: Array<[MtlsOptions, RegExp]> = [
    [{ ca: pki.ca.cert, forwarded: {} as never }, /mtls\.forwarded\.trustedProxies must be a non-empty list/],
    [{ ca: pki.ca.cert, forwarded: { trustedProxies: [] } }, /mtls\.forwarded\.trustedProxies must be a non-empty list/],
    [{ ca: pki.ca.cert, forwarded: { trustedProxies: ['not-an-ip'] } }, /mtls\.forwarded\.trustedProxies\[0\]/],
    [{ ca: pki.ca.cert, forwarded: { trustedProxies: [PROXY], header: 'bad header' } }, /mtls\.forwarded\.header must be an HTTP header name/],
    [{ ca: pki.ca.cert, forwarded: { trustedProxies: [PROXY], format: 'der' } as never }, /mtls\.forwarded\.format must be xfcc or pem/],
    [{ ca: pki.ca.cert, forwarded: { trustedProxies: [PROXY], trusted: true } as never }, /mtls\.forwarded\.trusted is not a known option/],
    [{ forwarded: { trustedProxies: [PROXY] } }, /mtls\.ca must be the CA bundle forwarded certificates are verified against/]
  ]
  await rejectsOptions(t, cases)
})

test('a forwarded header sent twice reads as one list: the last XFCC element counts; two PEM certificates are refused', async (t) => {
  const xfccApp = await behindProxy(t)
  t.equal((await callPlain(portOf(xfccApp), '/whoami', { 'x-forwarded-client-cert': [xfcc(pki.service), xfcc(pki.cnOnly)] }, PROXY)).body.principal.id, 'legacy-batch')
  const pemApp = await behindProxy(t, { forwarded: { header: 'x-client-cert', format: 'pem' } })
  const twice = await callPlain(portOf(pemApp), '/whoami', { 'x-client-cert': [escaped(pki.service), escaped(pki.cnOnly)] }, PROXY)
  t.same([twice.status, twice.body.code], [401, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID'])
  const chained = await callPlain(portOf(pemApp), '/whoami', { 'x-client-cert': encodeURIComponent(pki.service.cert + pki.ca.cert) }, PROXY)
  t.equal(chained.body.code, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID')
})
