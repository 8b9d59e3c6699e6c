import { test, type Test } from 'tap'
import Fastify from 'fastify'
import { connect } from 'node:net'
import { once } from 'node:events'
import { createApiKey } from '@portcullis/authn'
import { buildGateway, type GatewayConfig } from '../src/index.js'

// A real upstream that answers what it received.
async function startUpstream (t: Test): Promise<string> {
  const app = Fastify()
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_request, body, done) => { done(null, `${(body as Buffer).length} bytes`) })
  app.all('/*', async (request) => ({ method: request.method, url: request.url, body: request.body ?? null, owner: 'alice' }))
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  return url
}

const alice = createApiKey({ id: 'k-alice', owner: { id: 'alice', type: 'user', roles: ['user'] } })
const bob = createApiKey({ id: 'k-bob', owner: { id: 'bob', type: 'user', roles: ['admin'] } })

async function startGateway (t: Test, upstream: string, extra: Partial<GatewayConfig> = {}): Promise<string> {
  const app = await buildGateway({
    authn: { methods: { key: { type: 'api-key', keys: [alice.record, bob.record] } } },
    authz: { roles: { user: {}, admin: { inherits: ['user'] } } },
    upstreams: [{
      prefix: '/api',
      url: upstream,
      rewritePrefix: '/v1',
      routes: [
        { method: 'GET', path: '/orders/:id', authz: { anyRole: ['user'], resource: async () => ({ owner: 'alice' }), owner: { resource: 'owner' } } },
        { method: 'POST', path: '/orders', authz: { anyRole: ['user'], properties: { user: { write: ['item'] } } } },
        { method: ['PUT', 'DELETE'], path: '/orders/:id', authz: { anyRole: ['admin'] } },
        { method: 'GET', path: '/status', authz: false }
      ]
    }],
    ...extra
  })
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  return url
}

test('declared routes carry their own rules; the request goes upstream as it came', async (t) => {
  const gateway = await startGateway(t, await startUpstream(t))
  const as = (key: { key: string }, extra: Record<string, string> = {}) => ({ 'x-api-key': key.key, ...extra })
  const own = await fetch(`${gateway}/api/orders/7?expand=items&x=%2F`, { headers: as(alice) })
  t.equal(own.status, 200)
  t.match(await own.json(), { method: 'GET', url: '/v1/orders/7?expand=items&x=%2F' }, 'prefix rewritten, query as sent')
  t.equal((await fetch(`${gateway}/api/orders/7`, { method: 'HEAD', headers: as(alice) })).status, 200, 'HEAD as GET')
  t.equal((await fetch(`${gateway}/api/orders/7`, { headers: as(bob) })).status, 403, 'ownership through the resource loader')

  const post = await fetch(`${gateway}/api/orders`, { method: 'POST', headers: as(alice, { 'content-type': 'application/json' }), body: '{"item":"lamp"}' })
  t.match(await post.json(), { method: 'POST', url: '/v1/orders', body: { item: 'lamp' } }, 'a JSON body goes upstream')
  const stolen = await fetch(`${gateway}/api/orders`, { method: 'POST', headers: as(alice, { 'content-type': 'application/json' }), body: '{"item":"lamp","owner":"bob"}' })
  t.equal(stolen.status, 403)

  t.equal((await fetch(`${gateway}/api/orders/7`, { method: 'DELETE', headers: as(alice) })).status, 403)
  t.match(await (await fetch(`${gateway}/api/orders/7`, { method: 'DELETE', headers: as(bob) })).json(), { method: 'DELETE', url: '/v1/orders/7' })
  const upload = await fetch(`${gateway}/api/orders/7`, { method: 'PUT', headers: as(bob, { 'content-type': 'application/octet-stream' }), body: Buffer.alloc(70_000, 1) })
  t.match(await upload.json(), { body: '70000 bytes' }, 'other bodies go upstream as streams')

  t.equal((await fetch(`${gateway}/api/status`)).status, 401, 'authz: false does not skip authentication')
  t.equal((await fetch(`${gateway}/api/status`, { headers: as(alice) })).status, 200)
  const undeclared = await fetch(`${gateway}/api/orders/7/refund`, { method: 'POST', headers: as(bob) })
  t.equal(undeclared.status, 403, 'a path no declared route matches falls to the default rule')
  t.equal((await undeclared.json() as { code: string }).code, 'PORTCULLIS_AUTHZ_NO_RULE')
  t.equal((await fetch(`${gateway}/healthz`)).status, 200, 'health stays public')
})

test('an absolute-form request target is routed and sent upstream by its path', async (t) => {
  const gateway = new URL(await startGateway(t, await startUpstream(t)))
  const socket = connect(Number(gateway.port), gateway.hostname)
  await once(socket, 'connect')
  socket.end(`GET http://${gateway.host}/api/orders/7 HTTP/1.1\r\nHost: ${gateway.host}\r\nx-api-key: ${bob.key}\r\nConnection: close\r\n\r\n`)
  let response = ''
  for await (const chunk of socket) response += String(chunk)
  t.match(response, /^HTTP\/1\.1 403 /, 'bob is not the owner, whatever form the target takes')
})

