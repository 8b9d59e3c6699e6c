import { test } from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { loadDevIdentity, signDevToken } from '@portcullis/authn'
import { listeningUrl } from '../../../test/helpers/child.js'
import { optionsFromEnv, run, startExistingApp } from '../src/main.js'
import { WAREHOUSE_API_KEY } from '../src/security.js'

interface Answer { status: number, headers: Headers, body: any }

// One request over a real socket, its JSON body read (or null).
async function call (url: string, method: string, headers: Record<string, string> = {}, body?: unknown): Promise<Answer> {
  const response = await fetch(url, {
    method,
    headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) })
  })
  const text = await response.text()
  return { status: response.status, headers: response.headers, body: text === '' ? null : JSON.parse(text) }
}

async function records (file: string): Promise<any[]> {
  return (await readFile(file, 'utf8')).trimEnd().split('\n').map((line) => JSON.parse(line))
}

test('who gets through: 401 without or with a bad credential, 403 without the scope or role, 400 for a bad body, 200 otherwise; each request recorded', async (t) => {
  const dir = t.testdir()
  const service = await startExistingApp({ port: 0, identityFile: join(dir, 'dev-identity.json') })
  t.teardown(service.close)
  const identity = await loadDevIdentity(service.identityFile)
  const alice = { authorization: `Bearer ${signDevToken(identity, 'alice')}` }
  const bob = { authorization: `Bearer ${signDevToken(identity, 'bob')}` }
  const warehouse = { 'x-api-key': WAREHOUSE_API_KEY }
  const { url } = service

  t.same((await call(`${url}/healthz`, 'GET')).body, { status: 'ok' }, 'health checks need no credentials')
  const anonymous = await call(`${url}/orders`, 'GET')
  t.equal(anonymous.status, 401)
  t.equal(anonymous.headers.get('content-type'), 'application/problem+json; charset=utf-8')
  t.equal(anonymous.body.code, 'PORTCULLIS_AUTHN_MISSING_CREDENTIALS')
  t.equal(anonymous.headers.get('x-content-type-options'), 'nosniff', 'security headers, on refusals too')
  const scanner = await call(`${url}/orders`, 'GET', { ...alice, 'user-agent': 'sqlmap/1.8' })
  t.same([scanner.status, scanner.body.code], [403, 'PORTCULLIS_GATEWAY_USER_AGENT_DENIED'], 'an attack tool, whatever its credentials')
  t.match(anonymous.headers.get('www-authenticate'), /Bearer realm="orders"/)
  const forged = await call(`${url}/orders`, 'GET', { authorization: `${alice.authorization.slice(0, -4)}AAAA` })
  t.same([forged.status, forged.body.code], [401, 'PORTCULLIS_AUTHN_INVALID_TOKEN'], 'a changed signature')
  t.equal((await call(`${url}/orders`, 'GET', { 'x-api-key': 'demo-warehouse-key-00000000000009' })).status, 401, 'an unknown API key')

  const list = await call(`${url}/orders`, 'GET', alice)
  t.equal(list.status, 200)
  t.same(list.body.orders.map((o: { item: string }) => o.item), ['lamp', 'chair'], "the service's own handler answers")
  t.equal((await call(`${url}/orders/2`, 'GET', warehouse)).status, 200, 'the warehouse reads orders')
  const warehouseWrite = await call(`${url}/orders`, 'POST', warehouse, { item: 'desk', qty: 1 })
  t.same([warehouseWrite.status, warehouseWrite.body.code], [403, 'PORTCULLIS_AUTHZ_INSUFFICIENT_SCOPE'], 'and changes none')

  const zero = await call(`${url}/orders`, 'POST', alice, { item: 'desk', qty: 0 })
  t.same([zero.status, zero.body.code], [400, 'PORTCULLIS_SCHEMA_INVALID'])
  t.same(zero.body.errors.map((e: { pointer: string, rule: string }) => [e.pointer, e.rule]), [['/qty', 'minimum']])
  const status = await call(`${url}/orders`, 'POST', alice, { item: 'desk', qty: 1, status: 'shipped' })
  t.same([status.status, status.body.errors.map((e: { pointer: string }) => e.pointer)], [400, ['/status']], 'a field the schema does not declare (mass assignment)')
  t.equal((await call(`${url}/orders`, 'POST', alice, { item: 'desk', qty: '2' })).status, 400, 'never coerced: "2" is not an integer')
  const created = await call(`${url}/orders`, 'POST', alice, { item: 'desk', qty: 2 })
  t.same([created.status, created.body], [201, { id: '3', item: 'desk', qty: 2, status: 'open' }])

  const aliceDelete = await call(`${url}/orders/1`, 'DELETE', alice)
  t.same([aliceDelete.status, aliceDelete.body.code], [403, 'PORTCULLIS_AUTHZ_FORBIDDEN'], 'only admins delete')
  t.equal((await call(`${url}/orders/1`, 'GET', alice)).status, 200, 'so the handler never ran: order 1 is still there')
  t.equal((await call(`${url}/orders/1`, 'DELETE', bob)).status, 204, 'bob is an admin')
  t.equal((await call(`${url}/orders/1`, 'DELETE', bob)).status, 404, 'once')
  t.same(await call(`${url}/orders/1`, 'GET', alice).then((a) => [a.status, a.body]), [404, { message: 'no such order' }], "the service's own 404 passes through")
  t.equal((await call(`${url}/nope`, 'GET')).body.code, 'PORTCULLIS_CORE_NOT_FOUND')

  await service.close()
  const text = await readFile(service.auditFile, 'utf8')
  for (const secret of [WAREHOUSE_API_KEY, alice.authorization.slice(7), bob.authorization.slice(7), 'Bearer']) t.notOk(text.includes(secret), 'no key, token or Authorization value in the audit log')
  const requests = (await records(service.auditFile)).filter((r) => r.event.action === 'http-request')
  t.same(requests.map((r) => [r.http.request.method, r.url.path, r.http.response.status_code, r.user?.id ?? null, r.event.reason]), [
    ['GET', '/orders', 401, null, 'PORTCULLIS_AUTHN_MISSING_CREDENTIALS'],
    ['GET', '/orders', 403, null, 'PORTCULLIS_GATEWAY_USER_AGENT_DENIED'],
    ['GET', '/orders', 401, null, 'PORTCULLIS_AUTHN_INVALID_TOKEN'],
    ['GET', '/orders', 401, null, 'PORTCULLIS_AUTHN_INVALID_CREDENTIALS'],
    ['GET', '/orders', 200, 'alice', 'PORTCULLIS_AUTHZ_OK'],
    ['GET', '/orders/2', 200, 'warehouse', 'PORTCULLIS_AUTHZ_OK'],
    ['POST', '/orders', 403, 'warehouse', 'PORTCULLIS_AUTHZ_INSUFFICIENT_SCOPE'],
    ['POST', '/orders', 400, 'alice', 'PORTCULLIS_SCHEMA_INVALID'],
    ['POST', '/orders', 400, 'alice', 'PORTCULLIS_SCHEMA_INVALID'],
    ['POST', '/orders', 400, 'alice', 'PORTCULLIS_SCHEMA_INVALID'],
    ['POST', '/orders', 201, 'alice', 'PORTCULLIS_SCHEMA_OK'],
    ['DELETE', '/orders/1', 403, 'alice', 'PORTCULLIS_AUTHZ_FORBIDDEN'],
    ['GET', '/orders/1', 200, 'alice', 'PORTCULLIS_AUTHZ_OK'],
    ['DELETE', '/orders/1', 204, 'bob', 'PORTCULLIS_AUTHZ_OK'],
    ['DELETE', '/orders/1', 404, 'bob', 'PORTCULLIS_AUTHZ_OK'],
    ['GET', '/orders/1', 404, 'alice', 'PORTCULLIS_AUTHZ_OK'],
    ['GET', '/nope', 404, null, 'PORTCULLIS_RATE_LIMIT_OK']
  ], 'one record per request, health checks aside, with who and the deciding reason')
  t.match(requests[4], { portcullis: { principal: { method: 'jwt', type: 'user' }, route: '/orders' }, user: { roles: ['user'] } })
  t.match(requests[5], { portcullis: { principal: { method: 'api-key', credential_id: 'warehouse-1', type: 'service' } } })
})

