import { test } from 'tap'
import Fastify from 'fastify'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createApiKey } from '@portcullis/authn'
import { main } from '../src/cli-main.js'
import { previewPolicy, startPolicyGateway } from '../src/index.js'

const alice = createApiKey({ id: 'alice-key', owner: { id: 'alice', type: 'user', roles: ['user'], scopes: ['notes:write'] } })
const bob = createApiKey({ id: 'bob-key', owner: { id: 'bob', type: 'user', roles: ['admin'] } })

test('policy preview: recorded traffic judged again by a candidate, offline, with exact counts', async (t) => {
  const upstream = Fastify()
  upstream.addContentTypeParser('*', (_request, payload, done) => { payload.resume(); payload.on('end', () => { done(null) }) })
  upstream.all('/*', async () => ({ ok: true }))
  const url = await upstream.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => upstream.close())
  const dir = t.testdir()
  const policy = (listRole: string, notesScope: string): Record<string, unknown> => ({
    version: 1,
    ipRateLimit: { limits: [{ name: 'ip', limit: 1000, window: '1m' }] },
    authn: { methods: { keys: { type: 'api-key', keys: [alice.record, bob.record] } } },
    authz: { roles: { user: {}, admin: { inherits: ['user'] } } },
    upstreams: [{
      prefix: '/api',
      url,
      routes: [
        { method: 'GET', path: '/orders', authz: { anyRole: [listRole] } },
        { method: 'POST', path: '/notes', authz: { anyScope: [notesScope] } },
        { method: 'PUT', path: '/files/:id', authz: { anyRole: ['user'] } }
      ]
    }],
    audit: { sinks: [{ type: 'file', path: 'audit.log', flushInterval: 10 }], body: true }
  })
  const file = join(dir, 'policy.json')
  await writeFile(file, JSON.stringify(policy('user', 'notes:write')))
  const gateway = await startPolicyGateway({ file, host: '127.0.0.1', port: 0, watch: false })
  const gatewayUrl = await gateway.listen()
  const send = async (method: string, path: string, key: string | null, body?: { type: string, text: string }): Promise<number> => {
    const response = await fetch(`${gatewayUrl}${path}`, { method, headers: { ...(key === null ? {} : { 'x-api-key': key }), ...(body === undefined ? {} : { 'content-type': body.type }) }, ...(body === undefined ? {} : { body: body.text }) })
    await response.arrayBuffer()
    return response.status
  }
  // Recorded: alice lists (allowed) 3 times, bob lists once; alice posts a note (allowed, its JSON
  // body recorded); bob posts one (denied, and a denied request's body is not recorded); alice
  // uploads a file (streamed: never recorded); one request without credentials, one with an
  // unknown key.
  const statuses = [
    await send('GET', '/api/orders', alice.key), await send('GET', '/api/orders', alice.key), await send('GET', '/api/orders', alice.key),
    await send('GET', '/api/orders', bob.key),
    await send('POST', '/api/notes', alice.key, { type: 'application/json', text: '{"text":"hi"}' }),
    await send('POST', '/api/notes', bob.key, { type: 'application/json', text: '{"text":"hi"}' }),
    await send('PUT', '/api/files/1', alice.key, { type: 'application/octet-stream', text: 'bytes' }),
    await send('GET', '/api/orders', null),
    await send('GET', '/api/orders', 'no-such-key-000000000000000000000')
  ]
  t.same(statuses, [200, 200, 200, 200, 200, 403, 200, 401, 401])
  await gateway.close()

  // The candidate: listing orders is for admins only, and notes need a scope nobody has.
  const candidate = join(dir, 'candidate.json')
  await writeFile(candidate, JSON.stringify(policy('admin', 'notes:admin')))
  const report = await previewPolicy(candidate, [join(dir, 'audit.log')])
  t.match(report, {
    version: /^[0-9a-f]{16}$/,
    records: 9,
    replayed: 5,
    skipped: { noPrincipal: 2, limits: 0, body: 2 },
    changed: 4,
    wouldDeny: 4,
    wouldAllow: 0,
    otherReason: 0,
    routes: [['GET /api/orders', 3], ['POST /api/notes', 1]],
    principals: [['alice', 4]]
  })
  t.same(report.examples[0], { method: 'GET', path: '/api/orders', principal: 'alice', recorded: 'allow', candidate: 'deny PORTCULLIS_AUTHZ_FORBIDDEN' })

  // The same through the command; a refused candidate names its fault.
  const out: string[] = []
  const err: string[] = []
  const io = { stdout: (line: string) => { out.push(line) }, stderr: (line: string) => { err.push(line) }, logger: false as const }
  t.equal(await main(['policy', 'preview', candidate, '--from', join(dir, 'audit.log')], io, {}), 0)
  t.match(out[0], /^candidate\.json \(version [0-9a-f]{16}\) on 9 recorded requests: 5 judged again, 4 would change \(4 would be denied, 0 allowed, 0 denied for another reason\)$/)
  t.same(out.slice(1, 5), [
    '  not judged again: 2 without a principal (credentials are not recorded), 0 decided by authentication, mTLS or a limit, 2 whose body was not recorded',
    '  route GET /api/orders: 3',
    '  route POST /api/notes: 1',
    '  principal alice: 4'
  ])
  await writeFile(join(dir, 'broken.json'), '{"version": 1, "upstreams": 3}')
  t.equal(await main(['policy', 'preview', join(dir, 'broken.json'), '--from', join(dir, 'audit.log')], io, {}), 1)
  t.match(err, ['broken.json: refused at schema', /upstreams: must be array/])
  t.equal(await main(['policy', 'preview', candidate, '--from', join(dir, 'missing.log')], io, {}), 1)
  t.match(err.at(-1), /^portcullis policy preview: ENOENT/)
})