test('a declared route whose upstream is down answers 502', async (t) => {
  const down = Fastify()
  const url = await down.listen({ host: '127.0.0.1', port: 0 })
  await down.close()
  // Without the authz section, declared routes have no rules and only route.
  const app = await buildGateway({ upstreams: [{ prefix: '/api', url, routes: [{ method: 'DELETE', path: '/orders/:id' }] }] })
  const gateway = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  const res = await fetch(`${gateway}/api/orders/7`, { method: 'DELETE' })
  t.equal(res.status, 502)
  t.match(await res.json(), { code: 'PORTCULLIS_CORE_BAD_GATEWAY' })
})

test('IP rules from the configuration apply before anything else', async (t) => {
  const gateway = await startGateway(t, await startUpstream(t), { ipRules: { allow: ['10.0.0.0/8'] } })
  const res = await fetch(`${gateway}/api/status`, { headers: { 'x-api-key': alice.key } })
  t.equal(res.status, 403)
  t.match(await res.json(), { code: 'PORTCULLIS_AUTHZ_IP_DENIED' })
})

test('a declared resource is fetched from the upstream for ownership checks', async (t) => {
  const lookups: string[] = []
  const orders = Fastify()
  orders.get('/orders/:id', async (request, reply) => {
    lookups.push(`${request.url} key=${String(request.headers['x-api-key'])}`)
    const { id } = request.params as { id: string }
    if (id === 'broken') return reply.code(500).send({ error: 'db' })
    if (id === 'html') return reply.type('text/html').send('<p>alice</p>')
    if (id === 'bad') return reply.type('application/json').send('{"owner":')
    if (id === 'slow') return await new Promise((resolve) => setTimeout(() => resolve({ owner: 'alice' }), 2500))
    if (id === 'gone') return reply.code(410).send()
    if (id === 'empty') return reply.code(200).send()
    return id === '1' || id === 'a/b' ? { id, owner: 'alice' } : reply.code(404).send({ message: 'no such order' })
  })
  const upstream = await orders.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => orders.close())
  const app = await buildGateway({
    authn: { methods: { key: { type: 'api-key', keys: [alice.record, bob.record] } } },
    authz: {},
    upstreams: [{
      prefix: '/api',
      url: upstream,
      timeout: 1000,
      routes: [{ method: 'GET', path: '/orders/:id', resource: { path: '/orders/:id' }, authz: { owner: { resource: 'owner' } } }]
    }]
  })
  const gateway = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  const get = async (id: string, key = alice.key) => {
    const res = await fetch(`${gateway}/api/orders/${id}`, { headers: { 'x-api-key': key } })
    return { status: res.status, code: (await res.json() as { code?: string }).code }
  }
  t.same(await get('1'), { status: 200, code: undefined })
  t.same(await get('1', bob.key), { status: 403, code: 'PORTCULLIS_AUTHZ_NOT_OWNER' })
  t.same(await get('9'), { status: 403, code: 'PORTCULLIS_AUTHZ_NOT_OWNER' }, 'no such order: nobody owns it')
  t.same(await get('gone'), { status: 403, code: 'PORTCULLIS_AUTHZ_NOT_OWNER' })
  t.same(await get('a%2Fb'), { status: 200, code: undefined }, 'the parameter is encoded into the lookup path')
  t.same(await get('..%2F..%2Fadmin'), { status: 403, code: 'PORTCULLIS_AUTHZ_NOT_OWNER' })
  for (const id of ['broken', 'html', 'bad', 'empty']) t.same(await get(id), { status: 502, code: 'PORTCULLIS_CORE_BAD_GATEWAY' }, id)
  t.same(await get('slow'), { status: 504, code: 'PORTCULLIS_CORE_GATEWAY_TIMEOUT' })
  t.ok(lookups.includes('/orders/a%2Fb key=undefined'), 'the lookup carries no credential of the client')
  t.ok(lookups.includes('/orders/..%2F..%2Fadmin key=undefined'), 'and cannot climb out of its path')
  const down = Fastify()
  const downUrl = await down.listen({ host: '127.0.0.1', port: 0 })
  await down.close()
  const unreachable = await buildGateway({
    authn: { methods: { key: { type: 'api-key', keys: [alice.record] } } },
    authz: {},
    upstreams: [{ prefix: '/api', url: downUrl, routes: [{ method: 'GET', path: '/orders/:id', resource: { path: '/orders/:id' }, authz: { when: 'resource != null' } }] }]
  })
  t.teardown(() => unreachable.close())
  const res = await unreachable.inject({ url: '/api/orders/1', headers: { 'x-api-key': alice.key } })
  t.equal(res.statusCode, 502, 'an upstream that cannot be reached')
  t.notMatch(res.body, /ECONNREFUSED|127\.0\.0\.1/)
})
