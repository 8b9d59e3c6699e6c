import { test } from 'tap'
import { request as httpRequest } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import { portcullisCore, recordUpstream, SnapshotHolder } from '@portcullis/core'
import { portcullisAuditLog } from '../src/index.js'
import { isoTime } from '../src/record.js'
import { alice, audited } from './helpers.js'

async function until (condition: () => boolean): Promise<void> {
  while (!condition()) await sleep(20)
}

test('an allowed request: who, what, which policy version, what each plugin decided, how it ended', async (t) => {
  const snapshot = new SnapshotHolder({ version: 'v7', value: {} })
  const { app, records } = await audited(t, {}, { snapshot, trustedProxies: ['127.0.0.1/32'] })
  const res = await app.inject({ url: '/orders/42?expand=items', headers: { 'x-api-key': alice.key, 'x-forwarded-for': '198.51.100.7', 'user-agent': 'curl/8.5' } })
  t.equal(res.statusCode, 200)
  const [record] = await records()
  t.match(record, {
    '@timestamp': /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
    client: { ip: '198.51.100.7' },
    source: { ip: '127.0.0.1' },
    ecs: { version: '8.17.0' },
    event: { action: 'http-request', category: ['web'], dataset: 'portcullis.audit', kind: 'event', outcome: 'success', reason: 'PORTCULLIS_AUTHZ_OK', sequence: 1, type: ['allowed'] },
    http: { request: { id: /\S/, method: 'GET' }, response: { status_code: 200 }, version: '1.1' },
    url: { path: '/orders/42', query: 'expand=items' },
    user: { id: 'alice', roles: ['user'] },
    user_agent: { original: 'curl/8.5' },
    portcullis: {
      route: '/orders/:id',
      policy: { version: 'v7' },
      principal: { credential_id: 'key-alice', method: 'api-key', plan: 'gold', tenant: 'acme', type: 'user' },
      decision: { plugin: '@portcullis/authz', outcome: 'allow' }
    }
  })
  t.same(record.portcullis.decisions.map((d: { plugin: string, outcome: string }) => [d.plugin, d.outcome]), [['@portcullis/authn', 'allow'], ['@portcullis/authz', 'allow']])
  t.ok(Number.isInteger(record.event.duration) && record.event.duration > 0, 'event.duration is in nanoseconds')
  t.notOk('hash' in record.event, 'no hash without the chain')
  t.notOk('upstream' in record.portcullis)
})

test('denials name the deciding plugin and reason; errors carry their code; unknown routes are recorded too', async (t) => {
  const { app, records } = await audited(t)
  app.get('/boom', { config: { authn: false, authz: false } }, async () => { throw Object.assign(new Error('disk on fire'), { code: 'EFIRE' }) })
  t.equal((await app.inject('/orders/1')).statusCode, 401)
  t.equal((await app.inject({ url: '/orders/1', headers: { 'x-api-key': 'pk_wrong-key-that-is-long-enough-to-check' } })).statusCode, 401)
  t.equal((await app.inject('/boom')).statusCode, 500)
  t.equal((await app.inject('/nowhere')).statusCode, 404)
  const [missing, wrong, boom, nowhere] = await records()
  t.match(missing, { event: { outcome: 'failure', reason: 'PORTCULLIS_AUTHN_MISSING_CREDENTIALS', type: ['denied'] }, http: { response: { status_code: 401 } }, portcullis: { decision: { plugin: '@portcullis/authn', outcome: 'deny' } } })
  t.notOk('user' in missing)
  t.match(wrong, { event: { reason: 'PORTCULLIS_AUTHN_INVALID_CREDENTIALS' } })
  t.match(boom, { error: { code: 'EFIRE' }, event: { outcome: 'failure', type: ['allowed'] }, http: { response: { status_code: 500 } } })
  t.notOk(JSON.stringify(boom).includes('disk on fire'), 'error messages are not written')
  t.match(nowhere, { http: { response: { status_code: 404 } }, portcullis: { route: null, decisions: [] } })
})

test('a route added before the plugin is recorded under its own pattern, with the default settings', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-audit-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const file = join(dir, 'audit.log')
  const app = Fastify()
  await app.register(portcullisCore)
  app.get('/early/:id', async () => 'ok')
  await app.register(portcullisAuditLog, { sinks: [{ type: 'file', path: file }] })
  app.get('/late/:id', async () => 'ok')
  for (const url of ['/early/1', '/late/1', '/early/2', '/nowhere']) await app.inject(url)
  await app.audit.flush()
  const routes = (await readFile(file, 'utf8')).trimEnd().split('\n').map((line) => JSON.parse(line).portcullis.route)
  t.same(routes, ['/early/:id', '/late/:id', '/early/:id', null])
  await app.close()
})

