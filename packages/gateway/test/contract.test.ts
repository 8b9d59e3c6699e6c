import { test, type Test } from 'tap'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import { buildGateway, loadGatewayConfig, portcullis, type GatewayConfig } from '../src/index.js'

const CONTRACT = fileURLToPath(new URL('./fixtures/orders.openapi.yaml', import.meta.url))

// A real upstream on a loopback port that answers with what it received.
async function upstream (t: Test): Promise<string> {
  const app = Fastify()
  app.all('/*', async (request, reply) => reply.code(request.method === 'POST' ? 201 : 200).send({ method: request.method, url: request.url, body: request.body ?? null }))
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  return url
}

async function gateway (t: Test, config: GatewayConfig): Promise<string> {
  const app = await buildGateway(config)
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  return url
}

const post = (url: string, body: string, type = 'application/json'): Promise<Response> => fetch(url, { method: 'POST', body, headers: { 'content-type': type } })

test('an upstream with a contract: its operations are routes, checked before they are proxied; anything else is refused', async (t) => {
  const url = await gateway(t, { upstreams: [{ prefix: '/api', url: await upstream(t), openapi: CONTRACT, validation: { bodyLimit: 256 } }] })
  const created = await post(`${url}/api/orders`, '{"item":"lamp","qty":2}')
  t.equal(created.status, 201)
  t.same(await created.json(), { method: 'POST', url: '/orders', body: { item: 'lamp', qty: 2 } }, 'proxied as it came')
  const zero = await post(`${url}/api/orders`, '{"item":"x","qty":0}')
  t.equal(zero.status, 400)
  t.match(await zero.json(), { code: 'PORTCULLIS_SCHEMA_INVALID', errors: [{ in: 'body', pointer: '/qty', rule: 'minimum' }] })
  t.equal((await post(`${url}/api/orders`, '{"item":"x","qty":1,"admin":true}')).status, 400, 'mass assignment')
  t.equal((await post(`${url}/api/orders`, '{"__proto__":{"x":1},"item":"x","qty":1}')).status, 400, 'prototype poisoning')
  t.equal((await post(`${url}/api/orders`, 'item=x', 'text/plain')).status, 415)
  t.equal((await post(`${url}/api/orders`, JSON.stringify({ item: 'x', qty: 1, pad: 'y'.repeat(300) }))).status, 413)
  t.equal((await fetch(`${url}/api/orders/12`)).status, 200)
  t.equal((await fetch(`${url}/api/orders/twelve`)).status, 400)
  const shadow = await fetch(`${url}/api/admin/export`)
  t.equal(shadow.status, 404, 'a path the contract does not have never reaches the upstream')
  t.equal(((await shadow.json()) as { code: string }).code, 'PORTCULLIS_SCHEMA_UNKNOWN_OPERATION')
  t.equal((await fetch(`${url}/api/orders/12`, { method: 'DELETE' })).status, 405)
  t.equal((await fetch(`${url}/healthz`)).status, 200)
  t.equal((await fetch(`${url}/api/orders`, { method: 'HEAD' })).status, 200, 'HEAD, answered by the GET route')
  t.equal((await rawStatus(url, 'TRACE /api/orders/1')), 404, 'TRACE is never proxied, whatever the contract says')
})

async function rawStatus (url: string, requestLine: string): Promise<number> {
  const { connect } = await import('node:net')
  const { port } = new URL(url)
  return await new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1', () => socket.end(`${requestLine} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`))
    let answer = ''
    socket.on('data', (chunk) => { answer += chunk.toString() })
    socket.on('end', () => resolve(Number(answer.slice(9, 12))))
    socket.on('error', reject)
  })
}

test('a contract next to the configuration file, named by a relative path; validation options need a contract', async (t) => {
  const directory = await mkdtemp(join(tmpdir(), 'portcullis-contract-'))
  await writeFile(join(directory, 'gateway.json'), JSON.stringify({ upstreams: [{ prefix: '/api', url: 'http://127.0.0.1:9', openapi: 'orders.yaml' }] }))
  await writeFile(join(directory, 'orders.yaml'), 'openapi: 3.0.3\ninfo: { title: t, version: "1" }\npaths: {}\n')
  const config = await loadGatewayConfig(join(directory, 'gateway.json'))
  t.equal(config.upstreams[0]?.openapi, join(directory, 'orders.yaml'))
  await writeFile(join(directory, 'absolute.json'), JSON.stringify({ upstreams: [{ prefix: '/api', url: 'http://127.0.0.1:9', openapi: CONTRACT }] }))
  t.equal((await loadGatewayConfig(join(directory, 'absolute.json'))).upstreams[0]?.openapi, CONTRACT)
  await t.rejects(buildGateway({ upstreams: [{ prefix: '/api', url: 'http://127.0.0.1:9', validation: { maxDepth: 3 } }] }), /upstreams\[0\]\.validation must be used with openapi/)
  await t.rejects(buildGateway({ upstreams: [{ prefix: '/api', url: 'http://127.0.0.1:9', openapi: 42 as never }] }), /upstreams\[0\]\.openapi must be the path of an OpenAPI document/)
  await t.rejects(buildGateway({ upstreams: [{ prefix: '/api', url: 'http://127.0.0.1:9', openapi: { openapi: '3.1.0' } }] }), /upstreams\[0\]\.openapi/)
})

test('declared routes keep their rules; the contract adds the operations they do not cover', async (t) => {
  const url = await gateway(t, {
    authz: { defaultRule: { anyRole: ['nobody'] } },
    upstreams: [{ prefix: '/api', url: await upstream(t), openapi: CONTRACT, routes: [{ method: 'GET', path: '/orders', authz: false }] }]
  })
  t.equal((await fetch(`${url}/api/orders`)).status, 200, 'the declared public route')
  t.equal((await fetch(`${url}/api/orders/1`)).status, 401, 'an operation of the contract, under the default rule')
})

test('the meta-plugin registers schema validation at step 8', async (t) => {
  const app = Fastify()
  await app.register(portcullis, { schemaValidate: { openapi: CONTRACT } })
  app.post('/orders', async () => 'ok')
  t.equal((await app.inject({ method: 'POST', url: '/orders', payload: { item: 'x', qty: 101 } })).statusCode, 400)
})
