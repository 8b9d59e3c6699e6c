import { test } from 'tap'
import { execFile, spawn } from 'node:child_process'
import { promisify } from 'node:util'
import { listeningUrl } from '../../../test/helpers/child.js'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { copyFile, mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { loadDevIdentity, signDevToken } from '@portcullis/authn'
import { DEMO_API_KEYS, demoKeyRecords } from '../src/identities.js'
import { parse as parseYaml } from 'yaml'
import { auditKeys, DEFAULT_POLICY_FILE, optionsFromEnv, startQuickstart } from '../src/main.js'

const identityFile = join(await mkdtemp(join(tmpdir(), 'quickstart-')), 'dev-identity.json')
const alice = { 'x-api-key': DEMO_API_KEYS.alice }
const run = promisify(execFile)

// The quickstart's policy and contract, copied where a test's audit log and keys may go.
async function policyCopy (dir?: string): Promise<string> {
  const into = dir ?? await mkdtemp(join(tmpdir(), 'quickstart-policy-'))
  await copyFile(DEFAULT_POLICY_FILE, join(into, 'policy.yaml'))
  await copyFile(join(dirname(DEFAULT_POLICY_FILE), 'orders.openapi.yaml'), join(into, 'orders.openapi.yaml'))
  return join(into, 'policy.yaml')
}

test('the quickstart gateway serves health, proxies the orders API and answers problems', async (t) => {
  const quickstart = await startQuickstart({ port: 0, identityFile, policyFile: await policyCopy() })
  t.teardown(quickstart.close)
  const health = await fetch(`${quickstart.url}/healthz`)
  t.equal(health.status, 200)
  const list = await fetch(`${quickstart.url}/api/orders`, { headers: alice })
  t.equal(list.status, 200)
  t.match(await list.json(), { orders: [{ id: '1', item: 'lamp' }, { id: '2', item: 'chair' }] })
  const created = await fetch(`${quickstart.url}/api/orders`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...alice }, body: JSON.stringify({ item: 'desk', qty: 2 })
  })
  t.equal(created.status, 201)
  const { id } = await created.json() as { id: string }
  t.match(await (await fetch(`${quickstart.url}/api/orders/${id}`, { headers: alice })).json(), { id, item: 'desk', qty: 2 })
  t.equal((await fetch(`${quickstart.url}/api/orders/999`, { headers: alice })).status, 403, 'a missing order looks like another\'s')
  const unknown = await fetch(`${quickstart.url}/nope`)
  t.equal(unknown.status, 404)
  t.equal(unknown.headers.get('content-type'), 'application/problem+json; charset=utf-8')
  t.equal((await unknown.json() as { code: string }).code, 'PORTCULLIS_CORE_NOT_FOUND')
})

