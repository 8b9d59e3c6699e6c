import t, { test } from 'tap'
import { createServer } from 'node:http'
import { once } from 'node:events'
import type { FastifyInstance } from 'fastify'
import { MemoryRevocationStore, type IntrospectionMethodOptions } from '../src/index.js'
import { build } from './helpers.js'
import { GATEWAY, OPAQUE_RESOURCE, RESOURCE, signingKey, TestProvider } from './oidc-helpers.js'

const provider = await new TestProvider().start([signingKey('key-1')])
t.teardown(() => provider.stop())

function method (extra: Partial<IntrospectionMethodOptions> = {}): IntrospectionMethodOptions {
  return { type: 'introspection', endpoint: `${provider.issuer}/token/introspection`, clientId: GATEWAY.id, clientSecret: GATEWAY.secret, issuer: provider.issuer, audience: OPAQUE_RESOURCE, ...extra }
}
const call = async (app: FastifyInstance, token: string) => app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })

test('opaque tokens are introspected at the provider', async (t) => {
  const app = await build({ methods: { ledger: method() } })
  const token = await provider.token('orders:read', OPAQUE_RESOURCE)
  t.notMatch(token, /^ey/, 'an opaque token, not a JWT')
  const res = await call(app, token)
  t.equal(res.statusCode, 200)
  t.match(res.json().principal, { id: 'billing', type: 'service', method: 'introspection', scopes: ['orders:read'] })
  const asked = provider.hits.get('/token/introspection') ?? 0
  await call(app, token)
  t.equal(provider.hits.get('/token/introspection'), asked, 'the answer is reused')
  const concurrent = await provider.token('orders:read', OPAQUE_RESOURCE)
  await Promise.all([call(app, concurrent), call(app, concurrent), call(app, concurrent)])
  t.equal(provider.hits.get('/token/introspection'), asked + 1, 'one question for concurrent requests')
})

test('revoked at the provider: refused once the cached answer runs out', async (t) => {
  const app = await build({ methods: { ledger: method({ cacheSeconds: 0 }) } })
  const token = await provider.token('orders:read', OPAQUE_RESOURCE)
  t.equal((await call(app, token)).statusCode, 200)
  await provider.revoke(token)
  const res = await call(app, token)
  t.equal(res.statusCode, 401)
  t.equal(res.headers['www-authenticate'], 'Bearer realm="api", error="invalid_token"')
  t.equal((await call(app, 'not-a-token-anyone-issued')).statusCode, 401, 'unknown tokens are inactive')
})

test('the answer must be for us: issuer and audience', async (t) => {
  const token = await provider.token('orders:read', OPAQUE_RESOURCE)
  t.equal((await call(await build({ methods: { ledger: method({ audience: RESOURCE }) } }), token)).statusCode, 401, 'another audience')
  t.equal((await call(await build({ methods: { ledger: method({ issuer: 'https://other.example.com' }) } }), token)).statusCode, 401, 'another issuer')
  t.equal((await call(await build({ methods: { ledger: method({ audience: undefined, issuer: undefined }) } }), token)).statusCode, 200, 'checks are optional')
})

test('the gateway must authenticate to the provider', async (t) => {
  const app = await build({ methods: { ledger: method({ clientSecret: 'wrong-secret' }) } })
  const res = await call(app, await provider.token('orders:read', OPAQUE_RESOURCE))
  t.equal(res.statusCode, 503, 'a provider that refuses the gateway is a provider that cannot answer')
  t.equal(res.json().code, 'PORTCULLIS_AUTHN_PROVIDER_UNAVAILABLE')
})

test('a JWT goes to its issuer, anything else to introspection', async (t) => {
  const app = await build({
    methods: {
      orders: { type: 'jwt', issuer: provider.issuer, audience: RESOURCE, discovery: true, algorithms: ['ES256'] },
      ledger: method()
    }
  })
  const jwt = await call(app, await provider.token())
  t.equal(jwt.statusCode, 200)
  t.equal(jwt.json().principal.method, 'jwt')
  const asked = provider.hits.get('/token/introspection') ?? 0
  t.equal((await call(app, await provider.token('orders:read', OPAQUE_RESOURCE))).statusCode, 200)
  t.equal(provider.hits.get('/token/introspection'), asked + 1, 'the opaque token was introspected')
  const onlyJwt = await build({ methods: { a: { type: 'jwt', issuer: provider.issuer, audience: RESOURCE, discovery: true, algorithms: ['ES256'] }, b: { type: 'jwt', issuer: 'https://b.example.com', audience: RESOURCE, discovery: true, algorithms: ['ES256'] } } })
  t.equal((await call(onlyJwt, 'opaque-token-value')).statusCode, 401, 'no method claims it')
})