test('a request in report mode records the would-deny as its deciding decision, and is never sampled out', async (t) => {
  const { app, records } = await audited(t, { sample: 0 })
  app.get('/reported', { config: { authn: { mode: 'report' }, authz: false } }, async () => 'served')
  t.equal((await app.inject('/reported')).statusCode, 200)
  t.equal((await app.inject('/public')).statusCode, 200)
  const all = await records()
  t.equal(all.length, 1, 'the allowed request on /public was sampled out')
  t.match(all[0], { event: { outcome: 'success', reason: 'PORTCULLIS_AUTHN_MISSING_CREDENTIALS', type: ['allowed'] }, portcullis: { decision: { outcome: 'would-deny' } } })
  t.equal(app.audit.stats().sampledOut, 1)
})

test('the upstream of a proxied request and its status', async (t) => {
  const { app, records } = await audited(t)
  app.get('/proxied', { config: { authn: false, authz: false } }, async (request) => {
    recordUpstream(request, 'http://10.0.0.7:8080', 201)
    return 'ok'
  })
  app.get('/unanswered', { config: { authn: false, authz: false } }, async (request, reply) => {
    recordUpstream(request, 'http://10.0.0.8:8080', null)
    return await reply.code(502).send('no answer')
  })
  await app.inject('/proxied')
  await app.inject('/unanswered')
  const [answered, unanswered] = await records()
  t.same(answered.portcullis.upstream, { address: 'http://10.0.0.7:8080', status_code: 201 })
  t.same(unanswered.portcullis.upstream, { address: 'http://10.0.0.8:8080', status_code: null }, 'an upstream that never answered')
})

test('exactly one record per request under concurrent load, denials included', async (t) => {
  const { app, records } = await audited(t)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
  const total = 600
  const statuses = await Promise.all(Array.from({ length: total }, async (_, i) => {
    const headers: Record<string, string> = i % 3 === 0 ? {} : { 'x-api-key': alice.key }
    const res = await fetch(`${base}/orders/${i}`, { headers })
    await res.arrayBuffer()
    return res.status
  }))
  const all = await records()
  t.equal(all.length, total, 'one record each')
  t.equal(new Set(all.map((r) => r.http.request.id)).size, total, 'each request once')
  t.equal(all.filter((r) => r.event.type[0] === 'denied').length, statuses.filter((s) => s === 401).length)
  t.equal(statuses.filter((s) => s === 401).length, total / 3)
  t.same(all.map((r) => r.event.sequence), Array.from({ length: total }, (_, i) => i + 1), 'numbered in order')
})

