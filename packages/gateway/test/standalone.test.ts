import { test, type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { setTimeout as sleep } from 'node:timers/promises'
import { Agent, get as httpGet } from 'node:http'
import { createApiKey } from '@portcullis/authn'
import { buildGateway, type GatewayConfig } from '../src/index.js'

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

// A real upstream on a loopback port, answering what it received so the test sees what went through.
async function startUpstream (t: Test): Promise<{ url: string, app: FastifyInstance }> {
  const app = Fastify()
  app.all('/*', async (request) => ({ method: request.method, url: request.url, body: request.body ?? null, forwardedFor: request.headers['x-forwarded-for'] ?? null }))
  app.get<{ Querystring: { ms?: string } }>('/slow', async (request) => { await sleep(Number(request.query.ms ?? 3000)); return { slow: true } })
  app.get('/boom', async (_request, reply) => reply.code(500).send({ upstream: 'error' }))
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  return { url, app }
}

async function startGateway (t: Test, config: GatewayConfig): Promise<{ url: string, app: FastifyInstance }> {
  const app = await buildGateway(config)
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  return { url, app }
}

test('rate limits from the configuration: by address before authn, by principal after it, never on /healthz', async (t) => {
  const upstream = await startUpstream(t)
  const key = createApiKey({ id: 'k1', owner: { id: 'alice', type: 'user' } })
  const gateway = await startGateway(t, {
    ipRateLimit: { limits: [{ name: 'ip', algorithm: 'fixed-window', limit: 4, window: '1m' }] },
    authn: { methods: { key: { type: 'api-key', keys: [key.record] } } },
    rateLimit: { limits: [{ name: 'user', algorithm: 'fixed-window', limit: 1, window: '1m' }] },
    upstreams: [{ prefix: '/api', url: upstream.url }]
  })
  const headers = { 'x-api-key': key.key }
  const first = await fetch(`${gateway.url}/api/orders`, { headers })
  t.equal(first.status, 200)
  t.equal(first.headers.get('ratelimit-policy'), '"ip";q=4;w=60, "user";q=1;w=60')
  t.equal((await fetch(`${gateway.url}/api/orders`, { headers })).status, 429, 'alice\'s second')
  for (let i = 0; i < 5; i++) t.equal((await fetch(`${gateway.url}/healthz`)).status, 200, 'health checks are never limited')
  t.equal((await fetch(`${gateway.url}/api/orders`)).status, 401)
  t.equal((await fetch(`${gateway.url}/api/orders`)).status, 401)
  const over = await fetch(`${gateway.url}/api/orders`)
  t.equal(over.status, 429, 'the fifth request from this address, failed logins included')
  t.equal(over.headers.get('ratelimit-policy'), '"ip";q=4;w=60')
})

test('declared routes carry their own limits, or none at all', async (t) => {
  const upstream = await startUpstream(t)
  const key = createApiKey({ id: 'k1', owner: { id: 'alice', type: 'user' } })
  const gateway = await startGateway(t, {
    ipRateLimit: { limits: [{ name: 'ip', algorithm: 'fixed-window', limit: 5, window: '1m' }] },
    authn: { methods: { key: { type: 'api-key', keys: [key.record] } } },
    rateLimit: { limits: [{ name: 'user', limit: 100, window: '1m' }] },
    upstreams: [{
      prefix: '/api',
      url: upstream.url,
      routes: [
        { method: 'POST', path: '/exports', rateLimit: [{ name: 'exports', algorithm: 'fixed-window', limit: 1, window: '1h', key: ['principal', 'route'] }] },
        { method: 'GET', path: '/status', rateLimit: false }
      ]
    }]
  })
  const headers = { 'x-api-key': key.key }
  const first = await fetch(`${gateway.url}/api/exports`, { method: 'POST', headers })
  t.equal(first.status, 200)
  t.equal(first.headers.get('ratelimit-policy'), '"ip";q=5;w=60, "exports";q=1;w=3600', 'the route\'s own limit, in place of the section\'s')
  t.equal((await fetch(`${gateway.url}/api/exports`, { method: 'POST', headers })).status, 429, 'one export an hour')
  t.equal((await fetch(`${gateway.url}/api/orders`, { headers })).status, 200, 'other routes keep the section\'s limits')
  const statuses = []
  for (let i = 0; i < 8; i++) statuses.push((await fetch(`${gateway.url}/api/status`, { headers })).status)
  t.same(statuses, Array(8).fill(200), 'a route marked rateLimit: false is limited by no stage, the address\'s included')
  const rest = []
  for (let i = 0; i < 3; i++) rest.push((await fetch(`${gateway.url}/api/orders`, { headers })).status)
  t.same(rest, [200, 200, 429], 'elsewhere the address counted on from 3: its 4th and 5th, then refused')
})

test('rate limits counted in Redis: two gateways share one count; without Redis the fail mode decides', async (t) => {
  const upstream = await startUpstream(t)
  const prefix = `portcullis:test:gateway:${process.pid}:${Date.now()}:`
  const config = (redis: { url: string, failMode?: 'open' | 'closed' }): GatewayConfig => ({
    rateLimitStore: { redis: { prefix, ...redis } },
    ipRateLimit: { limits: [{ name: 'ip', algorithm: 'fixed-window', limit: 3, window: '1h' }] },
    upstreams: [{ prefix: '/api', url: upstream.url }]
  })
  const [a, b] = [await startGateway(t, config({ url: REDIS_URL })), await startGateway(t, config({ url: REDIS_URL }))]
  const seen = []
  for (const gateway of [a, b, a, b]) {
    const res = await fetch(`${gateway.url}/api/orders`)
    seen.push([res.status, res.headers.get('ratelimit')])
  }
  t.same(seen.map(([status]) => status), [200, 200, 200, 429], 'three in all, whichever gateway they reach')
  t.match(seen[2]?.[1], /^"ip";r=0;/, 'the third, on the first gateway, knows of the one the second counted')

  // A port where nothing listens: Redis is unreachable from the start.
  const probe = Fastify()
  await probe.listen({ host: '127.0.0.1', port: 0 })
  const { port } = probe.server.address() as { port: number }
  await probe.close()
  const lines: string[] = []
  const closed = await buildGateway(config({ url: `redis://gw:s3cret@127.0.0.1:${port}`, failMode: 'closed' }), { logger: { level: 'info', stream: { write: (line: string) => { lines.push(line) } } } })
  const closedUrl = await closed.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => closed.close())
  const refused = await fetch(`${closedUrl}/api/orders`)
  t.equal(refused.status, 503, 'fail closed: refused while Redis is away')
  t.equal((await refused.json() as { code: string }).code, 'PORTCULLIS_RATE_LIMIT_STORE_UNAVAILABLE')
  await sleep(300)
  const unreachable = lines.filter((line) => line.includes('rate-limit store unreachable'))
  t.equal(unreachable.length, 1, 'logged once, not at every reconnection attempt')
  t.match(unreachable[0], `"redis":"127.0.0.1:${port}"`)
  t.notOk(lines.some((line) => line.includes('s3cret')), 'the password in the URL is never logged')
  const open = await startGateway(t, config({ url: `redis://127.0.0.1:${port}`, failMode: 'open' }))
  const statuses = []
  for (let i = 0; i < 4; i++) statuses.push((await fetch(`${open.url}/api/orders`)).status)
  t.same(statuses, [200, 200, 200, 429], 'fail open: counted in the gateway itself')
  t.equal((await fetch(`${open.url}/healthz`)).status, 200)
})