test('the orders API needs alice\'s or bob\'s key or token', async (t) => {
  const quickstart = await startQuickstart({ port: 0, identityFile, policyFile: await policyCopy() })
  t.teardown(quickstart.close)
  const identity = await loadDevIdentity(identityFile)
  const get = (headers: Record<string, string> = {}) => fetch(`${quickstart.url}/api/orders`, { headers })
  const anonymous = await get()
  t.equal(anonymous.status, 401)
  t.equal(anonymous.headers.get('content-type'), 'application/problem+json; charset=utf-8')
  t.equal(anonymous.headers.get('www-authenticate'), 'ApiKey realm="quickstart", header="x-api-key", Bearer realm="quickstart"')
  t.equal((await get({ 'x-api-key': DEMO_API_KEYS.alice })).status, 200)
  t.equal((await get({ 'x-api-key': DEMO_API_KEYS.bob })).status, 200)
  t.equal((await get({ 'x-api-key': 'demo-alice-key-0000000000000009' })).status, 401)
  const token = signDevToken(identity, 'alice')
  t.equal((await get({ authorization: `Bearer ${token}` })).status, 200)
  const [header, payload, signature] = token.split('.') as [string, string, string]
  const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${payload}.`
  const noneRes = await get({ authorization: `Bearer ${none}` })
  t.equal(noneRes.status, 401, 'alg none')
  t.equal(noneRes.headers.get('www-authenticate'), 'Bearer realm="quickstart", error="invalid_token"')
  const changed = `${header}.${payload}.${signature.slice(0, -4)}${signature.endsWith('AAAA') ? 'BBBB' : 'AAAA'}`
  t.equal((await get({ authorization: `Bearer ${changed}` })).status, 401, 'a changed signature')
})

test('who may do what: scopes, roles, ownership and writable fields', async (t) => {
  const quickstart = await startQuickstart({ port: 0, identityFile, policyFile: await policyCopy() })
  t.teardown(quickstart.close)
  const identity = await loadDevIdentity(identityFile)
  const bob = { authorization: `Bearer ${signDevToken(identity, 'bob')}` }
  const call = async (method: string, path: string, headers: Record<string, string>, body?: unknown) => {
    const res = await fetch(`${quickstart.url}${path}`, { method, headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
    return { status: res.status, body: res.status === 204 ? null : await res.json() as { code?: string, errors?: Array<{ pointer: string }> } }
  }
  const aliceDelete = await call('DELETE', '/api/orders/1', alice)
  t.equal(aliceDelete.status, 403, 'alice is not an admin')
  t.equal(aliceDelete.body?.code, 'PORTCULLIS_AUTHZ_FORBIDDEN')
  t.equal((await call('GET', '/api/orders/1', alice)).status, 200, 'so order 1 is still there')
  t.equal((await call('DELETE', '/api/orders/1', bob)).status, 204, 'bob is')
  t.equal((await call('DELETE', '/api/orders/1', bob)).status, 404, "twice: the orders API's own answer passes through")
  t.equal((await call('GET', '/api/orders/1', alice)).status, 403, 'gone: a missing order looks like another\'s')
  const bobsOrder = await call('GET', '/api/orders/2', alice)
  t.equal(bobsOrder.status, 403, 'alice may not read bob\'s order')
  t.equal(bobsOrder.body?.code, 'PORTCULLIS_AUTHZ_NOT_OWNER')
  t.equal((await call('GET', '/api/orders/2', bob)).status, 200, 'bob may')
  const stolen = await call('POST', '/api/orders', alice, { item: 'desk', qty: 1, owner: 'bob' })
  t.equal(stolen.status, 400, 'nobody sets the owner of an order: the contract has no such field')
  t.equal(stolen.body?.code, 'PORTCULLIS_SCHEMA_INVALID')
  t.same(stolen.body?.errors?.map((e) => e.pointer), ['/owner'])
  t.equal((await call('PATCH', '/api/orders/2', bob)).body?.code, 'PORTCULLIS_AUTHZ_NO_RULE', 'a route the gateway does not know is denied')
  t.equal((await call('GET', '/api/orders/2/..%2F1', alice)).status, 403, 'no encoded way around the owner check')
})

test('the orders API\'s contract, enforced at the gateway', async (t) => {
  const quickstart = await startQuickstart({ port: 0, identityFile, policyFile: await policyCopy() })
  t.teardown(quickstart.close)
  const post = async (body: string, type = 'application/json') => {
    const response = await fetch(`${quickstart.url}/api/orders`, { method: 'POST', headers: { ...alice, 'content-type': type }, body })
    return { status: response.status, type: response.headers.get('content-type'), problem: await response.json() as { code: string, errors?: Array<{ pointer: string, rule: string }> } }
  }
  const zero = await post('{"item":"x","qty":0}')
  t.equal(zero.status, 400)
  t.equal(zero.type, 'application/problem+json; charset=utf-8')
  t.same(zero.problem.errors?.map((e) => [e.pointer, e.rule]), [['/qty', 'minimum']], 'names /qty')
  const admin = await post('{"item":"x","qty":1,"admin":true}')
  t.equal(admin.status, 400)
  t.same(admin.problem.errors?.map((e) => e.pointer), ['/admin'])
  const poisoned = await post('{"__proto__":{"x":1},"item":"x","qty":1}')
  t.equal(poisoned.status, 400)
  t.equal(({} as { x?: unknown }).x, undefined)
  t.equal((await post('item=x&qty=1', 'text/plain')).status, 415)
  const large = await post(JSON.stringify({ item: 'x', qty: 1, note: 'y'.repeat(2000) }))
  t.equal(large.status, 413)
  t.equal((await post('{"item":"lamp","qty":1}')).status, 201, 'and a good order still goes through')
  const shadow = await fetch(`${quickstart.url}/api/orders/1/export`, { headers: alice })
  t.equal(shadow.status, 403, 'a path the contract does not have: authz denies it first (no rule), the contract would too')
})

test('a port already in use fails the start and leaves nothing running', async (t) => {
  const blocker = createServer()
  blocker.listen(0, '127.0.0.1')
  await once(blocker, 'listening')
  t.teardown(() => blocker.close())
  const { port } = blocker.address() as { port: number }
  await t.rejects(startQuickstart({ port, identityFile, policyFile: await policyCopy() }), { code: 'EADDRINUSE' })
})

const main = fileURLToPath(new URL('../src/main.ts', import.meta.url))

test('run as a program: HOST and PORT, a greeting with curl commands, clean stop on SIGTERM', async (t) => {
  const policyFile = await policyCopy(t.testdir())
  const auditFile = join(dirname(policyFile), '.portcullis', 'audit.log')
  const child = spawn(process.execPath, [...process.execArgv, main], { env: { ...process.env, HOST: '127.0.0.1', PORT: '0', POLICY_FILE: policyFile }, stdio: ['ignore', 'pipe', 'ignore'] })
  const { url, output } = await listeningUrl(child)
  t.match(output, `curl -i ${url}/healthz`)
  t.match(output, `policy: ${policyFile}, version `)
  t.match(output, `pnpm -s portcullis policy validate ${policyFile}`)
  t.match(output, `audit log: ${auditFile}`)
  t.match(output, `pnpm -s portcullis audit verify ${auditFile} --key ${join(dirname(auditFile), 'audit-public-key.pem')}`)
  t.equal((await fetch(`${url}/api/orders/1`, { headers: alice })).status, 200)
  child.kill('SIGTERM')
  t.equal((await once(child, 'exit'))[0], 0)
})

test('HOST and PORT default to 127.0.0.1:3000; RATE_LIMIT_REDIS_URL moves the counts to Redis', async (t) => {
  t.same(optionsFromEnv({}), { host: '127.0.0.1', port: 3000 })
  t.same(optionsFromEnv({ HOST: '::1', PORT: '8080', RATE_LIMIT_REDIS_URL: '' }), { host: '::1', port: 8080 })
  t.same(optionsFromEnv({ RATE_LIMIT_REDIS_URL: 'redis://127.0.0.1:6379' }).rateLimitStore, { redis: { url: 'redis://127.0.0.1:6379', prefix: 'quickstart:rl:' } })
  t.same(optionsFromEnv({ POLICY_FILE: '/etc/portcullis/policy.yaml' }), { host: '127.0.0.1', port: 3000, policyFile: '/etc/portcullis/policy.yaml' })
  t.same(optionsFromEnv({ POLICY_FILE: '' }), { host: '127.0.0.1', port: 3000 })
})

test('two quickstart gateways counting in one Redis: alice has 60 a minute across both', async (t) => {
  const rateLimitStore = { redis: { url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', prefix: `quickstart:test:${process.pid}:${Date.now()}:` } }
  const first = await startQuickstart({ port: 0, identityFile, rateLimitStore, policyFile: await policyCopy() })
  t.teardown(first.close)
  const second = await startQuickstart({ port: 0, identityFile, rateLimitStore, policyFile: await policyCopy() })
  t.teardown(second.close)
  const statuses: number[] = []
  for (let i = 0; i < 61; i++) {
    const response = await fetch(`${(i % 2 === 0 ? first : second).url}/api/orders`, { headers: alice })
    await response.arrayBuffer()
    statuses.push(response.status)
  }
  t.equal(statuses.filter((status) => status === 200).length, 60, '60 admitted across the two')
  t.equal(statuses[60], 429, 'the 61st refused, on whichever gateway it reaches')
})

test('run as a program: a bad PORT is refused with a message', async (t) => {
  for (const port of ['http', '70000', '1.5', '']) {
    const child = spawn(process.execPath, [...process.execArgv, main], { env: { ...process.env, PORT: port }, stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (chunk: string) => { stderr += chunk })
    t.equal((await once(child, 'exit'))[0], 1)
    t.match(stderr, `quickstart: PORT must be an integer from 0 to 65535 (got "${port}")`)
  }
})

test('limits: alice\'s 61st request in a minute is 429, bob is unaffected, and a forged X-Forwarded-For resets nothing', async (t) => {
  const quickstart = await startQuickstart({ port: 0, identityFile, policyFile: await policyCopy() })
  t.teardown(quickstart.close)
  const get = (headers: Record<string, string>) => fetch(`${quickstart.url}/api/orders`, { headers })
  // The address's budget refills from its first request on.
  const started = Date.now()
  for (let i = 1; i <= 60; i++) {
    const response = await get(alice)
    await response.arrayBuffer()
    if (response.status !== 200) t.fail(`request ${i} answered ${response.status}`)
  }
  const refused = await get(alice)
  t.equal(refused.status, 429, 'the 61st')
  t.equal(refused.headers.get('content-type'), 'application/problem+json; charset=utf-8')
  t.equal((await refused.json() as { code: string }).code, 'PORTCULLIS_RATE_LIMIT_EXCEEDED')
  const retryAfter = Number(refused.headers.get('retry-after'))
  t.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After: ${retryAfter}`)
  t.equal(refused.headers.get('ratelimit-policy'), '"ip";q=300;w=60, "user";q=60;w=60')
  t.match(refused.headers.get('ratelimit'), new RegExp(`^"ip";r=\\d+;t=\\d+, "user";r=0;t=${retryAfter}$`))
  const bob = await get({ 'x-api-key': DEMO_API_KEYS.bob })
  t.equal(bob.status, 200, 'bob has his own 60')
  t.match(bob.headers.get('ratelimit'), /"user";r=59;/)
  t.equal((await fetch(`${quickstart.url}/healthz`)).status, 200, 'health checks are never limited')

  // 62 requests so far from this address. Requests without credentials, each claiming to be
  // forwarded for another client, keep counting against it: the address's limit holds a burst of
  // 300, refilled at 5 a second.
  let sent = 62
  let over: Response | undefined
  while (sent < 400 && over === undefined) {
    const response = await get({ 'x-forwarded-for': `198.51.100.${sent % 250}` })
    await response.arrayBuffer()
    sent++
    if (response.status === 429) over = response
    else if (response.status !== 401) t.fail(`request ${sent} answered ${response.status}`)
  }
  const refilled = Math.ceil((Date.now() - started) / 1000 * 5)
  t.ok(over !== undefined && sent <= 301 + refilled, `refused at request ${sent} from this address (300, plus ${refilled} refilled)`)
  t.match(over?.headers.get('ratelimit'), /^"ip";r=0;t=\d+$/, 'by the per-address limit, which the forged header did not reset')
  t.equal(over?.headers.get('ratelimit-policy'), '"ip";q=300;w=60', 'before authentication')
})