test('policy preview: a limit\'s denial is not judged again, a signed candidate is checked, a key file is read', async (t) => {
  const dir = t.testdir()
  const record = (decision: Record<string, string>, ip = '127.0.0.1', user = 'carol'): string => JSON.stringify({
    client: { ip },
    event: { action: 'http-request', type: ['denied'] },
    http: { request: { method: 'GET' } },
    url: { path: '/api/x', query: 'page=2' },
    user: { id: user, roles: [] },
    portcullis: { route: '/api/*', principal: { method: 'api-key', type: 'user', scopes: [], plan: 'free', tenant: 't1' }, decision }
  })
  await writeFile(join(dir, 'audit.log'), [
    record({ plugin: '@portcullis/rate-limit', outcome: 'deny', reason: 'PORTCULLIS_RATE_LIMIT_EXCEEDED' }),
    record({ plugin: '@portcullis/authz', outcome: 'deny', reason: 'PORTCULLIS_AUTHZ_NO_RULE' }),
    record({ plugin: '@portcullis/authz', outcome: 'deny', reason: 'PORTCULLIS_AUTHZ_NO_RULE' }, '10.0.0.1', 'bea'),
    JSON.stringify({ event: { action: 'policy-activate' } }),
    ''
  ].join('\n'))
  const candidate = join(dir, 'candidate.json')
  // The candidate opens the upstream, but refuses the loopback address.
  await writeFile(candidate, JSON.stringify({ version: 1, ipRules: { deny: ['127.0.0.1/32'] }, upstreams: [{ prefix: '/api', url: 'http://127.0.0.1:9', public: true }] }))
  const report = await previewPolicy(candidate, [join(dir, 'audit.log')])
  t.match(report, { records: 3, replayed: 2, skipped: { limits: 1 }, changed: 2, wouldAllow: 1, otherReason: 1, routes: [['GET /api/*', 2]], principals: [['bea', 1], ['carol', 1]] })
  t.match(report.examples, [{ recorded: 'deny PORTCULLIS_AUTHZ_NO_RULE', candidate: /^deny PORTCULLIS_AUTHZ_IP/ }, { recorded: 'deny PORTCULLIS_AUTHZ_NO_RULE', candidate: 'allow' }])
  const { generateKeyPairSync } = await import('node:crypto')
  const { publicKey } = generateKeyPairSync('ed25519')
  const keyFile = join(dir, 'public.pem')
  await writeFile(keyFile, publicKey.export({ type: 'spki', format: 'pem' }))
  const err: string[] = []
  const io = { stdout: () => {}, stderr: (line: string) => { err.push(line) }, logger: false as const }
  t.equal(await main(['policy', 'preview', candidate, '--from', join(dir, 'audit.log'), '--public-key', keyFile], io, {}), 1)
  t.same(err[0], 'candidate.json: refused at signature')
})