test("the limit per principal: alice's 4th request of the minute is 429, the others keep their own budget", async (t) => {
  const dir = t.testdir()
  const service = await startExistingApp({ port: 0, identityFile: join(dir, 'dev-identity.json'), limitPerMinute: 3 })
  t.teardown(service.close)
  const identity = await loadDevIdentity(service.identityFile)
  const alice = { authorization: `Bearer ${signDevToken(identity, 'alice')}` }
  const statuses: number[] = []
  for (let i = 0; i < 3; i++) statuses.push((await call(`${service.url}/orders`, 'GET', alice)).status)
  t.same(statuses, [200, 200, 200])
  const refused = await call(`${service.url}/orders`, 'GET', alice)
  t.same([refused.status, refused.body.code], [429, 'PORTCULLIS_RATE_LIMIT_EXCEEDED'])
  t.ok(Number(refused.headers.get('retry-after')) >= 1, 'with Retry-After')
  t.equal(refused.headers.get('ratelimit-policy'), '"principal";q=3;w=60')
  t.equal((await call(`${service.url}/orders`, 'GET', { 'x-api-key': WAREHOUSE_API_KEY })).status, 200, 'the warehouse has its own 3')
  t.equal((await call(`${service.url}/orders`, 'GET', { authorization: `Bearer ${signDevToken(identity, 'alice')}` })).status, 429, 'a new token is still alice')
  t.equal((await call(`${service.url}/healthz`, 'GET')).status, 200, 'health checks are never limited')
  await service.close()
  const limited = (await records(service.auditFile)).filter((r) => r.http?.response.status_code === 429)
  t.equal(limited.length, 2)
  t.match(limited[0], { user: { id: 'alice' }, portcullis: { decision: { plugin: '@portcullis/rate-limit', reason: 'PORTCULLIS_RATE_LIMIT_EXCEEDED' } } })
})