test('proxies a prefix to its upstream over real sockets', async (t) => {
  const upstream = await startUpstream(t)
  const gateway = await startGateway(t, { upstreams: [{ prefix: '/api', url: upstream.url }, { prefix: '/v2', url: upstream.url, rewritePrefix: '/internal' }] })
  const get = await fetch(`${gateway.url}/api/orders/1?expand=items`)
  t.equal(get.status, 200)
  t.match(await get.json(), { method: 'GET', url: '/orders/1?expand=items' })
  const post = await fetch(`${gateway.url}/api/orders`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ item: 'lamp' }) })
  t.match(await post.json(), { method: 'POST', url: '/orders', body: { item: 'lamp' } })
  const rewritten = await fetch(`${gateway.url}/v2/orders`)
  t.match(await rewritten.json(), { url: '/internal/orders' })
  const upstreamError = await fetch(`${gateway.url}/api/boom`)
  t.equal(upstreamError.status, 500, "an upstream's own error response is passed through")
  t.same(await upstreamError.json(), { upstream: 'error' })
})

test('health endpoint and unknown paths', async (t) => {
  const gateway = await startGateway(t, {})
  const health = await fetch(`${gateway.url}/healthz`)
  t.equal(health.status, 200)
  t.match(health.headers.get('x-request-id'), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'a UUID request id')
  t.same(await health.json(), { status: 'ok' })
  const unknown = await fetch(`${gateway.url}/api/orders`)
  t.equal(unknown.status, 404)
  t.equal(unknown.headers.get('content-type'), 'application/problem+json; charset=utf-8')
  t.equal((await unknown.json() as { code: string }).code, 'PORTCULLIS_CORE_NOT_FOUND')
  t.not(unknown.headers.get('x-request-id'), health.headers.get('x-request-id'))
  const quiet = await startGateway(t, { core: { requestIdHeader: false } })
  t.equal((await fetch(`${quiet.url}/healthz`)).headers.get('x-request-id'), null, 'core.requestIdHeader: false turns it off')
})

