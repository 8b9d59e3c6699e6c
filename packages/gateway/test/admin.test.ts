import { test, type Test } from 'tap'
import Fastify from 'fastify'
import { execFileSync } from 'node:child_process'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { Writable } from 'node:stream'
import { request as httpsRequest } from 'node:https'
import { join } from 'node:path'
import { createApiKey } from '@portcullis/authn'
import { startPolicyGateway, type PolicyGateway, type PolicyGatewayOptions } from '../src/index.js'

const TOKEN = 'admin-token-0123456789abcdef0123456789'
const alice = createApiKey({ id: 'alice-key', owner: { id: 'alice', type: 'user', roles: ['user'] } })

async function upstream (t: Test): Promise<string> {
  const app = Fastify()
  app.all('/*', async () => ({ ok: true }))
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  return url
}

function policyFor (url: string, role: string): string {
  return JSON.stringify({
    version: 1,
    authn: { methods: { keys: { type: 'api-key', keys: [alice.record] } } },
    authz: { roles: { user: {}, admin: {} } },
    upstreams: [{ prefix: '/api', url, routes: [{ method: 'GET', path: '/things', authz: { anyRole: [role] } }] }]
  })
}

async function start (t: Test, text: string, admin: PolicyGatewayOptions['admin'], options: Partial<PolicyGatewayOptions> = {}): Promise<PolicyGateway & { url: string, admin: string }> {
  const file = join(await mkdtemp(join(tmpdir(), 'portcullis-admin-')), 'policy.json')
  await writeFile(file, text)
  const gateway = await startPolicyGateway({ file, host: '127.0.0.1', port: 0, watch: false, ...(admin === undefined ? {} : { admin }), ...options })
  t.teardown(gateway.close)
  const url = await gateway.listen()
  return { ...gateway, url, admin: gateway.adminUrl() as string }
}