test('a port already in use fails the start', async (t) => {
  const blocker = createServer().listen(0, '127.0.0.1')
  await once(blocker, 'listening')
  t.teardown(() => blocker.close())
  const { port } = blocker.address() as { port: number }
  await t.rejects(startExistingApp({ port, identityFile: join(t.testdir(), 'dev-identity.json') }), { code: 'EADDRINUSE' })
})

const main = fileURLToPath(new URL('../src/main.ts', import.meta.url))

test('run as a program: the curl commands, audit records on stdout and in the file, a clean stop on SIGTERM', async (t) => {
  const dir = t.testdir()
  const env = { ...process.env, HOST: '127.0.0.1', PORT: '0', RATE_LIMIT: '2', IDENTITY_FILE: join(dir, 'id.json'), AUDIT_FILE: join(dir, 'logs', 'audit.log') }
  const child = spawn(process.execPath, [...process.execArgv, main], { env, stdio: ['ignore', 'pipe', 'ignore'], detached: true })
  t.teardown(() => { try { process.kill(-(child.pid as number), 'SIGKILL') } catch {} })
  const { url, output } = await listeningUrl(child)
  t.match(output, `curl -i ${url}/orders -H 'x-api-key: ${WAREHOUSE_API_KEY}'`)
  t.match(output, `pnpm -s portcullis token alice --identity ${join(dir, 'id.json')}`)
  t.match(output, `audit log: ${join(dir, 'logs', 'audit.log')} (and stdout)`)
  const warehouse = { 'x-api-key': WAREHOUSE_API_KEY }
  t.same(await Promise.all([1, 2, 3].map(async () => (await call(`${url}/orders`, 'GET', warehouse)).status)).then((s) => s.sort()), [200, 200, 429], 'RATE_LIMIT=2')
  let stdout = output
  child.stdout.on('data', (chunk: string) => { stdout += chunk })
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  t.equal((await exited)[0], 0)
  const audit = stdout.split('\n').filter((line) => line.includes('"http-request"')).map((line) => JSON.parse(line))
  t.same(audit.map((r) => r.http.response.status_code).sort(), [200, 200, 429], 'the audit records, on stdout')
  t.equal((await records(join(dir, 'logs', 'audit.log'))).length, 3, 'and in the file')
})

test('run as a program: a bad setting or a start that fails is one line on stderr and exit code 1', async (t) => {
  const host = { stdout: { write: () => true }, stderr: { write: (text: string) => { stderr += text } }, exitCode: undefined as number | string | undefined, on: () => {}, exit: () => {} }
  let stderr = ''
  await run({ PORT: 'http' }, host)
  t.equal(host.exitCode, 1)
  t.equal(stderr, 'existing-app: PORT must be an integer from 0 to 65535 (got "http")\n')
})

test('HOST, PORT, RATE_LIMIT, AUDIT_FILE and IDENTITY_FILE come from the environment', async (t) => {
  t.same(optionsFromEnv({}), { host: '127.0.0.1', port: 3100 })
  t.same(optionsFromEnv({ HOST: '::1', PORT: '8080', RATE_LIMIT: '30', AUDIT_FILE: '/var/log/orders-audit.log', IDENTITY_FILE: '/etc/orders/id.json' }), { host: '::1', port: 8080, limitPerMinute: 30, auditFile: '/var/log/orders-audit.log', identityFile: '/etc/orders/id.json' })
  t.same(optionsFromEnv({ AUDIT_FILE: '', IDENTITY_FILE: '' }), { host: '127.0.0.1', port: 3100 })
  t.throws(() => optionsFromEnv({ PORT: '70000' }), /PORT must be an integer/)
  t.throws(() => optionsFromEnv({ RATE_LIMIT: '0' }), /RATE_LIMIT must be a whole number/)
})