test('an upstream that is down or slow is a problem+json 502 or 504, never a hang', async (t) => {
  const upstream = await startUpstream(t)
  const down = Fastify()
  const downUrl = await down.listen({ host: '127.0.0.1', port: 0 })
  await down.close()
  const gateway = await startGateway(t, {
    upstreams: [{ prefix: '/down', url: downUrl }, { prefix: '/api', url: upstream.url, timeout: 1000 }]
  })
  const refused = await fetch(`${gateway.url}/down/orders`)
  t.equal(refused.status, 502)
  t.equal(refused.headers.get('content-type'), 'application/problem+json; charset=utf-8')
  const body = await refused.text()
  t.match(JSON.parse(body), { code: 'PORTCULLIS_CORE_BAD_GATEWAY', detail: 'The upstream service did not answer correctly' })
  t.notMatch(body, /ECONNREFUSED|127\.0\.0\.1/, 'nothing about the upstream leaks')
  const started = Date.now()
  const slow = await fetch(`${gateway.url}/api/slow`)
  t.equal(slow.status, 504)
  t.match(await slow.json(), { code: 'PORTCULLIS_CORE_GATEWAY_TIMEOUT' })
  // The upstream answers after 3 s; the timeout is 1 s (the HTTP client's timers tick about once a second).
  t.ok(Date.now() - started < 2500, 'answered at the configured timeout, not when the upstream finished')
})

test('closing lets in-flight requests finish, ends their connections, and refuses new ones', async (t) => {
  const upstream = await startUpstream(t)
  const app = await buildGateway({ upstreams: [{ prefix: '/api', url: upstream.url }] })
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  const agent = new Agent({ keepAlive: true })
  t.teardown(() => agent.destroy())
  const inFlight = get(agent, `${url}/api/slow?ms=300`)
  await sleep(100)
  const started = Date.now()
  const closed = app.close()
  const finished = await inFlight
  t.equal(finished.status, 200, 'the in-flight request finished')
  t.equal(finished.body, '{"slow":true}')
  t.equal(finished.connection, 'close', 'the keep-alive client is told to go')
  await closed
  t.ok(Date.now() - started < 2000, 'close did not wait for the keep-alive timeout')
  await t.rejects(get(agent, `${url}/healthz`), { code: 'ECONNREFUSED' })
})

function get (agent: Agent, url: string) {
  return new Promise<{ status: number, body: string, connection: string | undefined }>((resolve, reject) => {
    httpGet(url, { agent }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { body += chunk })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, body, connection: res.headers.connection }) })
    }).on('error', reject)
  })
}

test('with authn: upstream routes need credentials, health checks do not', async (t) => {
  const upstream = await startUpstream(t)
  const key = createApiKey({ id: 'k1', owner: { id: 'alice', type: 'user' } })
  const gateway = await startGateway(t, {
    authn: { methods: { key: { type: 'api-key', keys: [key.record] } } },
    upstreams: [{ prefix: '/api', url: upstream.url }]
  })
  const anonymous = await fetch(`${gateway.url}/api/orders`)
  t.equal(anonymous.status, 401)
  t.equal(anonymous.headers.get('www-authenticate'), 'ApiKey realm="api", header="x-api-key"')
  const withKey = await fetch(`${gateway.url}/api/orders`, { headers: { 'x-api-key': key.key } })
  t.equal(withKey.status, 200)
  t.equal((await fetch(`${gateway.url}/healthz`)).status, 200)
  t.equal((await fetch(`${gateway.url}/nope`)).status, 404)
})

test('bad configuration fails before listening', async (t) => {
  await t.rejects(buildGateway({ upstreams: [{ prefix: 'api', url: 'http://127.0.0.1:1' }] }), { code: 'PORTCULLIS_CORE_INVALID_OPTION' })
})
