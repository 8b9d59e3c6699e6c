import { test, type Test } from 'tap'
import Fastify from 'fastify'
import { generateKeyPairSync } from 'node:crypto'
import { readFile, rename, writeFile } from 'node:fs/promises'
import { Agent, request as httpRequest } from 'node:http'
import { join } from 'node:path'
import { createApiKey } from '@portcullis/authn'
import { signPolicy } from '@portcullis/policy'
import { inCanaryShare, startPolicyGateway, type PolicyGateway, type PolicyGatewayOptions } from '../src/index.js'

// A real upstream that names itself in every answer.
async function startUpstream (t: Test, name: string): Promise<string> {
  const app = Fastify({ keepAliveTimeout: 60_000 })
  app.all('/*', async () => ({ upstream: name }))
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  return url
}

async function startLive (t: Test, document: unknown, options: Partial<PolicyGatewayOptions> = {}): Promise<PolicyGateway & { url: string, file: string }> {
  const file = join(t.testdir(), 'policy.json')
  await writeFile(file, JSON.stringify(document))
  const gateway = await startPolicyGateway({ file, host: '127.0.0.1', port: 0, watch: false, ...options })
  const url = await gateway.listen()
  t.teardown(gateway.close)
  return { ...gateway, url, file }
}

const alice = createApiKey({ id: 'alice-key', owner: { id: 'alice', type: 'user', roles: ['user'] } })
const bob = createApiKey({ id: 'bob-key', owner: { id: 'bob', type: 'user', roles: ['admin'] } })
const keys = [alice.record, bob.record]

// A document where GET /api/things needs `role`; the keys are hashes, written as they are.
function rolePolicy (upstream: string, role: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    version: 1,
    authn: { methods: { keys: { type: 'api-key', keys } } },
    authz: { roles: { user: {}, admin: {} } },
    upstreams: [{ prefix: '/api', url: upstream, routes: [{ method: 'GET', path: '/things', authz: { anyRole: [role] } }] }],
    ...extra
  }
}

const text = (document: unknown): string => JSON.stringify(document)

async function status (url: string, key: string): Promise<number> {
  const response = await fetch(`${url}/api/things`, { headers: { 'x-api-key': key } })
  await response.arrayBuffer()
  return response.status
}

async function until (done: () => boolean, ms = 2000): Promise<void> {
  const started = Date.now()
  while (!done() && Date.now() - started < ms) await new Promise((resolve) => setTimeout(resolve, 10))
}