test('a request the client gives up on is recorded once, as aborted, without a status', async (t) => {
  const { app, records } = await audited(t, { headers: { response: ['x-slow'] } })
  let finished = false
  app.get('/slow', { config: { authn: false, authz: false } }, async (_request, reply) => {
    reply.header('x-slow', 'yes')
    await sleep(300)
    finished = true
    return 'late'
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  await abandon(app, '/slow')
  await until(() => finished)
  await sleep(50)
  const all = await records()
  t.equal(all.length, 1)
  t.match(all[0], { event: { outcome: 'unknown', duration: Number }, portcullis: { aborted: true, route: '/slow' }, url: { path: '/slow' } })
  t.same(all[0].http.response, { headers: { 'x-slow': 'yes' } }, 'no status; the headers set so far')
})

test('a request aborted while an earlier onRequest hook still works is recorded too, timed from the abort', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  let released = false
  // Registered before the audit log, so its hook runs first and is still waiting when the client leaves.
  app.addHook('onRequest', async () => {
    await sleep(300)
    released = true
  })
  const file = join(t.testdir(), 'audit.log')
  await app.register(portcullisAuditLog, { sinks: [{ type: 'file', path: file }], headers: { response: '*' } })
  app.get('/held', async () => 'never seen')
  t.teardown(async () => { await app.close() })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const before = Date.now()
  await abandon(app, '/held')
  await until(() => released)
  await sleep(50)
  await app.audit.flush()
  const [record, ...others] = (await readFile(file, 'utf8')).trimEnd().split('\n').map((line) => JSON.parse(line))
  t.equal(others.length, 0)
  t.match(record, { event: { outcome: 'unknown' }, portcullis: { aborted: true, route: '/held' }, http: { response: {} } })
  t.notOk('duration' in record.event, 'no duration: when the request began is not known')
  t.ok(Date.parse(record['@timestamp']) >= before + 50, 'the time is the abort\'s')
})

// Sends a request, then goes away before the answer.
async function abandon (app: FastifyInstance, path: string): Promise<void> {
  const req = httpRequest({ host: '127.0.0.1', port: (app.server.address() as { port: number }).port, path })
  req.on('error', () => {})
  req.end()
  await sleep(100)
  req.destroy()
}

test('a request that runs past the connection timeout is recorded once, as timed out', async (t) => {
  const { app, records } = await audited(t, {}, {}, { connectionTimeout: 150 })
  let finished = false
  app.get('/stuck', { config: { authn: false, authz: false } }, async () => {
    await sleep(400)
    finished = true
    return 'late'
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const req = httpRequest({ host: '127.0.0.1', port: (app.server.address() as { port: number }).port, path: '/stuck' })
  req.on('error', () => {})
  req.end()
  await until(() => finished)
  await sleep(50)
  const all = await records()
  t.equal(all.length, 1)
  t.match(all[0], { portcullis: { timed_out: true, route: '/stuck' }, event: { outcome: 'unknown' } })
})

test('sampling: a share of allowed requests, per route too; config.audit false keeps only denials and errors', async (t) => {
  const { app, records } = await audited(t, { sample: 0.5 })
  app.get('/quiet', { config: { audit: false, authn: false, authz: false } }, async (request) => {
    if ((request.query as { fail?: string }).fail !== undefined) throw new Error('x')
    return 'ok'
  })
  app.get('/loud', { config: { audit: { sample: 1 }, authn: false, authz: false } }, async () => 'ok')
  for (let i = 0; i < 400; i++) await app.inject({ url: '/orders/1', headers: { 'x-api-key': alice.key } })
  for (let i = 0; i < 10; i++) await app.inject('/quiet')
  await app.inject('/quiet?fail=1')
  for (let i = 0; i < 10; i++) await app.inject('/loud')
  for (let i = 0; i < 20; i++) await app.inject('/orders/1')
  const all = await records()
  const sampled = all.filter((r) => r.url.path === '/orders/1' && r.http.response.status_code === 200).length
  t.ok(sampled > 130 && sampled < 270, `about half of 400 allowed requests (${sampled})`)
  t.equal(all.filter((r) => r.url.path === '/quiet').length, 1, 'only the error on /quiet')
  t.equal(all.filter((r) => r.url.path === '/loud').length, 10)
  t.equal(all.filter((r) => r.event.type[0] === 'denied').length, 20, 'every denial')
  t.equal(app.audit.stats().sampledOut, 400 - sampled + 10)
})

test('route options are checked when the route is added', async (t) => {
  const { app } = await audited(t)
  t.throws(() => app.get('/a', { config: { audit: { sample: 2 } } }, async () => 'a'), { message: /route GET \/a config\.audit\.sample must be a share from 0 to 1/ })
  t.throws(() => app.get('/b', { config: { audit: { body: 'yes' } as never } }, async () => 'b'), { message: /config\.audit\.body must be a boolean/ })
  t.throws(() => app.get('/c', { config: { audit: { headers: [] } as never } }, async () => 'c'), { message: /config\.audit\.headers is not a known option; allowed: sample, body/ })
})

test('record times read as Date#toISOString would write them, the same millisecond twice included', async (t) => {
  const now = Date.UTC(2026, 11, 4, 21, 22, 34, 187)
  for (const ms of [now, now, now + 0.75, now + 813, now + 814, now + 1000 - 187 + 5, now + 60_000 + 40, 0, 999.9, 86_400_000 * 365 + 7]) {
    t.equal(isoTime(ms), new Date(ms).toISOString(), `at ${ms}`)
  }
})

test('a server on a Unix socket has no peer address: source.ip is left out, not made up', async (t) => {
  const { app, records } = await audited(t)
  // Short enough for a socket path, wherever the tests run.
  const dir = await mkdtemp(join(tmpdir(), 'audit-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const path = join(dir, 'app.sock')
  await app.listen({ path })
  const status = await new Promise<number | undefined>((resolve, reject) => {
    httpRequest({ socketPath: path, path: '/public' }, (res) => { res.resume(); res.on('end', () => { resolve(res.statusCode) }) }).on('error', reject).end()
  })
  t.equal(status, 200)
  const [record] = await records()
  t.same(record.source, {})
  t.match(record, { url: { path: '/public' }, http: { response: { status_code: 200 } } })
})

test('a request already detached from its socket (its streamed body consumed by a proxy) is still recorded, without source.ip', async (t) => {
  const dir = t.testdir()
  const file = join(dir, 'audit.log')
  const app = Fastify()
  await app.register(portcullisCore)
  // Node detaches a request from its socket once a proxy has consumed and closed its body stream.
  app.addHook('onResponse', async (request) => { (request.raw as { socket: unknown }).socket = null })
  await app.register(portcullisAuditLog, { sinks: [{ type: 'file', path: file }] })
  app.put('/files/:id', async () => 'stored')
  t.teardown(async () => { await app.close() })
  t.equal((await app.inject({ method: 'PUT', url: '/files/1', payload: { name: 'x' } })).statusCode, 200)
  await app.audit.flush()
  const [record] = (await readFile(file, 'utf8')).trimEnd().split('\n').map((line) => JSON.parse(line))
  t.match(record, { url: { path: '/files/1' }, http: { response: { status_code: 200 } } })
  t.same(record.source, {})
})
