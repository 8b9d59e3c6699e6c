import { test } from 'tap'
import { spawn } from 'node:child_process'
import { listeningUrl } from './helpers/child.js'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { join } from 'node:path'

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
  t.teardown(() => { if (child.exitCode === null) process.kill(-(child.pid as number), 'SIGKILL') })
  const { url } = await listeningUrl(child)
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
})