test('1,000 updates while clients hammer the gateway: no request fails, none is misrouted, none sees two versions', async (t) => {
  const upstreams = [await startUpstream(t, 'a'), await startUpstream(t, 'b')]
  const auditFile = join(t.testdir(), 'audit.log')
  // Version i sends /api to upstream i % 2, and counts under a limit of its own size.
  const documentOf = (i: number): Record<string, unknown> => ({
    version: 1,
    ipRateLimit: { limits: [{ name: 'ip', limit: 1_000_000 + i, window: '1h' }] },
    upstreams: [{ prefix: '/api', url: upstreams[i % 2], public: true }],
    audit: { sinks: [{ type: 'file', path: auditFile, flushInterval: 50 }] }
  })
  const gateway = await startLive(t, documentOf(0))
  const upstreamOf = new Map<string, string>([[gateway.policy.active?.version as string, upstreams[0] as string]])
  const limitOf = new Map<string, number>([[gateway.policy.active?.version as string, 1_000_000]])

  const agent = new Agent({ keepAlive: true, maxSockets: 8 })
  t.teardown(() => agent.destroy())
  const load = { updating: true }
  const failures: string[] = []
  const answers: Array<{ id: string, upstream: string, limit: number }> = []
  const client = async (): Promise<void> => {
    while (load.updating) {
      const answer = await new Promise<{ status: number, id: string, body: string, limit: number }>((resolve, reject) => {
        const req = httpRequest(`${gateway.url}/api/x`, { agent }, (res) => {
          let body = ''
          res.setEncoding('utf8')
          res.on('data', (chunk: string) => { body += chunk })
          res.on('end', () => {
            // "ip";q=<limit>;w=3600: the limit of the version whose limiter counted the request.
            const limit = Number(/q=(\d+)/.exec(String(res.headers['ratelimit-policy']))?.[1])
            resolve({ status: res.statusCode as number, id: String(res.headers['x-request-id']), body, limit })
          })
        })
        req.on('error', reject)
        req.end()
      }).catch((err: Error) => ({ status: 0, id: '', body: err.message, limit: 0 }))
      if (answer.status !== 200) failures.push(`${answer.status} ${answer.body}`)
      else answers.push({ id: answer.id, upstream: (JSON.parse(answer.body) as { upstream: string }).upstream, limit: answer.limit })
    }
  }
  const clients = Array.from({ length: 8 }, client)
  for (let i = 1; i <= 1000; i++) {
    const active = await gateway.policy.apply(text(documentOf(i)), { source: 'test' })
    upstreamOf.set(active.version, upstreams[i % 2] as string)
    limitOf.set(active.version, 1_000_000 + i)
  }
  load.updating = false
  await Promise.all(clients)
  t.same(failures, [], 'every request answered 200')
  t.equal(gateway.policy.history().length, 10, 'the last 10 versions are kept')
  t.ok(answers.length > 1000, `${answers.length} requests served during the updates`)

  await gateway.close()
  const records = (await readFile(auditFile, 'utf8')).trimEnd().split('\n').map((line) => JSON.parse(line))
  const activations = records.filter((record) => record.event.action === 'policy-activate')
  t.equal(activations.length, 1001, 'every activation is in the audit log')
  const byId = new Map(records.filter((record) => record.event.action === 'http-request').map((record) => [record.http.request.id, record]))
  // Three witnesses of the version that served each request must agree: the audit record's
  // version, the limit in the response's RateLimit-Policy, and the upstream that answered.
  let mixed = 0
  let misrouted = 0
  for (const answer of answers) {
    const record = byId.get(answer.id)
    const version = record.portcullis.policy.version as string
    if (limitOf.get(version) !== answer.limit) mixed++
    if (record.portcullis.upstream.address !== upstreamOf.get(version) || (answer.upstream === 'a' ? upstreams[0] : upstreams[1]) !== upstreamOf.get(version)) misrouted++
  }
  t.equal(byId.size, answers.length, 'one audit record per request')
  t.equal(mixed, 0, 'no request saw decisions of two versions')
  t.equal(misrouted, 0, 'every request went where its version sends it')
})

test('a refused update changes nothing: the active version keeps serving, and the refusal names its place', async (t) => {
  const upstream = await startUpstream(t, 'a')
  const gateway = await startLive(t, rolePolicy(upstream, 'user'))
  const before = gateway.policy.active?.version
  const broken = text(rolePolicy(upstream, 'user')).replace('"prefix":', '"timeout":"5s","prefix":')
  await t.rejects(gateway.policy.apply(broken), { code: 'PORTCULLIS_POLICY_REJECTED', stage: 'schema', problems: [{ pointer: '/upstreams/0/timeout', rule: 'type', line: 1, column: Number }] })
  // Valid to the schema, refused by the plugin that compiles it: the option path leads to the place.
  const unknownRole = rolePolicy(upstream, 'user', { authz: { roles: { user: { inherits: ['nobody'] } } } })
  const refused = await gateway.policy.apply(text(unknownRole)).catch((err: unknown) => err) as { stage: string, message: string }
  t.equal(refused.stage, 'compile')
  t.match(refused.message, /authz\.roles\.user\.inherits/)
  t.equal(gateway.policy.active?.version, before)
  t.equal(await status(gateway.url, alice.key), 200, 'the old version still serves')
})

