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
