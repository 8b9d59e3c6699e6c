import { test } from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import { Agent } from 'undici'
import { createApiKey } from '@portcullis/authn'
import { startPolicyGateway } from '@portcullis/gateway'
import { createPki } from '../packages/mtls/test/pki.js'
import { RESOURCE, signingKey, TestProvider } from '../packages/authn/test/oidc-helpers.js'

// End to end: the standalone gateway, started from a policy document, in front of two real
// upstream services, with every part of the chain on and each one exercised through the proxy,
// over real TLS with client certificates, with tokens from a real OpenID provider.

const seen: Array<{ upstream: string, url: string, forwardedFor: unknown, forwardedProto: unknown }> = []

async function startUpstream (name: string, routes: (app: FastifyInstance) => void): Promise<{ url: string, app: FastifyInstance }> {
  const app = Fastify()
  app.addHook('onRequest', async (request) => {
    seen.push({ upstream: name, url: request.url, forwardedFor: request.headers['x-forwarded-for'], forwardedProto: request.headers['x-forwarded-proto'] })
  })
  routes(app)
  return { url: await app.listen({ host: '127.0.0.1', port: 0 }), app }
}

const ORDERS_CONTRACT = {
  openapi: '3.1.0',
  info: { title: 'orders', version: '1' },
  paths: {
    '/orders': {
      post: {
        requestBody: {
          required: true,
          content: { 'application/json': { schema: { type: 'object', required: ['item', 'qty'], additionalProperties: false, properties: { item: { type: 'string', minLength: 1 }, qty: { type: 'integer', minimum: 1, maximum: 100 } } } } }
        },
        responses: { 201: { description: 'created' } }
      }
    },
    '/orders/{id}': { get: { parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string', pattern: '^[0-9]+$' } }], responses: { 200: { description: 'the order' } } } }
  }
}

test('the whole chain, every part exercised through the proxy, in front of two upstreams', async (t) => {
  const pki = await createPki()
  const provider = await new TestProvider().start([signingKey('k1')])
  t.teardown(() => provider.stop())
  const orders = await startUpstream('orders', (app) => {
    app.get('/orders/:id', async (request) => ({ id: (request.params as { id: string }).id, item: 'lamp', customer: { email: 'dana@example.com', card: '4111-1111-1111-1111' } }))
    app.post('/orders', async (request, reply) => await reply.code(201).send({ created: request.body }))
  })
  const catalog = await startUpstream('catalog', (app) => {
    app.get('/items', async () => [{ sku: 'lamp' }])
    app.get('/legacy/items', async () => [{ sku: 'old' }])
  })
  t.teardown(async () => { await orders.app.close(); await catalog.app.close() })

  const partner = createApiKey({ id: 'partner-1', owner: { id: 'partner', type: 'service', scopes: ['catalog:read'] } })
  const dir = t.testdir({ 'server.key': pki.server.key, 'server.crt': pki.server.cert, 'ca.crt': pki.ca.cert })
  const auditFile = join(dir, 'audit.log')
  const document = {
    version: 1,
    server: { tls: { key: 'server.key', cert: 'server.crt', clientCa: 'ca.crt' }, bodyLimit: 4096 },
    core: { trustedProxies: ['127.0.0.1/32'] },
    helmet: true,
    cors: { origin: ['https://shop.example'] },
    ipRules: { deny: ['192.0.2.0/24'] },
    userAgents: true,
    mtls: { required: false },
    ipRateLimit: { limits: [{ name: 'ip', limit: 1000, window: '1m' }] },
    authn: {
      methods: {
        idp: { type: 'jwt', issuer: provider.issuer, audience: RESOURCE, discovery: true, algorithms: ['ES256'], typ: 'at+jwt' },
        partners: { type: 'api-key', keys: [partner.record] }
      }
    },
    rateLimit: { limits: [{ name: 'principal', limit: 1000, window: '1m' }] },
    authz: { roles: { user: {} } },
    masking: true,
    audit: { sinks: [{ type: 'file', path: 'audit.log' }] },
    observe: { metrics: { port: 0 } },
    upstreams: [
      {
        prefix: '/shop',
        url: orders.url,
        openapi: ORDERS_CONTRACT,
        routes: [
          { method: 'GET', path: '/orders/:id', authz: { anyScope: ['orders:read'] } },
          { method: 'POST', path: '/orders', authz: { allScopes: ['orders:write'] }, rateLimit: [{ name: 'order-writes', limit: 5, window: '1m' }] }
        ]
      },
      {
        prefix: '/catalog',
        url: catalog.url,
        routes: [
          { method: 'GET', path: '/items', authz: { anyScope: ['catalog:read'] }, deprecation: { deprecated: '2026-01-01', sunset: '2099-12-31', link: 'https://docs.example/catalog-v2' } },
          { method: 'GET', path: '/legacy/items', authz: false, deprecation: { deprecated: '2020-01-01', sunset: '2021-06-30', cutoff: true } }
        ]
      }
    ]
  }
  const file = join(dir, 'policy.json')
  await writeFile(file, JSON.stringify(document))
  const gateway = await startPolicyGateway({ file, host: '127.0.0.1', port: 0, watch: false })
  t.teardown(gateway.close)
  const base = (await gateway.listen()).replace('127.0.0.1', 'localhost')
  const tls = new Agent({ connect: { ca: pki.ca.cert } })
  const withCert = new Agent({ connect: { ca: pki.ca.cert, cert: pki.service.cert, key: pki.service.key } })
  const withForeignCert = new Agent({ connect: { ca: pki.ca.cert, cert: pki.foreign.cert, key: pki.foreign.key } })
  t.teardown(async () => { await Promise.all([tls.close(), withCert.close(), withForeignCert.close()]) })
  const call = async (path: string, init: Omit<RequestInit, 'dispatcher'> & { dispatcher?: Agent } = {}): Promise<Response> =>
    await fetch(`${base}${path}`, { dispatcher: tls, ...init } as unknown as RequestInit)
  const codeOf = async (response: Response): Promise<string> => ((await response.json()) as { code: string }).code

  const reader = `Bearer ${await provider.token('orders:read')}`
  const writer = `Bearer ${await provider.token('orders:read orders:write')}`

  // authn, rateLimit, authz, masking, helmet, the ip limit: an allowed read through the proxy.
  const order = await call('/shop/orders/42', { headers: { authorization: reader } })
  t.equal(order.status, 200)
  t.same(await order.json(), { id: '42', item: 'lamp', customer: { email: 'd***@example.com', card: '****-****-****-1111' } }, 'personal data masked')
  t.equal(order.headers.get('strict-transport-security'), 'max-age=31536000; includeSubDomains', 'security headers')
  t.match(order.headers.get('ratelimit-policy'), /"ip";q=1000;w=60, "principal";q=1000;w=60/, 'both limit stages counted it')
  t.match(seen.at(-1), { upstream: 'orders', url: '/orders/42', forwardedFor: '127.0.0.1', forwardedProto: 'https' }, 'the upstream hears who the client is from the gateway')

  // authn: no credentials.
  t.equal(await codeOf(await call('/shop/orders/42')), 'PORTCULLIS_AUTHN_MISSING_CREDENTIALS')
  // authz: a reader may not write.
  const forbidden = await call('/shop/orders', { method: 'POST', headers: { authorization: reader, 'content-type': 'application/json' }, body: '{"item":"lamp","qty":1}' })
  t.equal(forbidden.status, 403)
  const denial = await codeOf(forbidden)
  // schema-validate: the contract refuses a bad order before it goes upstream.
  const before = seen.length
  const invalid = await call('/shop/orders', { method: 'POST', headers: { authorization: writer, 'content-type': 'application/json' }, body: '{"item":"lamp","qty":0}' })
  t.equal(invalid.status, 400)
  t.equal(await codeOf(invalid), 'PORTCULLIS_SCHEMA_INVALID')
  t.equal((await call('/shop/orders/abc', { headers: { authorization: reader } })).status, 400, 'a path parameter the contract refuses')
  // the body limit.
  const large = await call('/shop/orders', { method: 'POST', headers: { authorization: writer, 'content-type': 'application/json' }, body: JSON.stringify({ item: 'x'.repeat(8000), qty: 1 }) })
  t.equal(large.status, 413)
  t.equal(seen.length, before, 'none of the refused requests reached an upstream')
  // the route's own limit by principal: the three refusals above counted too, at step 6, before authz and validation.
  const post = async (): Promise<number> => (await call('/shop/orders', { method: 'POST', headers: { authorization: writer, 'content-type': 'application/json' }, body: '{"item":"lamp","qty":2}' })).status
  t.same([await post(), await post(), await post()], [201, 201, 429], 'five writes a minute')

  // IP rules, behind the trusted proxy (loopback) that says who the client is.
  const blocked = await call('/shop/orders/42', { headers: { authorization: reader, 'x-forwarded-for': '192.0.2.7' } })
  t.equal(await codeOf(blocked), 'PORTCULLIS_AUTHZ_IP_DENIED')
  // User-Agent rules.
  t.equal(await codeOf(await call('/shop/orders/42', { headers: { authorization: reader, 'user-agent': 'sqlmap/1.8#stable' } })), 'PORTCULLIS_GATEWAY_USER_AGENT_DENIED')
  // CORS: a preflight is answered without credentials.
  const preflight = await call('/shop/orders', { method: 'OPTIONS', headers: { origin: 'https://shop.example', 'access-control-request-method': 'POST' } })
  t.equal(preflight.status, 204)
  t.equal(preflight.headers.get('access-control-allow-origin'), 'https://shop.example')

  // mtls: a client certificate from another CA is refused even where certificates are optional; ours is fine.
  const foreign = await call('/catalog/items', { dispatcher: withForeignCert, headers: { authorization: `Bearer ${partner.key}` } })
  t.equal(foreign.status, 401)
  t.match(await codeOf(foreign), /^PORTCULLIS_MTLS_/)
  // The second upstream, with an API key: deprecation headers on a retiring route.
  const items = await call('/catalog/items', { dispatcher: withCert, headers: { 'x-api-key': partner.key } })
  t.equal(items.status, 200)
  t.same(await items.json(), [{ sku: 'lamp' }])
  t.equal(items.headers.get('sunset'), 'Thu, 31 Dec 2099 00:00:00 GMT')
  t.equal(items.headers.get('deprecation'), '@1767225600')
  t.equal(items.headers.get('link'), '<https://docs.example/catalog-v2>; rel="deprecation"')
  // A route past its sunset is gone, for everyone, credentials or not.
  const legacy = await call('/catalog/legacy/items')
  t.equal(legacy.status, 410)
  t.equal(await codeOf(legacy), 'PORTCULLIS_GATEWAY_SUNSET')

  // Metrics, on their own listener.
  const metrics = await (await fetch(`${gateway.metricsUrl() as string}/metrics`)).text()
  t.match(metrics, new RegExp(`portcullis_decisions_total\\{plugin="@portcullis/authz",outcome="deny",reason="${denial}",route="/shop/orders"\\} 1`))
  t.match(metrics, new RegExp(`portcullis_policy_info\\{version="${gateway.policy.active?.version as string}"\\} 1`))

  // Audit: one record per request with every decision, the upstream's answer, the policy version.
  await gateway.close()
  const records = (await readFile(auditFile, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>)
  const requests = records.filter((record) => (record.event as { action?: string }).action === 'http-request')
  t.equal(requests.length, 15, 'every request has one record')
  const text = JSON.stringify(records)
  for (const reason of ['PORTCULLIS_AUTHN_OK', denial, 'PORTCULLIS_RATE_LIMIT_EXCEEDED', 'PORTCULLIS_AUTHZ_IP_DENIED', 'PORTCULLIS_GATEWAY_USER_AGENT_DENIED', 'PORTCULLIS_GATEWAY_SUNSET']) {
    t.ok(text.includes(reason), `the audit log records ${reason}`)
  }
  t.notOk(text.includes(partner.key), 'credentials are never written')
  t.ok(text.includes(gateway.policy.active?.version ?? ''), 'records carry the policy version')
})
