import { test } from 'tap'
import { once } from 'node:events'
import { readFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { join } from 'node:path'
import { loadDevIdentity, signDevToken } from '@portcullis/authn'
import { ACME_API_KEY, acmeKeyRecord } from '../src/identities.js'
import { call, policyCopy, type Answer } from './helpers.js'
import { DEFAULT_POLICY_FILE, optionsFromEnv, run, startStandalone } from '../src/main.js'

const free = { port: 0, ordersPort: 0, catalogPort: 0 }
const acme = { 'x-api-key': ACME_API_KEY }

test('every section of the policy, through the proxy, and one audit record per request', async (t) => {
  const dir = t.testdir()
  const example = await startStandalone({ ...free, policyFile: await policyCopy(dir), identityFile: join(dir, 'dev-identity.json') })
  t.teardown(example.close)
  const identity = await loadDevIdentity(example.identityFile)
  const alice = { authorization: `Bearer ${signDevToken(identity, 'alice')}` }
  const bob = { authorization: `Bearer ${signDevToken(identity, 'bob')}` }
  const { url } = example

  // core: request ids, problem+json for what matches nothing.
  const health = await call(`${url}/healthz`)
  t.equal(health.status, 200)
  t.match(health.headers.get('x-request-id'), /^[0-9a-f-]{36}$/)
  const unknown = await call(`${url}/nope`)
  t.same([unknown.status, unknown.headers.get('content-type'), unknown.body.code], [404, 'application/problem+json; charset=utf-8', 'PORTCULLIS_CORE_NOT_FOUND'])

  // A public upstream: no credentials.
  const items = await call(`${url}/catalog/items`)
  t.same([items.status, items.body.items.length], [200, 2], 'the catalog, proxied with /catalog removed')
  t.equal((await call(`${url}/catalog/items/desk`)).status, 404, "the catalog's own 404 passes through")
  t.equal(items.headers.get('x-content-type-options'), 'nosniff', 'helmet: security headers')
  t.same([items.headers.get('deprecation'), items.headers.get('sunset'), items.headers.get('link')], ['@1780272000', 'Wed, 30 Jun 2027 00:00:00 GMT', '<https://shop.example.com/docs/catalog-v2>; rel="deprecation"'], 'the catalog v1 is retiring')
  const specials = await call(`${url}/catalog/specials`)
  t.same([specials.status, specials.body.code], [410, 'PORTCULLIS_GATEWAY_SUNSET'], 'and its specials feed is gone')
  const scanner = await call(`${url}/catalog/items`, { headers: { 'user-agent': 'Mozilla/5.0 (compatible; Nuclei - Open-source project)' } })
  t.same([scanner.status, scanner.body.code], [403, 'PORTCULLIS_GATEWAY_USER_AGENT_DENIED'], 'userAgents: an attack tool')
  const preflight = await call(`${url}/api/orders`, { method: 'OPTIONS', headers: { origin: 'https://shop.example.com', 'access-control-request-method': 'POST' } })
  t.same([preflight.status, preflight.headers.get('access-control-allow-origin')], [204, 'https://shop.example.com'], 'cors: a preflight, without credentials')

  // ipRules: the address the trusted load balancer (loopback) forwards.
  const denied = await call(`${url}/catalog/items`, { headers: { 'x-forwarded-for': '203.0.113.9' } })
  t.same([denied.status, denied.body.code], [403, 'PORTCULLIS_AUTHZ_IP_DENIED'])
  t.equal((await call(`${url}/catalog/items`, { headers: { 'x-forwarded-for': '198.51.100.20' } })).status, 200, 'another address')

  // authn
  const anonymous = await call(`${url}/api/orders`)
  t.same([anonymous.status, anonymous.body.code], [401, 'PORTCULLIS_AUTHN_MISSING_CREDENTIALS'])
  t.equal(anonymous.headers.get('www-authenticate'), 'ApiKey realm="shop", header="x-api-key", Bearer realm="shop"')
  t.equal((await call(`${url}/api/orders`, { headers: { 'x-api-key': 'demo-acme-key-000000000000000009' } })).status, 401, 'an unknown key')
  t.equal((await call(`${url}/api/orders`, { headers: { authorization: `${alice.authorization.slice(0, -4)}AAAA` } })).status, 401, 'a changed signature')

  // authz
  const list = await call(`${url}/api/orders`, { headers: alice })
  t.same([list.status, list.body.orders.length], [200, 2], 'alice reads orders')
  t.equal((await call(`${url}/api/orders`, { headers: acme })).status, 200, 'so does the partner')
  t.same((await call(`${url}/api/orders/2`, { headers: alice })).body, { id: '2', item: 'chair', qty: 4, contact: 'b***@example.com' }, 'masking: personal data on the way out')
  const partnerRead = await call(`${url}/api/orders/1`, { headers: acme })
  t.same([partnerRead.status, partnerRead.body.code], [403, 'PORTCULLIS_AUTHZ_INSUFFICIENT_SCOPE'], 'but only the list')
  t.equal((await call(`${url}/api/orders`, { method: 'POST', headers: acme, json: { item: 'desk', qty: 1 } })).status, 403, 'and writes nothing')
  const aliceDelete = await call(`${url}/api/orders/1`, { method: 'DELETE', headers: alice })
  t.same([aliceDelete.status, aliceDelete.body.code], [403, 'PORTCULLIS_AUTHZ_FORBIDDEN'], 'only admins delete')
  t.equal((await call(`${url}/api/orders/1`, { method: 'DELETE', headers: bob })).status, 204, 'bob is one')
  t.equal((await call(`${url}/api/orders/1`, { method: 'DELETE', headers: bob })).status, 404, 'once')
  t.equal((await call(`${url}/api/orders/1`, { headers: alice })).status, 404, "the orders service's own 404")

  // The contract (schema-validate), after authorization.
  const zero = await call(`${url}/api/orders`, { method: 'POST', headers: alice, json: { item: 'desk', qty: 0 } })
  t.same([zero.status, zero.body.code, zero.body.errors.map((e: { pointer: string }) => e.pointer)], [400, 'PORTCULLIS_SCHEMA_INVALID', ['/qty']])
  t.same((await call(`${url}/api/orders`, { method: 'POST', headers: alice, json: { item: 'desk', qty: 1, id: '99' } })).body.errors.map((e: { pointer: string }) => e.pointer), ['/id'], 'no field the contract does not declare')
  t.equal((await call(`${url}/api/orders`, { method: 'POST', headers: { ...alice, 'content-type': 'text/plain' }, body: 'desk' })).status, 415)
  t.equal((await call(`${url}/api/orders`, { method: 'POST', headers: alice, json: { item: 'desk', qty: 1, note: 'x'.repeat(2000) } })).status, 413)
  t.equal((await call(`${url}/api/orders/abc`, { headers: alice })).status, 400, 'ids are digits')
  const created = await call(`${url}/api/orders`, { method: 'POST', headers: alice, json: { item: 'desk', qty: 2 } })
  t.same([created.status, created.body], [201, { id: '3', item: 'desk', qty: 2 }])

  // rateLimit: acme is on the free plan, 10 a minute (2 used above).
  const statuses: number[] = []
  for (let i = 0; i < 9; i++) statuses.push((await call(`${url}/api/orders`, { headers: acme })).status)
  t.same(statuses, [200, 200, 200, 200, 200, 200, 200, 429, 429], "acme's 11th request of the minute (refusals count too)")
  const limited = await call(`${url}/api/orders`, { headers: acme })
  t.same([limited.status, limited.body.code], [429, 'PORTCULLIS_RATE_LIMIT_EXCEEDED'])
  t.match(limited.headers.get('ratelimit-policy'), /"free";q=10;w=60/)
  t.equal((await call(`${url}/api/orders`, { headers: alice })).status, 200, 'alice has her own 60')

  await example.close()
  const records = (await readFile(example.auditFile, 'utf8')).trimEnd().split('\n').map((line) => JSON.parse(line))
  t.match(records[0], { event: { action: 'policy-activate' }, portcullis: { policy: { version: example.policy.history().at(-1)?.version, source: 'file' } } })
  const requests = records.filter((r) => r.event.action === 'http-request')
  t.equal(requests.length, 37, 'one record per request, health checks aside')
  t.match(requests.find((r) => r.http.response.status_code === 403 && r.client.ip === '203.0.113.9'), { source: { ip: '127.0.0.1' }, portcullis: { decision: { plugin: '@portcullis/authz', reason: 'PORTCULLIS_AUTHZ_IP_DENIED' } } }, 'the client is the forwarded address, the peer the load balancer')
  t.match(requests.find((r) => r.http.request.method === 'DELETE' && r.http.response.status_code === 204), { user: { id: 'bob' }, portcullis: { principal: { method: 'jwt' }, route: '/api/orders/:id', upstream: { status_code: 204 } } })
  t.match(requests.find((r) => r.http.response.status_code === 429), { user: { id: 'acme' }, portcullis: { principal: { credential_id: 'acme-1' }, decision: { plugin: '@portcullis/rate-limit' } } })
  t.notOk(JSON.stringify(records).includes(ACME_API_KEY), 'no API key in the log')
})

test("ipRateLimit: an address's 101st request of the minute is 429, before credentials are looked at", async (t) => {
  const dir = t.testdir()
  const example = await startStandalone({ ...free, policyFile: await policyCopy(dir), identityFile: join(dir, 'dev-identity.json') })
  t.teardown(example.close)
  const client = { 'x-forwarded-for': '198.51.100.7' }
  const started = Date.now()
  let sent = 0
  let over: Answer | undefined
  while (sent < 200 && over === undefined) {
    const answer = await call(`${example.url}/api/orders`, { headers: client })
    sent++
    if (answer.status === 429) over = answer
    else if (answer.status !== 401) t.fail(`request ${sent} answered ${answer.status}`)
  }
  // The budget refills at 100 a minute from the first request on.
  const refilled = Math.ceil((Date.now() - started) / 600)
  t.ok(over !== undefined && sent >= 101 && sent <= 101 + refilled, `refused at request ${sent} (100, plus ${refilled} refilled)`)
  t.equal(over?.body.code, 'PORTCULLIS_RATE_LIMIT_EXCEEDED')
  t.equal(over?.headers.get('ratelimit-policy'), '"ip";q=100;w=60', 'by the address, before authentication')
  t.equal((await call(`${example.url}/catalog/items`, { headers: { 'x-forwarded-for': '198.51.100.8' } })).status, 200, 'another address is not held back')
})

test('a port in use fails the start, and nothing is left running', async (t) => {
  const blocker: Server = createServer().listen(0, '127.0.0.1')
  await once(blocker, 'listening')
  t.teardown(() => blocker.close())
  const { port } = blocker.address() as { port: number }
  const dir = t.testdir()
  const options = { policyFile: await policyCopy(dir), identityFile: join(dir, 'dev-identity.json') }
  await t.rejects(startStandalone({ ...free, ...options, port }), { code: 'EADDRINUSE' }, 'the gateway\'s')
  await t.rejects(startStandalone({ ...free, ...options, catalogPort: port }), { code: 'EADDRINUSE' }, 'a service\'s')
})

test('run as a program: a bad setting is one line on stderr and exit code 1', async (t) => {
  let stderr = ''
  const host = { stdout: { write: () => true }, stderr: { write: (text: string) => { stderr += text } }, exitCode: undefined as number | string | undefined, on: () => {}, exit: () => {} }
  await run({ CATALOG_PORT: 'catalog' }, host)
  t.equal(host.exitCode, 1)
  t.equal(stderr, 'standalone: CATALOG_PORT must be an integer from 0 to 65535 (got "catalog")\n')
})

test('the environment: ports, the policy and the identity file', async (t) => {
  t.same(optionsFromEnv({}), { host: '127.0.0.1', port: 8080, ordersPort: 4001, catalogPort: 4002 })
  t.same(optionsFromEnv({ HOST: '0.0.0.0', PORT: '9000', ORDERS_PORT: '9001', CATALOG_PORT: '9002', POLICY_FILE: '/etc/gw/policy.yaml', IDENTITY_FILE: '/etc/gw/id.json' }), { host: '0.0.0.0', port: 9000, ordersPort: 9001, catalogPort: 9002, policyFile: '/etc/gw/policy.yaml', identityFile: '/etc/gw/id.json' })
  t.same(optionsFromEnv({ POLICY_FILE: '', IDENTITY_FILE: '' }), { host: '127.0.0.1', port: 8080, ordersPort: 4001, catalogPort: 4002 })
  t.throws(() => optionsFromEnv({ PORT: '70000' }), /PORT must be an integer/)
})

test('policy.yaml holds the hash of the partner key the README hands out', async (t) => {
  const text = await readFile(DEFAULT_POLICY_FILE, 'utf8')
  const record = acmeKeyRecord()
  t.match(text, `- id: ${record.id}\n          hash: ${record.hash}\n          owner: { id: acme, type: service, roles: [partner], plan: free }`)
})
