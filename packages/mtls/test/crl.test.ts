import { test } from 'tap'
import { Agent } from 'node:https'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { portcullisMtls, type MtlsOptions } from '../src/index.js'
import { createPki, crlOf } from './pki.js'
import { call, rejectsOptions, serve } from './helpers.js'

const pki = await createPki()

test('a revoked certificate is refused; a reload revokes more, on connections already open too', async (t) => {
  const dir = t.testdir()
  const file = join(dir, 'ca.crl')
  await writeFile(file, await crlOf(pki.ca, [pki.revoked]))
  const app = await serve(pki, { ca: pki.ca.cert, crl: [file] })
  t.teardown(() => app.close())
  let connections = 0
  app.server.on('secureConnection', () => { connections++ })

  t.same([(await call(app, pki, '/whoami', pki.revoked)).status, (await call(app, pki, '/whoami', pki.revoked)).body.code], [401, 'PORTCULLIS_MTLS_CERTIFICATE_REVOKED'])
  const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: pki.ca.cert, cert: pki.service.cert, key: pki.service.key, servername: 'localhost' })
  t.teardown(() => agent.destroy())
  t.equal((await call(app, pki, '/whoami', pki.service, {}, agent)).status, 200)
  const before = connections

  await writeFile(file, await crlOf(pki.ca, [pki.revoked, pki.service]))
  t.same(await app.mtls.reloadCrl(), { files: 1, issuers: 1, revoked: 2 })
  const again = await call(app, pki, '/whoami', pki.service, {}, agent)
  t.same([again.status, again.body.code], [401, 'PORTCULLIS_MTLS_CERTIFICATE_REVOKED'])
  t.equal(connections, before, 'the request came over the connection opened before the reload')
  t.equal((await call(app, pki, '/whoami', pki.cnOnly)).status, 200)
})

test('a reload that fails changes nothing, and says why', async (t) => {
  const dir = t.testdir()
  const file = join(dir, 'ca.crl')
  await writeFile(file, await crlOf(pki.ca, [pki.revoked]))
  const app = await serve(pki, { ca: pki.ca.cert, crl: [file] })
  t.teardown(() => app.close())
  const bad: Array<[string | Buffer, RegExp]> = [
    ['not a CRL at all', /CRL .*ca\.crl is not a CRL \(PEM or DER\)/],
    ['-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', /holds no "-----BEGIN X509 CRL-----" block/],
    ['-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n', /is not a CRL/],
    [await crlOf(pki.foreignCa, [pki.service]), /is not signed by a CA of mtls\.ca/],
    // The issuer's name, but another key's signature: a forged CRL.
    [await crlOf(pki.ca, [pki.service], { signer: pki.foreignCa }), /is not signed by a CA of mtls\.ca/]
  ]
  for (const [content, message] of bad) {
    await writeFile(file, content)
    await t.rejects(app.mtls.reloadCrl(), { message })
    t.equal((await call(app, pki, '/whoami', pki.revoked)).body.code, 'PORTCULLIS_MTLS_CERTIFICATE_REVOKED', 'the lists before keep serving')
    t.equal((await call(app, pki, '/whoami', pki.service)).status, 200)
  }
})

test('CRLs in DER, several in one file, the newer one of an issuer in force', async (t) => {
  const dir = t.testdir()
  const pem = join(dir, 'both.pem')
  const older = await crlOf(pki.ca, [pki.revoked, pki.service], { thisUpdate: -2 })
  const newer = await crlOf(pki.ca, [pki.revoked], { thisUpdate: -1 })
  await writeFile(pem, newer + older)
  const der = join(dir, 'foreign.der')
  const foreignCrl = await crlOf(pki.foreignCa, [])
  await writeFile(der, Buffer.from(foreignCrl.replace(/-----[A-Z0-9 ]+-----|\s/g, ''), 'base64'))
  const app = await serve(pki, { ca: [pki.ca.cert, pki.foreignCa.cert], crl: [pem, der] })
  t.teardown(() => app.close())
  t.same(await app.mtls.reloadCrl(), { files: 2, issuers: 2, revoked: 1 })
  t.equal((await call(app, pki, '/whoami', pki.service)).status, 200)
  t.equal((await call(app, pki, '/whoami', pki.revoked)).status, 401)
})