test('signed documents: unsigned and wrongly signed updates are refused, a signed one is taken', async (t) => {
  const upstream = await startUpstream(t, 'a')
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const other = generateKeyPairSync('ed25519')
  const file = join(t.testdir(), 'policy.yaml')
  const first = text(rolePolicy(upstream, 'user'))
  await writeFile(file, first)
  await t.rejects(startPolicyGateway({ file, port: 0, watch: false, publicKey }), { code: 'PORTCULLIS_POLICY_REJECTED', stage: 'signature' }, 'an unsigned document does not start')
  await writeFile(`${file}.sig`, signPolicy(first, privateKey))
  const gateway = await startPolicyGateway({ file, host: '127.0.0.1', port: 0, publicKey, debounceMs: 20 })
  t.teardown(gateway.close)
  const url = await gateway.listen()
  const signedVersion = gateway.policy.active?.version

  // A compromised store writes a document that opens the route, with no signature or a wrong one.
  const open = text(rolePolicy(upstream, 'nobody-needed', { authz: { roles: { user: {}, admin: {} }, defaultRule: { anyRole: ['user'] } } }))
  await t.rejects(gateway.policy.apply(open), { stage: 'signature', message: /not signed/ })
  await t.rejects(gateway.policy.apply(open, { signature: signPolicy(open, other.privateKey) }), { stage: 'signature', message: /does not verify/ })
  await t.rejects(gateway.policy.apply(`${first} `, { signature: signPolicy(first, privateKey) }), { code: 'PORTCULLIS_POLICY_REJECTED', stage: 'signature' }, 'a signature covers the exact bytes')
  t.equal(gateway.policy.active?.version, signedVersion)

  // Through the watched file: a new signature with the new text is taken.
  const next = text(rolePolicy(upstream, 'admin'))
  await writeFile(`${file}.sig`, signPolicy(next, privateKey))
  await writeFile(file, next)
  await until(() => gateway.policy.active?.version !== signedVersion)
  t.not(gateway.policy.active?.version, signedVersion)
  t.equal(await status(url, alice.key), 403)
  t.equal(await status(url, bob.key), 200)
})

test('the watched file: an edit and an atomic rename are applied; rollback restores the exact previous version id', async (t) => {
  const upstream = await startUpstream(t, 'a')
  const gateway = await startLive(t, rolePolicy(upstream, 'user'), { watch: true, debounceMs: 20 })
  const v1 = gateway.policy.active?.version as string
  t.equal(await status(gateway.url, alice.key), 200)

  await writeFile(gateway.file, text(rolePolicy(upstream, 'admin')))
  await until(() => gateway.policy.active?.version !== v1)
  const v2 = gateway.policy.active?.version as string
  t.not(v2, v1)
  t.equal(await status(gateway.url, alice.key), 403, 'in force without a restart')

  // Editors and deployment tools replace the file by renaming another over it.
  const staged = `${gateway.file}.tmp`
  await writeFile(staged, text(rolePolicy(upstream, 'user', { authz: { roles: { user: {}, admin: {} }, realm: 'renamed' } })))
  await rename(staged, gateway.file)
  await until(() => gateway.policy.active?.version !== v2)
  const v3 = gateway.policy.active?.version as string
  t.not(v3, v2)
  t.equal(await status(gateway.url, alice.key), 200)

  const back = await gateway.policy.rollback()
  t.equal(back.version, v2, 'rollback restores the exact previous version id')
  t.equal(await status(gateway.url, alice.key), 403)
  t.equal((await gateway.policy.rollback(v1)).version, v1, 'or any kept version, by id')
  t.same(gateway.policy.history().map((entry) => entry.version), [v1, v2, v3], 'newest first')
})

