import { test, type Test } from 'tap'
import Fastify from 'fastify'
import { generateKeyPairSync } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { request as httpsRequest } from 'node:https'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { createApiKey } from '@portcullis/authn'
import { signPolicy } from '@portcullis/policy'
import { createPki } from '../../mtls/test/pki.js'
import { checkPolicyFile, inCanaryShare, startPolicyGateway, type PolicyGateway, type PolicyGatewayOptions } from '../src/index.js'

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const alice = createApiKey({ id: 'alice-key', owner: { id: 'alice', type: 'user', roles: ['user'] } })
const bob = createApiKey({ id: 'bob-key', owner: { id: 'bob', type: 'user', roles: ['admin'] } })

// A real upstream: /boom answers 500, anything else what it received.
async function upstream (t: Test): Promise<string> {
  const app = Fastify()
  app.addContentTypeParser('*', (_request, payload, done) => { payload.resume(); payload.on('end', () => { done(null) }) })
  app.all('/boom', async (_request, reply) => await reply.code(500).send({ boom: true }))
  app.all('/*', async (request) => ({ method: request.method, body: request.body ?? null }))
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  return url
}

async function start (t: Test, document: Record<string, unknown>, options: Partial<PolicyGatewayOptions> = {}): Promise<PolicyGateway & { url: string, file: string, dir: string }> {
  const dir = t.testdir()
  const file = join(dir, 'policy.json')
  await writeFile(file, JSON.stringify(document))
  const gateway = await startPolicyGateway({ file, host: '127.0.0.1', port: 0, watch: false, ...options })
  t.teardown(gateway.close)
  return { ...gateway, url: await gateway.listen(), file, dir }
}

const keyed = (url: string, routes: unknown[], extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  version: 1,
  authn: { methods: { keys: { type: 'api-key', keys: [alice.record, bob.record] } } },
  authz: { roles: { user: {}, admin: {} } },
  upstreams: [{ prefix: '/api', url, routes }],
  ...extra
})

test('history keeps the configured number of versions; a gateway without Redis reports no fleet', async (t) => {
  const target = await upstream(t)
  const document = (limit: number): Record<string, unknown> => ({ version: 1, server: { port: 1 + limit }, ipRateLimit: { limits: [{ name: 'ip', limit, window: '1m' }] }, upstreams: [{ prefix: '/api', url: target, public: true }] })
  const lines: string[] = []
  const stream = new Writable({ write: (chunk, _encoding, done) => { lines.push(String(chunk)); done() } })
  const gateway = await start(t, document(100), { history: 2, serverOptions: { maxRequestsPerSocket: 50, logger: { level: 'info', stream } } })
  await gateway.policy.apply(JSON.stringify(document(200)))
  await gateway.policy.apply(JSON.stringify(document(300)))
  t.equal(gateway.policy.history().length, 2)
  await new Promise((resolve) => setTimeout(resolve, 20))
  t.match(lines.map((line) => JSON.parse(line)).filter((entry) => entry.policy?.action === 'activate').map((entry) => entry.policy.restartNeeded), [undefined, ['server.port'], ['server.port']], 'a change that waits for the next start is named')
  t.equal(gateway.fleetReport(), null)
  t.equal((await fetch(`${gateway.url}/api/x`)).status, 200)
  // The gateway without an active version (its policy closed) answers 503 and closes the connection.
  await gateway.policy.close()
  const closed = await fetch(`${gateway.url}/api/x`)
  t.equal(closed.status, 503)
  t.equal(closed.headers.get('connection'), 'close')
})

test('a listener with TLS from the document, and limits counted in Redis across versions', async (t) => {
  const pki = await createPki()
  const target = await upstream(t)
  const dir = t.testdir()
  await writeFile(join(dir, 'server.key'), pki.server.key)
  await writeFile(join(dir, 'server.crt'), pki.server.cert)
  const prefix = `portcullis:test:live:${process.pid}:${Date.now()}:`
  const document = (realm: string): Record<string, unknown> => ({
    version: 1,
    server: { tls: { key: 'server.key', cert: 'server.crt' } },
    ipRateLimit: { limits: [{ name: 'ip', algorithm: 'fixed-window', limit: 3, window: '1m' }] },
    rateLimitStore: { redis: { url: REDIS_URL, prefix } },
    authz: { realm },
    upstreams: [{ prefix: '/api', url: target, public: true }]
  })
  const file = join(dir, 'policy.json')
  await writeFile(file, JSON.stringify(document('one')))
  const gateway = await startPolicyGateway({ file, host: '127.0.0.1', port: 0, watch: false })
  t.teardown(gateway.close)
  const url = await gateway.listen()
  t.match(url, /^https:/)
  const get = async (): Promise<number> => await new Promise((resolve, reject) => {
    httpsRequest(`${url}/api/x`, { ca: pki.ca.cert, servername: 'localhost' }, (res) => { res.resume(); resolve(res.statusCode as number) }).on('error', reject).end()
  })
  t.same([await get(), await get()], [200, 200])
  await gateway.policy.apply(JSON.stringify(document('two')))
  t.same([await get(), await get()], [200, 429], 'the new version counts on from the old one\'s count, in Redis')
})