test('the audit log: one record per request with the deciding plugin and reason, no credential in it, and a chain that verifies', async (t) => {
  const dir = t.testdir()
  const quickstart = await startQuickstart({ port: 0, identityFile: join(dir, 'dev-identity.json'), policyFile: await policyCopy(dir) })
  const identity = await loadDevIdentity(join(dir, 'dev-identity.json'))
  const token = signDevToken(identity, 'alice')
  const bob = { 'x-api-key': DEMO_API_KEYS.bob }
  const requests: Array<[string, RequestInit, number]> = [
    ['/api/orders', { headers: alice }, 200],
    ['/api/orders', { headers: { authorization: `Bearer ${token}` } }, 200],
    ['/api/orders', {}, 401],
    ['/api/orders', { headers: { 'x-api-key': 'demo-mallory-key-00000000000009' } }, 401],
    ['/api/orders/1', { method: 'DELETE', headers: alice }, 403],
    ['/api/orders', { method: 'POST', headers: { ...bob, 'content-type': 'application/json' }, body: JSON.stringify({ item: 'x', qty: 0 }) }, 400],
    ['/api/orders/1', { method: 'DELETE', headers: bob }, 204]
  ]
  for (const [path, init, status] of requests) {
    const response = await fetch(`${quickstart.url}${path}`, init)
    await response.arrayBuffer()
    t.equal(response.status, status, `${init.method ?? 'GET'} ${path}`)
  }
  t.equal((await fetch(`${quickstart.url}/healthz`)).status, 200)
  await quickstart.close()
  t.equal(quickstart.auditFile, join(dir, '.portcullis', 'audit.log'))
  const text = await readFile(quickstart.auditFile, 'utf8')
  for (const secret of [DEMO_API_KEYS.alice, DEMO_API_KEYS.bob, 'demo-mallory-key-00000000000009', token, 'Bearer']) t.notOk(text.includes(secret), 'no key, token or authorization value')
  const records = text.trimEnd().split('\n').map((line) => JSON.parse(line))
  t.match(records[0], { event: { action: 'policy-activate' }, portcullis: { policy: { version: quickstart.policy.history().at(-1)?.version, previous_version: null, source: 'file' } } }, 'the first record: the policy version it started on')
  const requestRecords = records.filter((record) => record.event.action === 'http-request')
  t.equal(requestRecords.length, requests.length, 'one record per request; health checks are not recorded')
  t.same(requestRecords.map((r) => [r.http.response.status_code, r.portcullis.decision?.plugin, r.event.reason]), [
    // Allowed: the last check to pass speaks for the request (every decision is in portcullis.decisions).
    [200, '@portcullis/schema-validate', 'PORTCULLIS_SCHEMA_OK'],
    [200, '@portcullis/schema-validate', 'PORTCULLIS_SCHEMA_OK'],
    [401, '@portcullis/authn', 'PORTCULLIS_AUTHN_MISSING_CREDENTIALS'],
    [401, '@portcullis/authn', 'PORTCULLIS_AUTHN_INVALID_CREDENTIALS'],
    [403, '@portcullis/authz', 'PORTCULLIS_AUTHZ_FORBIDDEN'],
    [400, '@portcullis/schema-validate', 'PORTCULLIS_SCHEMA_INVALID'],
    [204, '@portcullis/schema-validate', 'PORTCULLIS_SCHEMA_OK']
  ])
  t.same(requestRecords[0].portcullis.decisions.map((d: { plugin: string }) => d.plugin), ['@portcullis/rate-limit', '@portcullis/authn', '@portcullis/rate-limit', '@portcullis/authz', '@portcullis/schema-validate'])
  t.match(requestRecords[0], { user: { id: 'alice' }, portcullis: { principal: { method: 'api-key', credential_id: 'demo-alice' }, upstream: { status_code: 200 } } })
  t.equal(records.at(-1).event.action, 'audit-checkpoint', 'a signed checkpoint at shutdown')
  const verify = await run(process.execPath, [fileURLToPath(new URL('../../../scripts/portcullis.mjs', import.meta.url)), 'audit', 'verify', quickstart.auditFile, '--key', quickstart.auditPublicKey])
  t.match(verify.stdout, /intact: 9 records, sequence 1 to 9; 1 signed checkpoints verified/)
})