test('shadow mode: the candidate decides every request beside the active version, and the differences are counted exactly', async (t) => {
  const upstream = await startUpstream(t, 'a')
  const gateway = await startLive(t, rolePolicy(upstream, 'user'))
  await gateway.policy.apply(text(rolePolicy(upstream, 'admin')), { source: 'test' }, { mode: 'shadow' })
  t.equal(gateway.policy.candidate?.mode, 'shadow')
  const statuses: number[] = []
  for (let i = 0; i < 7; i++) statuses.push(await status(gateway.url, alice.key))
  for (let i = 0; i < 4; i++) statuses.push(await status(gateway.url, bob.key))
  for (let i = 0; i < 3; i++) statuses.push(await status(gateway.url, 'no-such-key-0000000000000000000'))
  t.same(statuses, [...Array(7).fill(200), ...Array(4).fill(403), ...Array(3).fill(401)], 'the active version decides')
  await until(() => gateway.trialStats().shadow.evaluated === 14)
  t.match(gateway.trialStats(), {
    mode: 'shadow',
    shadow: { evaluated: 14, wouldDeny: 7, wouldAllow: 4, same: 3, otherReason: 0, skipped: 0, failed: 0, pending: 0 }
  })
  await gateway.policy.promote()
  t.equal(gateway.policy.candidate, null)
  t.equal(await status(gateway.url, alice.key), 403, 'promoted: the candidate enforces')
  t.equal(gateway.trialStats().mode, null)
})

test('canary: a sticky share of principals is served by the candidate; rollback ends the trial', async (t) => {
  let inShare = 0
  for (let i = 0; i < 10_000; i++) if (inCanaryShare(`user-${i}`, 0.1)) inShare++
  t.ok(Math.abs(inShare / 10_000 - 0.1) <= 0.02, `${inShare} of 10,000 principals in a 10% canary`)

  const upstream = await startUpstream(t, 'a')
  const users = Array.from({ length: 40 }, (_, i) => createApiKey({ id: `k${i}`, owner: { id: `user-${i}`, type: 'user', roles: ['user'] } }))
  const policyFor = (role: string): Record<string, unknown> => ({ ...rolePolicy(upstream, role), authn: { methods: { keys: { type: 'api-key', keys: users.map((user) => user.record) } } } })
  const gateway = await startLive(t, policyFor('user'))
  await gateway.policy.apply(text(policyFor('admin')), {}, { mode: 'canary', share: 0.5 })
  for (const [i, user] of users.entries()) {
    const expected = inCanaryShare(`user-${i}`, 0.5) ? 403 : 200
    const seen = [await status(gateway.url, user.key), await status(gateway.url, user.key), await status(gateway.url, user.key)]
    if (!seen.every((s) => s === expected)) t.fail(`user-${i} saw ${seen.join(', ')}, expected ${expected} every time`)
  }
  const stats = gateway.trialStats()
  t.equal(stats.candidate.requests + stats.active.requests, 120, 'each request counted on the side that served it')
  t.equal(stats.candidate.denied, stats.candidate.requests, 'the canary denies its users')
  t.equal(stats.active.denied, 0)
  await gateway.policy.rollback()
  t.equal(gateway.policy.candidate, null)
  for (const user of users.slice(0, 10)) t.equal(await status(gateway.url, user.key), 200, 'back on the active version')
})

test('automatic rollback: a canary that denies far more than the active version is rolled back on its own', async (t) => {
  const upstream = await startUpstream(t, 'a')
  const users = Array.from({ length: 30 }, (_, i) => createApiKey({ id: `k${i}`, owner: { id: `user-${i}`, type: 'user', roles: ['user'] } }))
  const policyFor = (role: string): Record<string, unknown> => ({ ...rolePolicy(upstream, role), authn: { methods: { keys: { type: 'api-key', keys: users.map((user) => user.record) } } } })
  const gateway = await startLive(t, policyFor('user'), { autoRollback: { minRequests: 5, denyRateIncrease: 0.2 } })
  const active = gateway.policy.active?.version
  await gateway.policy.apply(text(policyFor('admin')), {}, { mode: 'canary', share: 0.5 })
  for (const user of users) await status(gateway.url, user.key)
  await until(() => gateway.policy.candidate === null)
  t.equal(gateway.policy.candidate, null, 'rolled back')
  t.equal(gateway.policy.active?.version, active)
  t.equal(gateway.trialStats().mode, null)
  t.equal(await status(gateway.url, (users[0] as { key: string }).key), 200)
})