test('the audit log across versions: activations, refusals and the caller, in one chain; one cannot be added later', async (t) => {
  const target = await upstream(t)
  const dir = t.testdir()
  const { privateKey } = generateKeyPairSync('ed25519')
  await writeFile(join(dir, 'audit-key.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }))
  const audited = (role: string): Record<string, unknown> => keyed(target, [{ method: 'GET', path: '/things', authz: { anyRole: [role] } }], {
    audit: { sinks: [{ type: 'file', path: 'audit.log', flushInterval: 10 }], chain: { signingKey: 'audit-key.pem', keyId: 'test' }, onSinkFailure: 'drop' }
  })
  const file = join(dir, 'policy.json')
  await writeFile(file, JSON.stringify(audited('user')))
  const gateway = await startPolicyGateway({ file, host: '127.0.0.1', port: 0, watch: false })
  await gateway.listen()
  const next = await gateway.policy.apply(JSON.stringify(audited('admin')), { source: 'test', actor: 'ops' })
  await t.rejects(gateway.policy.apply('{"version": 2}', { source: 'test' }), { code: 'PORTCULLIS_POLICY_REJECTED', stage: 'schema' })
  await new Promise((resolve) => setTimeout(resolve, 50))
  await gateway.close()
  const records = (await readFile(join(dir, 'audit.log'), 'utf8')).trimEnd().split('\n').map((line) => JSON.parse(line))
  t.match(records.filter((record) => record.event.action.startsWith('policy-')), [
    { event: { action: 'policy-activate' }, portcullis: { policy: { previous_version: null, source: 'file' } } },
    { event: { action: 'policy-activate' }, user: { id: 'ops' }, portcullis: { policy: { version: next.version, source: 'test', diff: { changed: ['upstreams.[/api].routes.[GET /things].authz.anyRole'] } } } },
    { event: { action: 'policy-reject', reason: /^schema: must be one of 1/ } }
  ])

  const plain = join(t.testdir(), 'plain.json')
  await writeFile(plain, JSON.stringify(keyed(target, [])))
  const without = await startPolicyGateway({ file: plain, port: 0, watch: false })
  t.teardown(without.close)
  await t.rejects(without.policy.apply(JSON.stringify({ ...keyed(target, []), audit: { sinks: [{ type: 'stdout' }], chain: true } })), { stage: 'compile', message: /audit is set, but the gateway started without an audit log/ })
})

test('reload() reads the file now, watched or not, signatures included', async (t) => {
  const target = await upstream(t)
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const first = JSON.stringify(keyed(target, [{ method: 'GET', path: '/things', authz: { anyRole: ['user'] } }]))
  const dir = t.testdir()
  const file = join(dir, 'policy.json')
  await writeFile(file, first)
  await writeFile(`${file}.sig`, signPolicy(first, privateKey))
  const unwatched = await startPolicyGateway({ file, port: 0, watch: false, publicKey })
  t.teardown(unwatched.close)
  const second = JSON.stringify(keyed(target, [{ method: 'GET', path: '/things', authz: { anyRole: ['admin'] } }]))
  await writeFile(file, second)
  await writeFile(`${file}.sig`, signPolicy(second, privateKey))
  const before = unwatched.policy.active?.version
  await unwatched.reload()
  t.not(unwatched.policy.active?.version, before, 'applied at once')

  const watched = await startPolicyGateway({ file, port: 0, publicKey, debounceMs: 60_000 })
  t.teardown(watched.close)
  await writeFile(file, first)
  await writeFile(`${file}.sig`, signPolicy(first, privateKey))
  await watched.reload()
  t.equal(watched.policy.active?.version, before, 'without waiting for the watch')
})

test('a start that fails after its first version was compiled releases everything it opened', async (t) => {
  const target = await upstream(t)
  const dir = t.testdir()
  const file = join(dir, 'policy.json')
  await writeFile(file, JSON.stringify({ ...keyed(target, []), audit: { sinks: [{ type: 'file', path: 'audit.log' }] } }))
  await t.rejects(startPolicyGateway({ file, port: 0, redis: { url: REDIS_URL, prefix: `portcullis:test:abandon:${process.pid}:` }, admin: { port: 0 } }), { message: /admin must be authenticated/ })
  await t.rejects(startPolicyGateway({ file, port: 0, watch: false, redis: { url: 'http://127.0.0.1:6379' } }), { message: /^redis\.url must be a redis:\/\/ or rediss:\/\/ URL/ })
  // Nothing was left listening or holding the audit file: a gateway starts on it again.
  const again = await startPolicyGateway({ file, port: 0, watch: false })
  await again.close()
  t.pass('started and closed again')
})

test('checkPolicyFile takes the process environment by default', async (t) => {
  const target = await upstream(t)
  const file = join(t.testdir(), 'policy.json')
  await writeFile(file, JSON.stringify({ ...keyed(target, []), upstreams: [{ prefix: '/api', url: 'env:PORTCULLIS_TEST_UPSTREAM_URL' }] }))
  await t.rejects(checkPolicyFile(file), { code: 'PORTCULLIS_POLICY_REJECTED', stage: 'secrets' })
  process.env.PORTCULLIS_TEST_UPSTREAM_URL = target
  t.teardown(() => { delete process.env.PORTCULLIS_TEST_UPSTREAM_URL })
  t.match(await checkPolicyFile(file), { version: /^[0-9a-f]{16}$/ })
})

test('shadow: bodies are replayed when the gateway parsed them and skipped when it streamed them; both denying for other reasons is counted apart', async (t) => {
  const target = await upstream(t)
  const routes = [{ method: 'POST', path: '/notes', authz: { anyRole: ['user', 'admin'] } }, { method: 'GET', path: '/things', authz: { anyRole: ['admin'] } }]
  const gateway = await start(t, keyed(target, routes))
  // The candidate refuses notes from users, and no longer knows alice's key.
  const candidate = { ...keyed(target, [{ ...routes[0], authz: { anyRole: ['admin'] } }, routes[1]]), authn: { methods: { keys: { type: 'api-key', keys: [bob.record] } } } }
  await gateway.policy.apply(JSON.stringify(candidate), {}, { mode: 'shadow' })
  const post = async (type: string, body: string): Promise<number> => (await fetch(`${gateway.url}/api/notes`, { method: 'POST', headers: { 'x-api-key': bob.key, 'content-type': type }, body })).status
  t.equal(await post('application/json', '{"text":"hi"}'), 200, 'a parsed JSON body')
  t.equal(await post('text/plain', 'hi'), 200, 'a parsed text body')
  t.equal(await post('application/octet-stream', 'hi'), 200, 'a streamed body')
  t.equal((await fetch(`${gateway.url}/api/things`, { headers: { 'x-api-key': alice.key } })).status, 403, 'alice: forbidden now, unknown to the candidate')
  t.equal((await fetch(`${gateway.url}/api/other`, { headers: { 'x-api-key': bob.key, 'content-length': '0' } })).status, 403, 'no rule, either way')
  const until = Date.now() + 2000
  while (gateway.trialStats().shadow.evaluated < 4 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 10))
  t.match(gateway.trialStats().shadow, { evaluated: 4, same: 3, otherReason: 1, skipped: 1, wouldDeny: 0, wouldAllow: 0 })
})

test('canary: anonymous requests go by client address; a candidate that fails upstream is rolled back for its error rate', async (t) => {
  const target = await upstream(t)
  const open = (path: string): Record<string, unknown> => ({ version: 1, upstreams: [{ prefix: '/api', url: target, rewritePrefix: path, public: true }] })
  const gateway = await start(t, open(''), { autoRollback: { minRequests: 3, errorRateIncrease: 0.5 } })
  const share = inCanaryShare('address:127.0.0.1', 0.5) ? 0.5 : 0.99
  t.ok(inCanaryShare('address:127.0.0.1', share), 'this client is in the share')
  await gateway.policy.apply(JSON.stringify(open('/boom')), {}, { mode: 'canary', share })
  const statuses = [] as number[]
  for (let i = 0; i < 3; i++) statuses.push((await fetch(`${gateway.url}/api`)).status)
  t.same(statuses, [500, 500, 500], 'the canary serves this address: its upstream path fails')
  const until = Date.now() + 2000
  while (gateway.policy.candidate !== null && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 10))
  t.equal(gateway.policy.candidate, null, 'rolled back for its error rate')
  t.match(gateway.trialStats(), { rolledBack: true, candidate: { requests: 3, errors: 3 } })
  t.equal((await fetch(`${gateway.url}/api`)).status, 200)
})
