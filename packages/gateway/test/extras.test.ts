import { test, type Test } from 'tap'
import { createServer, type AddressInfo } from 'node:net'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import Fastify from 'fastify'
import { createApiKey } from '@portcullis/authn'
import { buildGateway, startPolicyGateway, validateGatewayConfig, type GatewayConfig } from '../src/index.js'

const alice = createApiKey({ id: 'alice-key', owner: { id: 'alice', type: 'user', roles: ['user'] } })

// A real upstream whose answers carry personal data.
async function upstream (t: Test): Promise<string> {
  const app = Fastify()
  app.get('/v1/customers/:id', async (request) => ({ id: (request.params as { id: string }).id, email: 'carol@example.com', card: '5500 0000 0000 0004' }))
  app.get('/*', async (request) => ({ url: request.url }))
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  return url
}

async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

const extras = (url: string, metricsPort: number): GatewayConfig => ({
  helmet: true,
  cors: { origin: ['https://app.example.com'] },
  userAgents: { deny: ['BadBot'] },
  masking: true,
  authn: { methods: { keys: { type: 'api-key', keys: [alice.record] } } },
  observe: { metrics: { port: metricsPort } },
  upstreams: [{
    prefix: '/crm',
    url,
    rewritePrefix: '/v1',
    deprecation: { deprecated: '2025-01-01', sunset: '2099-01-01', link: 'https://docs.example.com/crm-v2' },
    routes: [
      { method: 'GET', path: '/customers/:id' },
      { method: 'GET', path: '/legacy', deprecation: { deprecated: '2020-01-01', sunset: '2021-01-01', cutoff: true } }
    ]
  }]
})

test('the standalone gateway applies the extras from its configuration', async (t) => {
  const target = await upstream(t)
  const metricsPort = await freePort()
  const app = await buildGateway(extras(target, metricsPort))
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  const headers = { 'x-api-key': alice.key, origin: 'https://app.example.com' }
  const customer = await fetch(`${base}/crm/customers/9`, { headers })
  t.same(await customer.json(), { id: '9', email: 'c***@example.com', card: '**** **** **** 0004' }, 'masked on the way out')
  t.equal(customer.headers.get('deprecation'), '@1735689600', 'the upstream\'s deprecation, on a declared route')
  t.equal(customer.headers.get('sunset'), 'Thu, 01 Jan 2099 00:00:00 GMT')
  t.equal(customer.headers.get('link'), '<https://docs.example.com/crm-v2>; rel="deprecation"')
  t.equal(customer.headers.get('x-content-type-options'), 'nosniff')
  t.equal(customer.headers.get('access-control-allow-origin'), 'https://app.example.com')
  const other = await fetch(`${base}/crm/anything`, { headers })
  t.equal(other.headers.get('sunset'), 'Thu, 01 Jan 2099 00:00:00 GMT', 'and on the rest of the prefix')
  const legacy = await fetch(`${base}/crm/legacy`)
  t.equal(legacy.status, 410, 'a route past its sunset is gone, before credentials are asked for')
  t.equal(((await legacy.json()) as { code: string }).code, 'PORTCULLIS_GATEWAY_SUNSET')
  const bot = await fetch(`${base}/crm/customers/9`, { headers: { ...headers, 'user-agent': 'BadBot/2.0' } })
  t.equal(bot.status, 403)
  const scraped = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
  t.match(scraped, /portcullis_decisions_total\{plugin="@portcullis\/gateway\/user-agents",outcome="deny",reason="PORTCULLIS_GATEWAY_USER_AGENT_DENIED",route="\/crm\/customers\/:id"\} 1/)
  t.match(scraped, /portcullis_rate_limit_store_up|portcullis_request_duration_seconds_count\{route="\/crm\/customers\/:id",method="GET",status_class="2xx"\} 1/)
  t.equal((await fetch(`http://127.0.0.1:${metricsPort}/other`)).status, 404, 'the metrics listener serves nothing else')
  t.equal((await fetch(`${base}/metrics`, { headers })).status, 404, 'and the gateway\'s own listener does not serve metrics')
})

