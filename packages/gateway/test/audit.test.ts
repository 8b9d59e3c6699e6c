import { test, type Test } from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import { createApiKey } from '@portcullis/authn'
import { REDACTED } from '@portcullis/audit-log'
import { buildGateway, loadGatewayConfig, portcullis, withCredentialRedaction } from '../src/index.js'
import { main } from '../src/cli-main.js'
import { validateGatewayConfig } from '../src/config.js'

const carol = createApiKey({ id: 'key-carol', owner: { id: 'carol', type: 'user', roles: ['user'], scopes: ['orders:read'] } })
const lines = async (file: string): Promise<any[]> => (await readFile(file, 'utf8')).split('\n').filter((line) => line !== '').map((line) => JSON.parse(line))

function cli (): { out: string[], err: string[], io: Parameters<typeof main>[1] } {
  const out: string[] = []
  const err: string[] = []
  return { out, err, io: { stdout: (line) => { out.push(line) }, stderr: (line) => { err.push(line) }, logger: false } }
}

async function upstream (t: Test): Promise<string> {
  const app = Fastify()
  app.get('/orders/:id', async (request) => ({ id: (request.params as { id: string }).id }))
  t.teardown(async () => { await app.close() })
  return await app.listen({ port: 0, host: '127.0.0.1' })
}

test('the meta-plugin registers the audit log last, and redacts the header and parameter authn reads keys from', async (t) => {
  const file = join(t.testdir(), 'audit.log')
  const app = Fastify()
  await app.register(portcullis, {
    authn: { methods: { partners: { type: 'api-key', header: 'X-Partner-Key', query: 'partner_key', keys: [carol.record] } } },
    audit: { sinks: [{ type: 'file', path: file }], headers: { request: '*' } }
  })
  app.get('/orders/:id', async () => 'ok')
  t.teardown(async () => { await app.close() })
  await app.inject({ url: '/orders/1', headers: { 'x-partner-key': carol.key } })
  await app.inject({ url: `/orders/2?partner_key=${carol.key}` })
  await app.audit.flush()
  const text = await readFile(file, 'utf8')
  t.notOk(text.includes(carol.key), 'the key is written nowhere')
  const [byHeader, byQuery] = await lines(file)
  t.equal(byHeader.http.request.headers['x-partner-key'], REDACTED)
  t.equal(byQuery.url.query, `partner_key=${REDACTED}`)
  t.match(byHeader, { user: { id: 'carol' }, portcullis: { decision: { plugin: '@portcullis/authn', outcome: 'allow' } } })
})

test('withCredentialRedaction adds to what is given and leaves malformed options for the plugin to refuse', async (t) => {
  const authn = { methods: { keys: { type: 'api-key' as const, keys: [] }, staff: { type: 'basic' as const, users: [] } } }
  t.same(withCredentialRedaction({ redact: { headers: ['x-session'], query: ['sid'] } }, authn).redact, { headers: ['x-session', 'x-api-key'], query: ['sid'] })
  t.same(withCredentialRedaction({}, undefined), {}, 'without authn: as given')
  const malformed = { redact: { headers: 'x-token' } } as never
  t.equal(withCredentialRedaction(malformed, authn), malformed)
  t.equal(withCredentialRedaction(true as never, authn), true)
})