test('a CRL without a next update never goes stale; an issuer without a CRL is not checked', async (t) => {
  const dir = t.testdir()
  const file = join(dir, 'foreign.crl')
  await writeFile(file, await crlOf(pki.foreignCa, [], { nextUpdate: null, thisUpdate: -400 }))
  const app = await serve(pki, { ca: [pki.ca.cert, pki.foreignCa.cert], crl: [file] })
  t.teardown(() => app.close())
  // The foreign CA's CRL covers none of this CA's certificates: the revoked one is not listed anywhere.
  t.equal((await call(app, pki, '/whoami', pki.revoked)).status, 200)
})

test('a CRL past its next update refuses its issuer\'s certificates until it is replaced', async (t) => {
  const dir = t.testdir()
  const file = join(dir, 'ca.crl')
  await writeFile(file, await crlOf(pki.ca, [pki.revoked], { thisUpdate: -8, nextUpdate: -1 }))
  const app = await serve(pki, { ca: pki.ca.cert, crl: [file] })
  t.teardown(() => app.close())
  const stale = await call(app, pki, '/whoami', pki.service)
  t.same([stale.status, stale.body.code, stale.headers['retry-after']], [503, 'PORTCULLIS_MTLS_REVOCATION_UNKNOWN', '60'])
  t.equal((await call(app, pki, '/whoami', pki.revoked)).body.code, 'PORTCULLIS_MTLS_CERTIFICATE_REVOKED')
  await writeFile(file, await crlOf(pki.ca, [pki.revoked]))
  await app.mtls.reloadCrl()
  t.equal((await call(app, pki, '/whoami', pki.service)).status, 200)
})

test('watchCrl reloads a CRL file when it changes, and keeps the old lists when the new file is bad', async (t) => {
  const dir = t.testdir()
  const file = join(dir, 'ca.crl')
  await writeFile(file, await crlOf(pki.ca, []))
  const app = await serve(pki, { ca: pki.ca.cert, crl: [file], watchCrl: true, crlWatchInterval: 100 })
  t.teardown(() => app.close())
  t.equal((await call(app, pki, '/whoami', pki.service)).status, 200)
  const until = async (status: number): Promise<number> => {
    let last = 0
    for (let i = 0; i < 60; i++) {
      last = (await call(app, pki, '/whoami', pki.service)).status
      if (last === status) break
      await sleep(100)
    }
    return last
  }
  await writeFile(file, await crlOf(pki.ca, [pki.service]))
  t.equal(await until(401), 401)
  await writeFile(file, 'garbage')
  await sleep(400)
  t.equal((await call(app, pki, '/whoami', pki.service)).status, 401, 'a bad file leaves the lists as they were')
  await writeFile(file, await crlOf(pki.ca, []))
  t.equal(await until(200), 200)
})

test('CRL options are checked at startup', async (t) => {
  const dir = t.testdir({ 'foreign.crl': await crlOf(pki.foreignCa, []) })
  const cases: Array<[MtlsOptions, RegExp]> = [
    [{ crl: [join(dir, 'foreign.crl')] }, /mtls\.ca must be the CA bundle that signs the CRLs, when mtls\.crl is set/],
    [{ ca: pki.ca.cert, crl: 'a.crl' } as never, /mtls\.crl must be a list of CRL file paths/],
    [{ ca: pki.ca.cert, crl: [join(dir, 'missing.crl')] }, /mtls\.crl must be readable CRLs signed by a CA of mtls\.ca: ENOENT/],
    [{ ca: pki.ca.cert, crl: [join(dir, 'foreign.crl')] }, /foreign\.crl is not signed by a CA of mtls\.ca/],
    [{ ca: pki.ca.cert, crl: [join(dir, 'foreign.crl')], watchCrl: 'yes' } as never, /mtls\.watchCrl must be a boolean/],
    [{ ca: pki.ca.cert, crl: [join(dir, 'foreign.crl')], crlWatchInterval: 10 }, /mtls\.crlWatchInterval must be a number of milliseconds from 100/]
  ]
  await rejectsOptions(t, cases)
  // Without CRLs, a reload has nothing to read.
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisMtls)
  t.same(await app.mtls.reloadCrl(), { files: 0, issuers: 0, revoked: 0 })
})