test('the live gateway reports its policy version and every update in its metrics', async (t) => {
  const target = await upstream(t)
  const dir = t.testdir()
  const file = join(dir, 'policy.json')
  const document = (limit: number): Record<string, unknown> => ({ version: 1, ipRateLimit: { limits: [{ name: 'ip', limit, window: '1m' }] }, observe: { metrics: { port: 0 } }, upstreams: [{ prefix: '/api', url: target, public: true }] })
  await writeFile(file, JSON.stringify(document(100)))
  const gateway = await startPolicyGateway({ file, host: '127.0.0.1', port: 0, watch: false })
  t.teardown(gateway.close)
  t.equal(gateway.metricsUrl(), null, 'not listening before listen()')
  const base = await gateway.listen()
  const first = gateway.policy.active?.version as string
  t.equal((await fetch(`${base}/api/x`)).status, 200)
  const scrape = async (): Promise<string> => await (await fetch(`${gateway.metricsUrl() as string}/metrics`)).text()
  t.match(await scrape(), new RegExp(`portcullis_policy_info\\{version="${first}"\\} 1`))
  await gateway.policy.apply(JSON.stringify(document(50)))
  await t.rejects(gateway.policy.apply('{ "version": 1, "upstreams": 7 }'))
  const second = gateway.policy.active?.version as string
  await gateway.policy.rollback()
  const text = await scrape()
  t.match(text, new RegExp(`portcullis_policy_info\\{version="${first}"\\} 1`), 'the version in force after the rollback')
  t.notMatch(text, new RegExp(`portcullis_policy_info\\{version="${second}"\\} 1`))
  t.match(text, /portcullis_policy_updates_total\{outcome="applied"\} 2/)
  t.match(text, /portcullis_policy_updates_total\{outcome="refused"\} 1/)
  t.match(text, /portcullis_policy_updates_total\{outcome="rolled-back"\} 1/)
  t.match(text, /portcullis_rate_limit_store_up\{store="shared"\} 1/)
})

test('the observe section is checked at startup', async (t) => {
  t.same(validateGatewayConfig({ observe: { tracing: true } }).observe, { tracing: true })
  t.same(validateGatewayConfig({ observe: {} }).observe, {}, 'nothing asked, nothing reported')
  t.same(validateGatewayConfig({ observe: { metrics: { port: 9464, host: '0.0.0.0' }, tracing: false } }).observe, { metrics: { port: 9464, host: '0.0.0.0' }, tracing: false })
  t.same(validateGatewayConfig({ observe: { metrics: { port: 9464 } } }).observe, { metrics: { port: 9464, host: '127.0.0.1' } })
  const cases: Array<[unknown, RegExp]> = [
    [{ tracing: 'yes' }, /^observe\.tracing must be a boolean/],
    [{ metrics: {} }, /^observe\.metrics\.port must be the port of the metrics listener/],
    [{ metrics: { port: 1, host: '' } }, /^observe\.metrics\.host must be a host name or IP address/],
    [{ logs: true }, /^observe\.logs is not a known option/]
  ]
  for (const [observe, message] of cases) t.throws(() => validateGatewayConfig({ observe }), { message }, JSON.stringify(observe))
  const badBuckets = buildGateway({ observe: { metrics: { port: 0, buckets: [] } } })
  await t.rejects(badBuckets, { message: /^observe\.metrics\.buckets/ }, 'the observer checks the rest')
})

test('tracing alone opens no metrics listener; a shared Redis store is watched', async (t) => {
  const target = await upstream(t)
  const traced = await buildGateway({ observe: { tracing: true }, upstreams: [{ prefix: '/api', url: target, public: true }] })
  const base = await traced.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => traced.close())
  t.equal((await fetch(`${base}/api/x`)).status, 200, 'requests are traced (through the no-op tracer without an SDK)')
  const metricsPort = await freePort()
  const shared = await buildGateway({
    ipRateLimit: { limits: [{ name: 'ip', limit: 100, window: '1m' }] },
    rateLimitStore: { redis: { url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', prefix: `portcullis:test:extras:${process.pid}:` } },
    observe: { metrics: { port: metricsPort } },
    upstreams: [{ prefix: '/api', url: target, public: true }]
  })
  const sharedBase = await shared.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => shared.close())
  t.equal((await fetch(`${sharedBase}/api/x`)).status, 200)
  t.match(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text(), /portcullis_rate_limit_store_up\{store="shared"\} 1/, 'Redis is reachable')
})
