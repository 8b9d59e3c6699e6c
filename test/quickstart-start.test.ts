import { test } from 'tap'
import { spawn } from 'node:child_process'
import { listeningUrl } from './helpers/child.js'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { dirname, join } from 'node:path'
import { readFile, stat } from 'node:fs/promises'

// The README's quick start, end to end: the example's own start script (tsx on the sources, the
// workspace packages from their built dist), a real listener, real HTTP.
const root = fileURLToPath(new URL('..', import.meta.url))
const run = promisify(execFile)
// Under `pnpm test`, npm_execpath is the pnpm that runs us; otherwise use the one on PATH.
const execPath = process.env.npm_execpath ?? ''
const args = ['--silent', '--filter', '@portcullis/example-quickstart', 'start']
const [command, argv] = /pnpm/.test(execPath) ? [process.execPath, [execPath, ...args]] : ['pnpm', args]

test('the quickstart starts from its package script and answers on a real socket', async (t) => {
  const child = spawn(command, argv, {
    cwd: root,
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'inherit'],
    detached: true
  })
  t.teardown(() => {
    // Whatever of the group is still there (pnpm may end on the signal before its children do).
    try {
      process.kill(-(child.pid as number), 'SIGKILL')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err
    }
  })
  const { url, output } = await listeningUrl(child)
  // The audit log it prints, and where this run's records begin in it (earlier runs append to the same file).
  const auditFile = (/audit log: (\S+)/.exec(output) ?? /audit log: (\S+)/.exec(await more(child)))?.[1] as string
  const startedAt = (await stat(auditFile)).size
  const health = await fetch(`${url}/healthz`)
  t.equal(health.status, 200)
  t.equal((await fetch(`${url}/api/orders`)).status, 401, 'the orders API needs credentials')
  t.equal((await fetch(`${url}/api/orders`, { headers: { 'x-api-key': 'demo-alice-key-0000000000000001' } })).status, 200, "alice's demo key")
  // What `pnpm -s portcullis token alice` runs once the packages are built.
  const { stdout: token } = await run(process.execPath, [join(root, 'scripts/portcullis.mjs'), 'token', 'alice'], { cwd: root })
  const withToken = await fetch(`${url}/api/orders`, { headers: { authorization: `Bearer ${token.trim()}` } })
  t.equal(withToken.status, 200, "alice's token from the portcullis command")
  // The authorization the quickstart ships with, on the running program.
  const bob = { 'x-api-key': 'demo-bob-key-0000000000000002' }
  const alice = { authorization: `Bearer ${token.trim()}` }
  t.equal((await fetch(`${url}/api/orders/2`, { headers: alice })).status, 403, "alice may not read bob's order")
  t.equal((await fetch(`${url}/api/orders/1`, { method: 'DELETE', headers: alice })).status, 403, 'alice may not delete')
  t.equal((await fetch(`${url}/api/orders/1`, { method: 'DELETE', headers: bob })).status, 204, 'bob, an admin, may')
  const unknown = await fetch(`${url}/no-such-path`)
  t.equal(unknown.status, 404)
  t.equal(unknown.headers.get('content-type'), 'application/problem+json; charset=utf-8')
  t.equal((await unknown.json() as { code: string }).code, 'PORTCULLIS_CORE_NOT_FOUND')
  const exited = once(child, 'exit')
  process.kill(-(child.pid as number), 'SIGTERM')
  await exited

  // Against the running quickstart: one record per request (health checks aside), each with its
  // deciding plugin and reason, no credential anywhere, and a chain that verifies.
  const records = (await readFile(auditFile, 'utf8')).slice(startedAt).trimEnd().split('\n').map((line) => JSON.parse(line))
  const requests = records.filter((record) => record.event.action === 'http-request')
  t.same(requests.map((r) => r.http.response.status_code), [401, 200, 200, 403, 403, 204, 404])
  t.same(requests.slice(0, 6).map((r) => [r.portcullis.decision.plugin, r.event.reason]), [
    ['@portcullis/authn', 'PORTCULLIS_AUTHN_MISSING_CREDENTIALS'],
    ['@portcullis/schema-validate', 'PORTCULLIS_SCHEMA_OK'],
    ['@portcullis/schema-validate', 'PORTCULLIS_SCHEMA_OK'],
    ['@portcullis/authz', 'PORTCULLIS_AUTHZ_NOT_OWNER'],
    ['@portcullis/authz', 'PORTCULLIS_AUTHZ_FORBIDDEN'],
    ['@portcullis/schema-validate', 'PORTCULLIS_SCHEMA_OK']
  ])
  const text = JSON.stringify(records)
  for (const secret of ['demo-alice-key-0000000000000001', 'demo-bob-key-0000000000000002', token.trim(), 'Bearer ']) t.notOk(text.includes(secret), 'no API key, token or Authorization value')
  const publicKey = join(dirname(auditFile), 'audit-public-key.pem')
  const { stdout: verified } = await run(process.execPath, [join(root, 'scripts/portcullis.mjs'), 'audit', 'verify', auditFile, '--key', publicKey], { cwd: root })
  t.match(verified, /^portcullis audit verify: intact: /, 'pnpm -s portcullis audit verify exits 0')
})

// The rest of what a child printed in its next chunk of output.
async function more (child: { stdout: NodeJS.ReadableStream }): Promise<string> {
  const [chunk] = await once(child.stdout, 'data')
  return String(chunk)
}