test('the admin API: read, stage, activate in each mode, promote and roll back, all authenticated', async (t) => {
  const target = await upstream(t)
  const gateway = await start(t, policyFor(target, 'user'), { port: 0, token: TOKEN })
  t.not(new URL(gateway.admin).port, new URL(gateway.url).port, 'a listener of its own')
  const call = async (method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<{ status: number, json: any, text: string, headers: Headers }> => {
    const response = await fetch(`${gateway.admin}${path}`, { method, headers: { authorization: `Bearer ${TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers }, ...(body === undefined ? {} : { body }) })
    const text = await response.text()
    return { status: response.status, json: text.startsWith('{') ? JSON.parse(text) : null, text, headers: response.headers }
  }
  const things = async (): Promise<number> => (await fetch(`${gateway.url}/api/things`, { headers: { 'x-api-key': alice.key } })).status

  // Authentication: no token, a wrong one, one of another length: all 401, nothing leaks.
  for (const authorization of [undefined, `Bearer ${TOKEN.slice(0, -1)}x`, 'Bearer short', `Basic ${TOKEN}`]) {
    const response = await fetch(`${gateway.admin}/policy`, { headers: authorization === undefined ? {} : { authorization } })
    t.equal(response.status, 401)
    t.equal(response.headers.get('www-authenticate'), 'Bearer realm="portcullis-admin"')
    t.equal((await response.json() as { code: string }).code, 'PORTCULLIS_GATEWAY_ADMIN_UNAUTHORIZED')
  }
  t.equal((await fetch(`${gateway.url}/policy`)).status, 404, 'the gateway\'s own listener has no admin API')

  const v1 = gateway.policy.active?.version
  t.match((await call('GET', '/policy')).json, { version: v1, source: 'file', candidate: null, staged: null })
  t.equal((await call('POST', '/policy/rollback')).status, 409, 'nothing to roll back to yet')
  t.equal((await call('POST', '/policy/activate')).status, 409, 'nothing staged')
  t.equal((await call('GET', '/policy/diff')).status, 400, 'nothing to compare with')
  t.equal((await call('PUT', '/policy/candidate')).status, 400, 'no document')
  t.equal((await call('POST', '/policy/rollback', '')).status, 409, 'an empty JSON body is no body')
  const secretMissing = await call('PUT', '/policy/candidate', policyFor(target, 'user').replace(`"url":"${target}"`, '"url":"env:NO_SUCH_ORDERS_URL"'))
  t.match(secretMissing.json, { status: 422, errors: [{ pointer: '/upstreams/0/url', rule: 'secrets', message: /NO_SUCH_ORDERS_URL is not set/ }] })
  t.equal((await call('GET', `/policy/versions/${String(v1)}`)).text, policyFor(target, 'user'), 'the document as written')
  t.equal((await call('GET', '/policy/versions/0000000000000000')).status, 404)

  // A refused candidate: 422 with every problem and where it is.
  const refused = await call('PUT', '/policy/candidate', '{"version": 1, "upstreams": [{"prefix": "/api"}]}', { 'content-type': 'application/yaml' })
  t.equal(refused.status, 422)
  t.equal(refused.headers.get('content-type'), 'application/problem+json; charset=utf-8')
  t.match(refused.json, { code: 'PORTCULLIS_POLICY_REJECTED', errors: [{ in: 'body', pointer: '/upstreams/0', rule: 'required', message: /^line 1, column \d+: "url" is required/ }] })
  t.equal((await call('POST', '/policy/activate', '{}')).status, 409, 'nothing staged yet')

  // Stage, read the diff, activate as a shadow.
  const staged = await call('PUT', '/policy/candidate', policyFor(target, 'admin'), { 'content-type': 'application/yaml' })
  t.equal(staged.status, 201)
  t.match(staged.json.diff, /~ upstreams\[\/api\]\.routes\[GET \/things\]\.authz\.anyRole: \["user"\] → \["admin"\]/)
  const v2 = staged.json.version as string
  t.match((await call('GET', '/policy')).json, { staged: { version: v2 } })
  t.equal((await call('GET', '/policy/diff')).json.text, staged.json.diff, 'the staged candidate against the active version')
  t.equal((await call('GET', `/policy/versions/${v2}`)).text, policyFor(target, 'admin'))
  t.equal((await call('POST', '/policy/activate', '{"mode":"sideways"}')).status, 400)
  t.equal((await call('POST', '/policy/activate', '{"mode":"shadow","share":0.5}')).status, 400)
  t.same((await call('POST', '/policy/activate', '{"mode":"shadow"}')).json, { version: v2, mode: 'shadow', active: v1 })
  t.equal(await things(), 200, 'the active version still decides')
  t.match((await call('GET', '/policy')).json, { version: v1, candidate: { version: v2, mode: 'shadow', share: null } })
  let trial = (await call('GET', '/policy/trial')).json
  for (let i = 0; i < 100 && trial.shadow.evaluated < 1; i++) trial = (await call('GET', '/policy/trial')).json
  t.match(trial, { mode: 'shadow', version: v2, shadow: { evaluated: 1, wouldDeny: 1 } })
  t.equal((await call('GET', '/policy/diff')).json.to, v2, 'the diff goes to the candidate')

  // Promote, then roll back to the exact previous version; the audit names the caller.
  t.same((await call('POST', '/policy/promote')).json, { version: v2, mode: 'enforce', active: v2 })
  t.equal(await things(), 403)
  t.equal((await call('POST', '/policy/promote')).status, 409, 'nothing left to promote')
  t.same((await call('GET', '/policy/history')).json.versions.map((entry: { version: string }) => entry.version), [v2, v1])
  t.same((await call('POST', '/policy/rollback', '{}')).json, { version: v1, mode: 'enforce', active: v1 })
  t.equal(await things(), 200)
  t.equal((await call('POST', '/policy/rollback', '{"version":"ffffffffffffffff"}')).status, 404)
  t.equal((await call('POST', '/policy/rollback', '{"version":7}')).status, 400)
  t.same((await call('POST', '/policy/activate', JSON.stringify({ version: v2 }))).json, { version: v2, mode: 'enforce', active: v2 }, 'a kept version, by id')

  // A canary (staged with a signature header, which a gateway without a key does not ask for),
  // activated by its version, then rolled back: only the trial ends.
  const canary = await call('PUT', '/policy/candidate', policyFor(target, 'user'), { 'x-policy-signature': 'c2lnbmF0dXJl' })
  t.equal(canary.status, 201)
  t.match((await call('POST', '/policy/activate', '{"mode":"canary","share":2}')).json, { status: 400, detail: /share must be the share of principals the canary serves/ })
  t.match((await call('POST', '/policy/activate', JSON.stringify({ version: canary.json.version, mode: 'canary', share: 0.25 }))).json, { mode: 'canary', active: v2 })
  t.match((await call('POST', '/policy/rollback')).json, { version: v2, active: v2 })
  t.equal(gateway.policy.candidate, null)
  t.equal((await call('POST', '/policy/activate', '{"version":"0123456789abcdef"}')).status, 409)
  t.equal((await call('POST', '/policy/activate', 'not json')).status, 400)
  t.equal((await call('GET', '/policy/diff?from=0123456789abcdef&to=0123456789abcdef')).status, 404)
})

test('the admin API over mutual TLS: a caller without a certificate from the client CA is refused at the handshake', async (t) => {
  const dir = t.testdir()
  const openssl = (...args: string[]): void => { execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' }) }
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=admin CA', '-days', '1')
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1')
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '1', '-copy_extensions', 'copy')
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ops.key', '-out', 'ops.csr', '-subj', '/CN=ops')
  openssl('x509', '-req', '-in', 'ops.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'ops.crt', '-days', '1')
  const read = async (name: string): Promise<string> => await readFile(join(dir, name), 'utf8')
  const target = await upstream(t)
  const lines: string[] = []
  const stream = new Writable({ write: (chunk, _encoding, done) => { lines.push(String(chunk)); done() } })
  const gateway = await start(t, policyFor(target, 'user'), { port: 0, tls: { key: await read('server.key'), cert: await read('server.crt'), clientCa: await read('ca.crt') } }, { serverOptions: { logger: { level: 'info', stream } } })
  const send = async (method: string, path: string, cert?: { key: string, cert: string }, body?: string): Promise<{ status: number, body: string }> => await new Promise((resolve, reject) => {
    const req = httpsRequest(`${gateway.admin}${path}`, { method, rejectUnauthorized: false, ...(cert ?? {}), ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' } }) }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { text += chunk })
      res.on('end', () => { resolve({ status: res.statusCode as number, body: text }) })
    })
    req.on('error', reject)
    req.end(body)
  })
  const get = async (path: string, cert?: { key: string, cert: string }): Promise<{ status: number, body: string }> => await send('GET', path, cert)
  t.match(gateway.admin, /^https:/)
  await t.rejects(get('/policy'), 'no client certificate: the handshake fails')
  const ops = { key: await read('ops.key'), cert: await read('ops.crt') }
  const answer = await get('/policy', ops)
  t.equal(answer.status, 200)
  t.equal(JSON.parse(answer.body).version, gateway.policy.active?.version)
  t.equal((await send('PUT', '/policy/candidate', ops, policyFor(target, 'admin'))).status, 201)
  t.equal((await send('POST', '/policy/activate', ops, '{}')).status, 200)
  await new Promise((resolve) => setTimeout(resolve, 50))
  const activation = lines.map((line) => JSON.parse(line)).find((entry) => entry.policy?.source === 'admin-api')
  t.match(activation, { policy: { action: 'activate', actor: 'admin-api:ops' } }, 'the change names the certificate that made it')
})

test('admin options are checked at startup: a port, authentication, a long enough token', async (t) => {
  const target = await upstream(t)
  const file = join(t.testdir(), 'policy.json')
  await writeFile(file, policyFor(target, 'user'))
  const cases: Array<[unknown, RegExp]> = [
    [{ port: 0 }, /admin must be authenticated: a token, or tls/],
    [{ port: 0, token: 'short' }, /admin\.token must be a random string of at least 32 characters$/],
    [{ port: 70000, token: TOKEN }, /admin\.port must be an integer from 0 to 65535/],
    [{ port: 0, host: '', token: TOKEN }, /admin\.host must be a host name/],
    [{ port: 0, tls: { key: 'k', cert: 'c' } }, /admin\.tls\.clientCa must be PEM text/],
    [{ port: 0, token: TOKEN, path: '/x' }, /admin\.path is not a known option/]
  ]
  for (const [admin, message] of cases) {
    await t.rejects(startPolicyGateway({ file, port: 0, watch: false, admin: admin as PolicyGatewayOptions['admin'] }), { message }, JSON.stringify(admin))
  }
})