test('answers that cannot be trusted fail closed', async (t) => {
  let answer: unknown = {}
  let status = 200
  let delay = 0
  const fake = createServer((_req, res) => {
    setTimeout(() => { res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(answer)) }, delay)
  })
  fake.listen(0, '127.0.0.1')
  await once(fake, 'listening')
  t.teardown(() => { fake.closeAllConnections(); fake.close() })
  const endpoint = `http://127.0.0.1:${(fake.address() as { port: number }).port}/introspect`
  const app = await build({ methods: { fake: method({ endpoint, issuer: undefined, audience: 'api', timeoutMs: 300, cacheSeconds: 0 }) } })
  const now = Math.floor(Date.now() / 1000)
  const cases: Array<[unknown, number, string]> = [
    [{ active: true, sub: 'a', aud: 'api', exp: now + 60 }, 200, 'active'],
    [{ active: true, sub: 'a', aud: ['x', 'api'] }, 200, 'an audience list, no exp'],
    [{ active: 'true', sub: 'a', aud: 'api' }, 401, 'active must be the boolean true'],
    [{ active: true, sub: 'a', aud: 'api', exp: now - 1 }, 401, 'expired, whatever active says'],
    [{ active: true, sub: 'a', aud: 'api', exp: 'never' }, 401, 'exp that is not a number'],
    [{ active: true, sub: 'a', aud: 'api', nbf: now + 60 }, 401, 'not yet valid'],
    [{ active: true, sub: 'a', aud: 'other' }, 401, 'not our audience'],
    [{ active: true, sub: 'a' }, 401, 'no audience'],
    [{ active: true, aud: 'api' }, 401, 'no subject and no client'],
    [null, 503, 'null is no answer']
  ]
  for (const [body, expected, label] of cases) {
    answer = body
    t.equal((await call(app, 'opaque-1')).statusCode, expected, label)
  }
  status = 500
  t.equal((await call(app, 'opaque-2')).statusCode, 503, 'a provider error')
  status = 200
  // Far slower than the 300 ms timeout, so that a pause of the machine cannot blur the two.
  delay = 2000
  const started = Date.now()
  t.equal((await call(app, 'opaque-3')).statusCode, 503, 'a slow provider')
  t.ok(Date.now() - started < 1500, 'answered at the timeout')
})

test('a short cache never outlives the token', async (t) => {
  let asked = 0
  // The first answer sets the expiry: at least a whole second ahead, whenever in the second it comes.
  let exp = 0
  const fake = createServer((req, res) => {
    asked++
    let body = ''
    req.on('data', (chunk: Buffer) => { body += chunk.toString() })
    req.on('end', () => {
      const token = new URLSearchParams(body).get('token')
      if (exp === 0) exp = Math.ceil(Date.now() / 1000) + 1
      const answer = token === 'no-exp' ? { active: true, sub: 'a', jti: 'intro-1' } : { active: true, sub: 'a', exp }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer))
    })
  })
  fake.listen(0, '127.0.0.1')
  await once(fake, 'listening')
  t.teardown(() => { fake.closeAllConnections(); fake.close() })
  const app = await build({ methods: { fake: method({ endpoint: `http://127.0.0.1:${(fake.address() as { port: number }).port}/i`, issuer: undefined, audience: undefined, cacheSeconds: 3600, cacheSize: 1 }) } })
  t.equal((await call(app, 'short-lived')).statusCode, 200)
  t.equal((await call(app, 'other')).statusCode, 200, 'a full cache makes room')
  await new Promise((resolve) => setTimeout(resolve, exp * 1000 - Date.now() + 100))
  t.equal((await call(app, 'other')).statusCode, 401, 'expired: the cached answer is not used, and the provider says it expired')
  t.equal(asked, 3)
  t.equal((await call(app, 'no-exp')).statusCode, 200)
  t.equal((await call(app, 'no-exp')).statusCode, 200)
  t.equal(asked, 4, 'without exp, cached for cacheSeconds')
})

test('introspected tokens can be revoked by jti', async (t) => {
  const fake = createServer((_req, res) => { res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ active: true, sub: 'a', jti: 'op-7' })) })
  fake.listen(0, '127.0.0.1')
  await once(fake, 'listening')
  t.teardown(() => { fake.closeAllConnections(); fake.close() })
  const revocation = new MemoryRevocationStore()
  const app = await build({ methods: { fake: method({ endpoint: `http://127.0.0.1:${(fake.address() as { port: number }).port}/i`, issuer: undefined, audience: undefined }) }, revocation })
  t.equal((await call(app, 'opaque')).statusCode, 200)
  await revocation.revoke('introspection:op-7', Date.now() + 60_000)
  const res = await call(app, 'opaque')
  t.equal(res.statusCode, 401)
  t.equal(res.headers['www-authenticate'], 'Bearer realm="api", error="invalid_token"')
})

test('introspection options are checked at startup, secrets never printed', async (t) => {
  const cases: Array<[Partial<IntrospectionMethodOptions> & Record<string, unknown>, RegExp]> = [
    [{ endpoint: 'http://idp.example.com/introspect' }, /endpoint must be an https:\/\/ URL/],
    [{ clientId: '' }, /clientId must be a non-empty string$/],
    [{ clientSecret: 42 as never }, /clientSecret must be a non-empty string$/],
    [{ audience: [] }, /audience must be a string or a non-empty list/],
    [{ issuer: '' }, /issuer must be a non-empty string/],
    [{ timeoutMs: 0 }, /timeoutMs must be a whole number, 1 or more/],
    [{ cacheSeconds: -1 }, /cacheSeconds must be a whole number, 0 or more/],
    [{ cacheSize: 0 }, /cacheSize must be a whole number, 1 or more/],
    [{ tokenTypeHint: 'x' }, /tokenTypeHint is not a known option/]
  ]
  for (const [extra, message] of cases) {
    await t.rejects(build({ methods: { ledger: { ...method(), ...extra } as IntrospectionMethodOptions } }), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, message.source)
  }
})
