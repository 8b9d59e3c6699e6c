import { test } from 'tap'
import { spawn } from 'node:child_process'
import { listeningUrl } from '../../../test/helpers/child.js'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadDevIdentity, signDevToken } from '@portcullis/authn'
import { DEMO_API_KEYS } from '../src/identities.js'
import { optionsFromEnv, startQuickstart } from '../src/main.js'

const identityFile = join(await mkdtemp(join(tmpdir(), 'quickstart-')), 'dev-identity.json')
const alice = { 'x-api-key': DEMO_API_KEYS.alice }

test('the quickstart gateway serves health, proxies the orders API and answers problems', async (t) => {
  const quickstart = await startQuickstart({ port: 0, identityFile })
  t.teardown(quickstart.close)
  const health = await fetch(`${quickstart.url}/healthz`)
  t.equal(health.status, 200)
  const list = await fetch(`${quickstart.url}/api/orders`, { headers: alice })
  t.equal(list.status, 200)
  t.match(await list.json(), { orders: [{ id: '1', item: 'lamp' }, { id: '2', item: 'chair' }] })
  const created = await fetch(`${quickstart.url}/api/orders`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...alice }, body: JSON.stringify({ item: 'desk', quantity: 2 })
  })
  t.equal(created.status, 201)
  const { id } = await created.json() as { id: string }
  t.match(await (await fetch(`${quickstart.url}/api/orders/${id}`, { headers: alice })).json(), { id, item: 'desk', quantity: 2 })
  t.equal((await fetch(`${quickstart.url}/api/orders/999`, { headers: alice })).status, 403, 'a missing order looks like another\'s')
  const unknown = await fetch(`${quickstart.url}/nope`)
  t.equal(unknown.status, 404)
  t.equal(unknown.headers.get('content-type'), 'application/problem+json; charset=utf-8')
  t.equal((await unknown.json() as { code: string }).code, 'PORTCULLIS_CORE_NOT_FOUND')
})

test('the orders API needs alice\'s or bob\'s key or token', async (t) => {
  const quickstart = await startQuickstart({ port: 0, identityFile })
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
  const quickstart = await startQuickstart({ port: 0, identityFile })
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
  const stolen = await call('POST', '/api/orders', alice, { item: 'desk', quantity: 1, owner: 'bob' })
  t.equal(stolen.status, 403, 'nobody sets the owner of an order')
  t.same(stolen.body?.errors?.map((e) => e.pointer), ['/owner'])
  t.equal((await call('PATCH', '/api/orders/2', bob)).body?.code, 'PORTCULLIS_AUTHZ_NO_RULE', 'a route the gateway does not know is denied')
  t.equal((await call('GET', '/api/orders/2/..%2F1', alice)).status, 403, 'no encoded way around the owner check')
})

test('a port already in use fails the start and leaves nothing running', async (t) => {
  const blocker = createServer()
  blocker.listen(0, '127.0.0.1')
  await once(blocker, 'listening')
  t.teardown(() => blocker.close())
  const { port } = blocker.address() as { port: number }
  await t.rejects(startQuickstart({ port, identityFile }), { code: 'EADDRINUSE' })
})

const main = fileURLToPath(new URL('../src/main.ts', import.meta.url))

test('run as a program: HOST and PORT, a greeting with curl commands, clean stop on SIGTERM', async (t) => {
  const child = spawn(process.execPath, [...process.execArgv, main], { env: { ...process.env, HOST: '127.0.0.1', PORT: '0' }, stdio: ['ignore', 'pipe', 'ignore'] })
  const { url, output } = await listeningUrl(child)
  t.match(output, `curl -i ${url}/healthz`)
  t.equal((await fetch(`${url}/api/orders/1`, { headers: alice })).status, 200)
  child.kill('SIGTERM')
  t.equal((await once(child, 'exit'))[0], 0)
})

test('HOST and PORT default to 127.0.0.1:3000', async (t) => {
  t.same(optionsFromEnv({}), { host: '127.0.0.1', port: 3000 })
  t.same(optionsFromEnv({ HOST: '::1', PORT: '8080' }), { host: '::1', port: 8080 })
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