test('the standalone gateway: an audit file from its configuration, each proxied request with its upstream; health checks are not audited', async (t) => {
  const dir = t.testdir()
  const url = await upstream(t)
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  await writeFile(join(dir, 'audit-signing.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }))
  await writeFile(join(dir, 'audit-public.pem'), publicKey.export({ type: 'spki', format: 'pem' }))
  const config = join(dir, 'gateway.yaml')
  await writeFile(config, `
authn:
  methods:
    keys: { type: api-key, keys: [{ id: key-carol, hash: "${carol.record.hash}", owner: { id: carol, type: user, scopes: [orders:read] } }] }
audit:
  sinks: [{ type: file, path: logs/audit.log }]
  chain: { signingKey: audit-signing.pem, keyId: gw-1 }
upstreams:
  - prefix: /api
    url: ${url}
    routes: [{ method: GET, path: /orders/:id }]
  - prefix: /gone
    url: http://127.0.0.1:9
`)
  const app: FastifyInstance = await buildGateway(await loadGatewayConfig(config), { logger: false })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
  t.equal((await fetch(`${base}/api/orders/7`, { headers: { 'x-api-key': carol.key } })).status, 200)
  t.equal((await fetch(`${base}/api/other`, { headers: { 'x-api-key': carol.key } })).status, 404)
  t.equal((await fetch(`${base}/api/orders/7`)).status, 401)
  t.equal((await fetch(`${base}/gone/x`, { headers: { 'x-api-key': carol.key } })).status, 502)
  t.equal((await fetch(`${base}/healthz`)).status, 200)
  await app.close()
  const file = join(dir, 'logs', 'audit.log')
  const [declared, proxied, denied, failed, checkpoint, ...rest] = await lines(file)
  t.same(rest, [], 'one record per request, the health check not among them')
  t.match(declared, { portcullis: { route: '/api/orders/:id', upstream: { address: url, status_code: 200 } }, http: { response: { status_code: 200 } } })
  t.match(proxied, { portcullis: { upstream: { address: url, status_code: 404 } } })
  t.match(denied, { event: { type: ['denied'] } })
  t.notOk('upstream' in denied.portcullis, 'refused before the upstream')
  t.match(failed, { portcullis: { upstream: { address: 'http://127.0.0.1:9', status_code: null } }, http: { response: { status_code: 502 } } })
  t.match(checkpoint, { event: { action: 'audit-checkpoint' }, portcullis: { checkpoint: { key_id: 'gw-1' } } })

  const ok = cli()
  t.equal(await main(['audit', 'verify', file, '--key', join(dir, 'audit-public.pem')], ok.io, {}), 0)
  t.same(ok.out, ['portcullis audit verify: intact: 5 records, sequence 1 to 5; 1 signed checkpoints verified'])
  const unkeyed = cli()
  t.equal(await main(['audit', 'verify', file], unkeyed.io, {}), 0)
  t.same(unkeyed.out, ['portcullis audit verify: intact: 5 records, sequence 1 to 5; 1 checkpoints (signatures not checked: pass --key)'])

  const text = await readFile(file, 'utf8')
  await writeFile(join(dir, 'edited.log'), text.replace('"/api/orders/7"', '"/api/orders/8"'))
  const edited = cli()
  t.equal(await main(['audit', 'verify', join(dir, 'edited.log')], edited.io, {}), 1)
  t.same(edited.err, [`portcullis audit verify: ${join(dir, 'edited.log')}:1: record altered: its hash does not match its content (0 records before it are intact)`])
})

test('portcullis audit verify: what it reports beyond intact, and its usage', async (t) => {
  const dir = t.testdir()
  const file = join(dir, 'audit.log')
  for (let run = 0; run < 2; run++) {
    const app = Fastify()
    await app.register(portcullis, { audit: { sinks: [{ type: 'file', path: run === 0 ? join(dir, 'first.log') : file }], chain: true } })
    app.get('/', async () => 'ok')
    await app.inject('/')
    await app.close()
  }
  await writeFile(join(dir, 'both.log'), `${await readFile(join(dir, 'first.log'), 'utf8')}${await readFile(file, 'utf8')}`)
  const restarted = cli()
  t.equal(await main(['audit', 'verify', join(dir, 'both.log')], restarted.io, {}), 0)
  t.same(restarted.out, ['portcullis audit verify: intact: 2 records, sequence 1 to 1; 0 checkpoints (signatures not checked: pass --key)', `  a new chain begins at ${join(dir, 'both.log')}:2`])

  const { privateKey } = generateKeyPairSync('ed25519')
  const signed = join(dir, 'signed.log')
  const app = Fastify()
  await app.register(portcullis, { audit: { sinks: [{ type: 'file', path: signed }], chain: { signingKey: privateKey } } })
  app.get('/', async () => 'ok')
  await app.inject('/')
  app.audit.checkpoint()
  await app.inject('/')
  await app.audit.flush()
  const tail = cli()
  t.equal(await main(['audit', 'verify', signed], tail.io, {}), 0)
  t.match(tail.out, [/intact: 3 records/, '  1 records after the last checkpoint'])
  const continued = (await readFile(signed, 'utf8')).split('\n').slice(1).join('\n')
  await writeFile(join(dir, 'continued.log'), continued)
  const later = cli()
  t.equal(await main(['audit', 'verify', join(dir, 'continued.log')], later.io, {}), 0)
  t.match(later.out, [/intact: 2 records, sequence 2 to 3/, '  the first record continues a chain from an earlier file', /1 records after/])
  await app.close()
  await writeFile(join(dir, 'empty.log'), '')
  const empty = cli()
  t.equal(await main(['audit', 'verify', join(dir, 'empty.log')], empty.io, {}), 0)
  t.same(empty.out, ['portcullis audit verify: intact: no records; 0 checkpoints (signatures not checked: pass --key)'])

  for (const argv of [['audit'], ['audit', 'verify'], ['audit', 'check', file]]) {
    const run = cli()
    t.equal(await main(argv, run.io, {}), 2, argv.join(' '))
    t.match(run.err[0], /portcullis audit: expected "verify" and one or more audit log files/)
  }
  const missing = cli()
  t.equal(await main(['audit', 'verify', join(dir, 'missing.log')], missing.io, {}), 1)
  t.match(missing.err[0], /^portcullis audit verify: ENOENT/)
  const badKey = cli()
  t.equal(await main(['audit', 'verify', file, '--key', join(dir, 'missing.pem')], badKey.io, {}), 1)
  t.match(badKey.err[0], /ENOENT/)
})

test('audit configuration: the signing key is a file, named when missing', async (t) => {
  const dir = t.testdir({ 'gateway.yaml': 'audit:\n  chain: { signingKey: nowhere.pem }\n' })
  await t.rejects(async () => await buildGateway(await loadGatewayConfig(join(dir, 'gateway.yaml'))), { message: /audit\.chain\.signingKey/ })
  t.throws(() => validateGatewayConfig({ audit: { chain: { signingKey: 42 } } }), /audit\.chain\.signingKey must be the path of a PEM file holding the private key that signs checkpoints/)
  t.throws(() => validateGatewayConfig({ audit: [] }), /audit must be an object/)
  t.throws(() => validateGatewayConfig({ audit: null }), /audit must be an object/)
  const unsigned = await buildGateway({ audit: { sinks: [{ type: 'file', path: join(dir, 'unsigned.log') }], chain: true } })
  await unsigned.inject('/healthz')
  await unsigned.close()
  t.equal(await readFile(join(dir, 'unsigned.log'), 'utf8'), '', 'chained without a key: no checkpoint, and health checks are not audited')
})
