import { test } from 'tap'
import Fastify from 'fastify'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { createApiKey } from '@portcullis/authn'
import { fleetStatus, publishPolicy } from '@portcullis/policy'
import { startPolicyGateway, type PolicyGateway } from '../src/index.js'

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const alice = createApiKey({ id: 'alice-key', owner: { id: 'alice', type: 'user', roles: ['user'] } })

test('three instances converge on a version published in Redis within a second, and report it; one that refuses it keeps its own', async (t) => {
  const upstream = Fastify()
  upstream.all('/*', async () => ({ ok: true }))
  const upstreamUrl = await upstream.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => upstream.close())
  // The route's rule comes from the environment: an instance without the variable cannot resolve it.
  const policyFor = (role: string): string => JSON.stringify({
    version: 1,
    authn: { methods: { keys: { type: 'api-key', keys: [alice.record] } } },
    authz: { roles: { user: {}, admin: {} } },
    upstreams: [{ prefix: '/api', url: 'env:ORDERS_URL', routes: [{ method: 'GET', path: '/things', authz: { anyRole: [role] } }] }]
  })
  const dir = t.testdir()
  const file = join(dir, 'policy.json')
  await writeFile(file, policyFor('user'))
  const prefix = `portcullis:test:fleet:${process.pid}:${Date.now()}:`
  const redis = new Redis(REDIS_URL)
  t.teardown(() => redis.quit())

  const gateways: Array<PolicyGateway & { url: string }> = []
  for (const name of ['gw-1', 'gw-2', 'gw-3']) {
    const gateway = await startPolicyGateway({ file, host: '127.0.0.1', port: 0, watch: false, env: { ORDERS_URL: upstreamUrl }, redis: { url: REDIS_URL, prefix, instanceId: name, heartbeatMs: 200 } })
    t.teardown(gateway.close)
    gateways.push({ ...gateway, url: await gateway.listen() })
  }
  const first = gateways[0]?.policy.active?.version
  t.ok(gateways.every((gateway) => gateway.policy.active?.version === first), 'all start on the file\'s version')
  const status = async (url: string): Promise<number> => (await fetch(`${url}/api/things`, { headers: { 'x-api-key': alice.key } })).status
  for (const gateway of gateways) t.equal(await status(gateway.url), 200)

  const started = Date.now()
  const published = await publishPolicy(redis, policyFor('admin'), { prefix, actor: 'ops' })
  while (!gateways.every((gateway) => gateway.policy.active?.version === published.version) && Date.now() - started < 5000) {
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  const elapsed = Date.now() - started
  t.ok(gateways.every((gateway) => gateway.policy.active?.version === published.version), 'every instance runs the published version')
  t.ok(elapsed < 1000, `converged in ${elapsed} ms`)
  for (const gateway of gateways) t.equal(await status(gateway.url), 403, 'and enforces it')
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.same((await fleetStatus(redis, prefix)).map((report) => [report.instance, report.version]), [['gw-1', published.version], ['gw-2', published.version], ['gw-3', published.version]], 'each reports the version it runs')

  // A fourth instance whose environment lacks ORDERS_URL starts from its file... and cannot run
  // the published version, which needs the variable: it says so, and the others are not held back.
  await writeFile(join(dir, 'local.json'), policyFor('user').replace('env:ORDERS_URL', upstreamUrl))
  const odd = await startPolicyGateway({ file: join(dir, 'local.json'), host: '127.0.0.1', port: 0, watch: false, env: {}, redis: { url: REDIS_URL, prefix, instanceId: 'gw-4', heartbeatMs: 200 } })
  t.teardown(odd.close)
  const report = odd.fleetReport()
  t.not(report?.version, published.version, 'it keeps the version it could run')
  t.match(report?.refused, { version: published.version, reason: /ORDERS_URL is not set/ })
  const next = await publishPolicy(redis, policyFor('user'), { prefix })
  const again = Date.now()
  while (!gateways.every((gateway) => gateway.policy.active?.version === next.version) && Date.now() - again < 5000) await new Promise((resolve) => setTimeout(resolve, 5))
  t.ok(gateways.every((gateway) => gateway.policy.active?.version === next.version), 'the others converge on the next version all the same')
  await new Promise((resolve) => setTimeout(resolve, 300))
  const fleet = await fleetStatus(redis, prefix)
  t.same(fleet.map((entry) => entry.instance), ['gw-1', 'gw-2', 'gw-3', 'gw-4'])
  t.match(fleet[3], { instance: 'gw-4', refused: { version: next.version } })
})
