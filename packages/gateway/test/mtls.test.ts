import { test, type Test } from 'tap'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { mtlsServerOptions, portcullisMtls } from '@portcullis/mtls'
import { buildGateway, loadGatewayConfig, portcullis, type GatewayConfig } from '../src/index.js'
import { createPki, crlOf, issue, type Issued } from '../../mtls/test/pki.js'
import { getJson } from '../../../test/helpers/https.js'

const pki = await createPki()

/** An upstream that itself demands a client certificate, and answers with the identity it saw. */
async function mtlsUpstream (t: Test, server: Issued = pki.server): Promise<string> {
  const app = Fastify({ https: mtlsServerOptions({ key: server.key, cert: server.cert, ca: pki.ca.cert }) })
  await app.register(portcullisCore)
  await app.register(portcullisMtls)
  app.get('/*', async (request) => ({ caller: request.principal?.id, url: request.url }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  return `https://localhost:${(app.server.address() as { port: number }).port}`
}

async function files (t: Test): Promise<Record<string, string>> {
  const dir = t.testdir()
  const gatewayClient = pki.service
  const entries: Record<string, string> = {
    'server.key': pki.server.key,
    'server.crt': pki.server.cert,
    'ca.crt': pki.ca.cert,
    'client.key': gatewayClient.key,
    'client.crt': gatewayClient.cert,
    'ca.crl': await crlOf(pki.ca, [pki.revoked])
  }
  for (const [name, content] of Object.entries(entries)) await writeFile(join(dir, name), content)
  return Object.fromEntries(Object.keys(entries).map((name) => [name, join(dir, name)]))
}

async function call (url: string, client?: Issued): Promise<{ status: number, body: any }> {
  return await getJson(url, { ca: pki.ca.cert, ...(client === undefined ? {} : { cert: client.cert, key: client.key }) })
}

test('the standalone gateway: mutual TLS from clients, CRLs, and mutual TLS to the upstream', async (t) => {
  const f = await files(t)
  const upstream = await mtlsUpstream(t)
  // An upstream reached by address, whose certificate names it only by a DNS name.
  const named = await mtlsUpstream(t, await issue({ cn: 'orders.internal', dns: ['orders.internal'], issuer: pki.ca }))
  const byAddress = named.replace('localhost', '127.0.0.1')
  const client = { ca: f['ca.crt'] as string, cert: f['client.crt'] as string, key: f['client.key'] as string }
  const config: GatewayConfig = {
    server: { tls: { key: f['server.key'] as string, cert: f['server.crt'] as string, clientCa: f['ca.crt'] as string } },
    mtls: { crl: [f['ca.crl'] as string] },
    upstreams: [
      { prefix: '/api', url: upstream, tls: { ca: f['ca.crt'] as string, cert: f['client.crt'] as string, key: f['client.key'] as string } },
      { prefix: '/bare', url: upstream, tls: { ca: f['ca.crt'] as string } },
      { prefix: '/declared', url: upstream, tls: { ca: f['ca.crt'] as string, cert: f['client.crt'] as string, key: f['client.key'] as string }, routes: [{ method: 'GET', path: '/orders/:id' }] },
      { prefix: '/named', url: byAddress, tls: { ...client, servername: 'orders.internal' } },
      { prefix: '/unnamed', url: byAddress, tls: client }
    ]
  }
  const app = await buildGateway(config)
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const base = `https://localhost:${(app.server.address() as { port: number }).port}`

  const ok = await call(`${base}/api/orders`, pki.cnOnly)
  t.same([ok.status, ok.body], [200, { caller: 'spiffe://example.org/ns/shop/sa/orders', url: '/orders' }], 'the upstream sees the gateway\'s certificate')
  t.same((await call(`${base}/declared/orders/7`, pki.cnOnly)).body, { caller: 'spiffe://example.org/ns/shop/sa/orders', url: '/orders/7' })
  t.equal((await call(`${base}/api/orders`)).body.code, 'PORTCULLIS_MTLS_CERTIFICATE_REQUIRED')
  t.equal((await call(`${base}/api/orders`, pki.revoked)).body.code, 'PORTCULLIS_MTLS_CERTIFICATE_REVOKED')
  // Without a client certificate of its own, the upstream refuses the gateway.
  const bare = await call(`${base}/bare/orders`, pki.cnOnly)
  t.same([bare.status, bare.body.code], [401, 'PORTCULLIS_MTLS_CERTIFICATE_REQUIRED'])
  t.same((await call(`${base}/healthz`)).body, { status: 'ok' }, 'health checks need no certificate')
  // The upstream's certificate must carry the name the gateway expects: servername, or the URL's host.
  t.equal((await call(`${base}/named/orders`, pki.cnOnly)).body.caller, 'spiffe://example.org/ns/shop/sa/orders')
  t.equal((await call(`${base}/unnamed/orders`, pki.cnOnly)).status, 502)
})

test('a plain TLS listener asks for no certificate; an https upstream whose certificate does not verify is never spoken to (502)', async (t) => {
  const f = await files(t)
  const upstream = await mtlsUpstream(t)
  const app = await buildGateway({
    server: { tls: { key: f['server.key'] as string, cert: f['server.crt'] as string, minVersion: 'TLSv1.3' } },
    upstreams: [{ prefix: '/api', url: upstream }]
  }, { logger: false })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const res = await call(`https://localhost:${(app.server.address() as { port: number }).port}/api/orders`)
  t.same([res.status, res.body.code], [502, 'PORTCULLIS_CORE_BAD_GATEWAY'])
})

test('a configuration file names certificates and CRLs relative to itself', async (t) => {
  const f = await files(t)
  const dir = t.testdir({
    'gateway.yaml': [
      'server:',
      `  tls: { key: ${f['server.key']}, cert: server.crt, clientCa: ca.crt }`,
      'mtls:',
      '  crl: [ca.crl]',
      'upstreams:',
      '  - prefix: /api',
      '    url: https://localhost:9',
      '    tls: { ca: ca.crt, cert: certs/client.crt, key: certs/client.key }'
    ].join('\n')
  })
  const config = await loadGatewayConfig(join(dir, 'gateway.yaml'))
  t.same(config.server.tls, { key: f['server.key'], cert: join(dir, 'server.crt'), clientCa: join(dir, 'ca.crt') })
  t.same(config.mtls, { crl: [join(dir, 'ca.crl')], ca: join(dir, 'ca.crt') })
  t.same(config.upstreams[0]?.tls, { ca: join(dir, 'ca.crt'), cert: join(dir, 'certs/client.crt'), key: join(dir, 'certs/client.key') })
  const bare = join(t.testdir({ 'g.yaml': 'mtls: { required: false }\n' }), 'g.yaml')
  t.same((await loadGatewayConfig(bare)).mtls, { required: false })
})

test('TLS settings are checked at startup, naming the option', async (t) => {
  const f = await files(t)
  const tls = { key: f['server.key'] as string, cert: f['server.crt'] as string }
  const cases: Array<[GatewayConfig, RegExp]> = [
    [{ server: { tls: { cert: tls.cert } as never } }, /server\.tls\.key must be the path of a PEM file/],
    [{ server: { tls: { ...tls, clientCa: '' } } }, /server\.tls\.clientCa must be the path of a PEM file/],
    [{ server: { tls: { ...tls, minVersion: 'TLSv1.1' as never } } }, /server\.tls\.minVersion must be TLSv1\.2 or TLSv1\.3/],
    [{ server: { tls: { ...tls, ciphers: 'x' } as never } }, /server\.tls\.ciphers is not a known option/],
    [{ server: { tls: { ...tls, key: '/nonexistent/server.key' } } }, /server\.tls\.key must be a readable PEM file: \/nonexistent\/server\.key cannot be read \(ENOENT\)/],
    [{ mtls: { ca: 42 as never } }, /mtls\.ca must be the path of a PEM file of CA certificates/],
    [{ mtls: 'on' as never }, /mtls must be an object/],
    [{ mtls: null as never }, /mtls must be an object/],
    [{ mtls: { crl: 'ca.crl' as never } }, /mtls\.crl must be a list of CRL file paths/],
    [{ mtls: { ca: '/nonexistent/ca.crt' } }, /mtls\.ca must be a readable PEM file/],
    [{ mtls: { crl: [f['ca.crl'] as string] } }, /mtls\.ca must be the CA bundle that signs the CRLs/],
    [{ upstreams: [{ prefix: '/api', url: 'http://127.0.0.1:9', tls: {} }] }, /upstreams\[0\]\.tls must be used with an https:\/\/ upstream url/],
    [{ upstreams: [{ prefix: '/api', url: 'https://127.0.0.1:9', tls: { cert: f['client.crt'] as string } }] }, /upstreams\[0\]\.tls must be given both cert and key, or neither/],
    [{ upstreams: [{ prefix: '/api', url: 'https://127.0.0.1:9', tls: { ca: 7 as never } }] }, /upstreams\[0\]\.tls\.ca must be the path of a PEM file/],
    [{ upstreams: [{ prefix: '/api', url: 'https://127.0.0.1:9', tls: { servername: '' } }] }, /upstreams\[0\]\.tls\.servername must be a host name/],
    [{ upstreams: [{ prefix: '/api', url: 'https://127.0.0.1:9', tls: { key: '/nonexistent/k', cert: '/nonexistent/c' } }] }, /upstreams\[0\]\.tls\.cert must be a readable PEM file/],
    [{ authz: {}, upstreams: [{ prefix: '/api', url: 'https://127.0.0.1:9', tls: { servername: 'orders.internal' }, routes: [{ method: 'GET', path: '/o/:id', authz: { anyRole: ['a'] }, resource: { path: '/o/:id' } }] }] }, /upstreams\[0\]\.routes\[0\]\.resource must be left out on an upstream with tls/]
  ]
  for (const [config, message] of cases) await t.rejects(buildGateway(config), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, message.source)
})

test('the meta-plugin runs mtls at step 3: after IP rules, before authn', async (t) => {
  const app: FastifyInstance = Fastify({ https: mtlsServerOptions({ key: pki.server.key, cert: pki.server.cert, ca: pki.ca.cert }) }) as unknown as FastifyInstance
  await app.register(portcullis, {
    ipRules: { allow: ['loopback'] },
    mtls: { principal: false },
    authn: { methods: { staff: { type: 'api-key', keys: [] } }, defaults: { anonymous: true } }
  })
  app.get('/whoami', async (request) => ({ decisions: request.decisions?.map((d) => d.plugin), thumbprint: request.clientCertificate?.thumbprint }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const res = await call(`https://localhost:${(app.server.address() as { port: number }).port}/whoami`, pki.cnOnly)
  t.same(res.body.decisions, ['@portcullis/authz/ip-rules', '@portcullis/mtls', '@portcullis/authn'])
  t.type(res.body.thumbprint, 'string')
})