test('policy.yaml holds the hashes of the demo keys the README hands out', async (t) => {
  const policy = parseYaml(await readFile(DEFAULT_POLICY_FILE, 'utf8')) as { authn: { methods: { keys: { keys: unknown } } } }
  t.same(policy.authn.methods.keys.keys, demoKeyRecords())
})

test('editing policy.yaml changes the running gateway within 2 seconds, and a broken edit changes nothing', async (t) => {
  const policyFile = await policyCopy()
  const quickstart = await startQuickstart({ port: 0, identityFile, policyFile, debounceMs: 50 })
  const first = quickstart.policy.active?.version
  const list = async (): Promise<number> => {
    const response = await fetch(`${quickstart.url}/api/orders`, { headers: alice })
    await response.arrayBuffer()
    return response.status
  }
  const until = async (done: () => boolean | Promise<boolean>): Promise<number> => {
    const started = Date.now()
    while (!(await done()) && Date.now() - started < 2000) await new Promise((resolve) => setTimeout(resolve, 25))
    return Date.now() - started
  }
  t.equal(await list(), 200)
  const original = await readFile(policyFile, 'utf8')

  // Block a route: listing orders becomes an admin's privilege.
  await writeFile(policyFile, original.replace("{ method: GET, path: /orders, authz: { anyScope: ['orders:read'] } }", '{ method: GET, path: /orders, authz: { anyRole: [admin] } }'))
  const blocked = await until(async () => (await list()) === 403)
  t.ok(blocked < 2000, `alice is refused ${blocked} ms after the save`)
  const second = quickstart.policy.active?.version
  t.not(second, first, 'a new version is active')
  t.equal((await fetch(`${quickstart.url}/api/orders`, { headers: { 'x-api-key': DEMO_API_KEYS.bob } })).status, 200, 'bob, an admin, still lists')

  // Lower the limit of alice and bob.
  await writeFile(policyFile, original.replace('{ name: user, limit: 60, window: 1m }', '{ name: user, limit: 3, window: 1m }'))
  await until(() => quickstart.policy.active?.version !== second)
  const statuses = []
  for (let i = 0; i < 4; i++) statuses.push(await list())
  t.ok(statuses.includes(429), `the lower limit holds: ${statuses.join(', ')}`)
  const third = quickstart.policy.active?.version

  // A broken edit: refused, and the last good version keeps serving.
  await writeFile(policyFile, original.replace('{ name: user, limit: 60, window: 1m }', '{ name: user, limit: 0, window: 1m }'))
  await new Promise((resolve) => setTimeout(resolve, 400))
  t.equal(quickstart.policy.active?.version, third, 'the refused edit changed nothing')
  // Closed, so that the audit log holds every record written.
  await quickstart.close()
  const text = await readFile(quickstart.auditFile, 'utf8')
  const refusal = text.trimEnd().split('\n').map((line) => JSON.parse(line)).find((record) => record.event.action === 'policy-reject')
  t.match(refusal?.event.reason, /^schema: must be >= 1/, 'the refusal is in the audit log with its reason')
})

test('the audit signing key is made once and kept across starts', async (t) => {
  const dir = t.testdir()
  const first = await auditKeys(dir)
  const key = await readFile(first.signingKey, 'utf8')
  const second = await auditKeys(dir)
  t.same(second, first)
  t.equal(await readFile(second.signingKey, 'utf8'), key, 'the same key, not a new one')
})
