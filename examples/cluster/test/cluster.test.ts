import { test } from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { fleetStatus, publishedPolicy, publishPolicy } from '@portcullis/policy'
import { DEFAULT_POLICY_FILE } from '../src/start.js'
import { deleteKeys, REDIS_URL, status, uniquePrefix, until } from './helpers.js'

const alice = { 'x-api-key': 'demo-alice-key-cluster-000000001' }
const bob = { 'x-api-key': 'demo-bob-key-cluster-0000000002' }
const carol = { 'x-api-key': 'demo-carol-key-cluster-00000003' }

const start = fileURLToPath(new URL('../src/start.ts', import.meta.url))

test('one command starts three instances on one Redis: one limit across them, one policy version, and the others serve on when one stops', async (t) => {
  const began = Date.now()
  const prefix = uniquePrefix('cluster')
  const child = spawn(process.execPath, [...process.execArgv, start], {
    env: { ...process.env, PORTS: '0,0,0', UPSTREAM_PORT: '0', REDIS_URL, CLUSTER_PREFIX: prefix },
    stdio: ['ignore', 'pipe', 'ignore'],
    detached: true
  })
  const redis = new Redis(REDIS_URL)
  t.teardown(async () => {
    try { process.kill(-(child.pid as number), 'SIGKILL') } catch {}
    redis.disconnect()
    await deleteKeys(prefix)
  })
  let output = ''
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => { output += chunk })
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', () => { if (output.includes('stop one instance')) resolve() })
    child.once('exit', () => { reject(new Error(output)) })
  })
  t.comment(`up in ${Date.now() - began} ms`)
  const instances = [...output.matchAll(/^ {2}(gw-\d) \(pid (\d+)\) listening on (http:\/\/\S+)$/gm)].map(([, id, pid, url]) => ({ id: id as string, pid: Number(pid), url: `${String(url)}/api/orders` }))
  t.same(instances.map((instance) => instance.id), ['gw-1', 'gw-2', 'gw-3'])
  const urls = instances.map((instance) => instance.url)
  const policyPrefix = `${prefix}policy:`
  t.match(output, `Portcullis cluster: 3 gateways sharing ${REDIS_URL}`)
  t.match(output, `pnpm -s portcullis policy publish ${DEFAULT_POLICY_FILE} --redis ${REDIS_URL} --prefix ${policyPrefix}`)
  t.match(output, `pnpm -s portcullis policy status --redis ${REDIS_URL} --prefix ${policyPrefix}`)
  t.match(output, /^\[gw-2\] gw-2 listening on http:\/\/127\.0\.0\.1:\d+, policy version [0-9a-f]{16}$/m, "each instance's lines, after its name")

  // (a) alice may send 10 requests a minute in all: spread round robin, the 11th is refused
  // whichever instance it reaches, and so is every one after it.
  const statuses: number[] = []
  for (let i = 0; i < 10; i++) statuses.push(await status(urls[i % 3] as string, alice))
  t.same(statuses, Array(10).fill(200), '10 admitted across the three')
  t.same(await Promise.all(urls.map(async (url) => await status(url, alice))), [429, 429, 429], 'the 11th and later: 429 on every instance')
  t.equal(await status(urls[0] as string, carol), 200, 'carol counts on her own')

  // (b) One publish reaches every instance.
  const versions = async (): Promise<Array<string | null>> => (await fleetStatus(redis, policyPrefix)).map((instance) => instance.version)
  const [first] = await versions()
  t.same(await versions(), [first, first, first], 'every instance reports the version it started on')
  // Listing orders becomes an admin's privilege. What `portcullis policy publish` does:
  const next = (await readFile(DEFAULT_POLICY_FILE, 'utf8')).replace('{ method: GET, path: /orders, authz: { anyRole: [user] } }', '{ method: GET, path: /orders, authz: { anyRole: [admin] } }')
  const { version } = await publishPolicy(redis, next, { prefix: policyPrefix, name: 'policy.yaml', actor: 'test' })
  t.not(version, first)
  t.ok(await until(async () => (await versions()).every((v) => v === version)), 'all three run the published version')
  t.same(await Promise.all(urls.map(async (url) => await status(url, carol))), [403, 403, 403], 'and enforce it: carol is no admin')
  t.same(await Promise.all(urls.map(async (url) => await status(url, bob))), [200, 200, 200], 'bob is')
  // Each instance's audit records name the version that decided.
  const recorded = (id: string): boolean => output.split('\n').some((line) => line.startsWith(`[${id}] {`) && line.includes('"http-request"') && line.includes(`"version":"${version}"`) && line.includes('"status_code":403'))
  t.ok(await until(async () => instances.every((instance) => recorded(instance.id))), "so say every instance's audit records")
  // What `portcullis policy status` reads: the published version, and each instance's.
  t.equal((await publishedPolicy(redis, policyPrefix))?.version, version)
  t.same(await versions(), [version, version, version])

  // (c) One instance stops; the others serve on.
  const [gw1, gw2, gw3] = instances as [typeof instances[0], typeof instances[0], typeof instances[0]]
  process.kill(gw2.pid, 'SIGTERM')
  t.ok(await until(async () => output.includes('[gw-2] stopped (exit code 0); the other instances serve on')), 'gw-2 stops cleanly')
  await t.rejects(fetch(gw2.url, { headers: bob }), 'nothing listens there any more')
  t.same([await status(gw1.url, bob), await status(gw3.url, bob)], [200, 200], 'gw-1 and gw-3 serve on')

  // One SIGTERM stops the rest.
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  t.equal((await exited)[0], 0, 'the start script exits 0')
  for (const { id, pid } of instances) t.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `${id} is gone`)
})
