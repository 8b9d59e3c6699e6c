import t, { test } from 'tap'
import { createServer } from 'node:http'
import { once } from 'node:events'
import type { FastifyInstance } from 'fastify'
import type { JwtRemoteKeys } from '../src/index.js'
import { build } from './helpers.js'
import { pair, sign, claims } from './jwt-helpers.js'
import { RESOURCE, signingKey, TestProvider } from './oidc-helpers.js'

const firstKey = signingKey('key-1')
const provider = await new TestProvider().start([firstKey])
t.teardown(() => provider.stop())

function method (extra: Partial<JwtRemoteKeys> = {}): JwtRemoteKeys {
  return { type: 'jwt', issuer: provider.issuer, audience: RESOURCE, discovery: true, algorithms: ['ES256'], typ: 'at+jwt', ...extra }
}

const call = async (app: FastifyInstance, token: string) => app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })

test('tokens from a real OpenID provider, keys found through discovery', async (t) => {
  const app = await build({ methods: { idp: method() } })
  const token = await provider.token('orders:read orders:write')
  const res = await call(app, token)
  t.equal(res.statusCode, 200)
  t.match(res.json().principal, { id: 'billing', type: 'service', method: 'jwt', scopes: ['orders:read', 'orders:write'] })
  t.equal(provider.hits.get('/.well-known/openid-configuration'), 1)
  t.equal(provider.hits.get('/jwks'), 1)
  await call(app, await provider.token())
  t.equal(provider.hits.get('/jwks'), 1, 'keys are cached')
})

test('the same provider through an explicit jwksUri', async (t) => {
  const app = await build({ methods: { idp: method({ discovery: undefined, jwksUri: `${provider.issuer}/jwks` }) } })
  t.equal((await call(app, await provider.token())).statusCode, 200)
})

test('key rotation mid-flight: new tokens verify at once, old ones until their key is gone', async (t) => {
  const app = await build({ methods: { idp: method({ remote: { cooldownSeconds: 0 } }) } })
  const before = await provider.token()
  t.equal((await call(app, before)).statusCode, 200)
  const fetches = provider.hits.get('/jwks') ?? 0
  const secondKey = signingKey('key-2')
  provider.useKeys([secondKey, firstKey])
  const after = await provider.token()
  t.equal(JSON.parse(Buffer.from(after.split('.')[0] as string, 'base64url').toString()).kid, 'key-2')
  t.equal((await call(app, after)).statusCode, 200, 'an unknown kid fetches the key set again')
  t.equal(provider.hits.get('/jwks'), fetches + 1)
  t.equal((await call(app, before)).statusCode, 200, 'the old key is still published')
  provider.useKeys([firstKey])
})

test('an unknown kid refetches at most once per cooldown, whatever an attacker sends', async (t) => {
  const app = await build({ methods: { idp: method({ remote: { cooldownSeconds: 30 } }) } })
  t.equal((await call(app, await provider.token())).statusCode, 200)
  const fetches = provider.hits.get('/jwks') ?? 0
  const attacker = pair('ec')
  for (let i = 0; i < 20; i++) {
    const forged = sign(claims({ iss: provider.issuer, aud: RESOURCE }), { key: attacker.privatePem, algorithm: 'ES256', kid: `made-up-${i}`, header: { typ: 'at+jwt' } })
    t.equal((await call(app, forged)).statusCode, 401)
  }
  const noKid = sign(claims({ iss: provider.issuer, aud: RESOURCE }), { key: attacker.privatePem, algorithm: 'ES256', header: { typ: 'at+jwt' } })
  t.equal((await call(app, noKid)).statusCode, 401, 'no kid: the provider\'s key does not verify a forger\'s signature')
  t.ok((provider.hits.get('/jwks') ?? 0) <= fetches + 1, `at most one refetch (${(provider.hits.get('/jwks') ?? 0) - fetches})`)
})

test('algorithms are pinned by configuration, not by the provider or the token', async (t) => {
  const app = await build({ methods: { idp: method({ algorithms: ['RS256'] }) } })
  const res = await call(app, await provider.token())
  t.equal(res.statusCode, 401, 'an ES256 token where only RS256 is configured')
  t.equal(res.json().code, 'PORTCULLIS_AUTHN_INVALID_TOKEN')
})

test('a provider that is down means 503, never a guess', async (t) => {
  const down = await new TestProvider().start([firstKey])
  const issuer = down.issuer
  const token = await down.token()
  await down.stop()
  const app = await build({ methods: { idp: method({ issuer, remote: { timeoutMs: 500 } }) } })
  const res = await call(app, token)
  t.equal(res.statusCode, 503)
  t.equal(res.headers['retry-after'], '5')
  t.equal(res.json().code, 'PORTCULLIS_AUTHN_PROVIDER_UNAVAILABLE')
})

test('a provider that answers errors is asked again only after a pause', async (t) => {
  let asked = 0
  const broken = createServer((_req, res) => { asked++; res.writeHead(500).end() })
  broken.listen(0, '127.0.0.1')
  await once(broken, 'listening')
  t.teardown(() => broken.close())
  const issuer = `http://127.0.0.1:${(broken.address() as { port: number }).port}`
  const app = await build({ methods: { idp: method({ issuer }) } })
  const token = await provider.token()
  const statuses = await Promise.all([call(app, token), call(app, token), call(app, token)])
  t.same(statuses.map((r) => r.statusCode), [503, 503, 503])
  t.equal((await call(app, token)).statusCode, 503)
  t.equal(asked, 1, 'one discovery for concurrent requests, none right after a failure')
  await new Promise((resolve) => setTimeout(resolve, 1100))
  t.equal((await call(app, token)).statusCode, 503)
  t.equal(asked, 2, 'tried again after the pause')
})

test('a discovery document for another issuer is not trusted', async (t) => {
  const app = await build({ methods: { idp: method({ issuer: `${provider.issuer}/`, remote: { timeoutMs: 1000 } }) } })
  const res = await call(app, await provider.token())
  t.equal(res.statusCode, 503, 'the provider says it is someone else: no keys at all')
})

test('discovery that points nowhere useful fails closed', async (t) => {
  let jwksUri = ''
  const fake = createServer((_req, res) => { res.setHeader('content-type', 'application/json').end(JSON.stringify({ issuer: fakeIssuer, jwks_uri: jwksUri })) })
  fake.listen(0, '127.0.0.1')
  await once(fake, 'listening')
  t.teardown(() => fake.close())
  const fakeIssuer = `http://127.0.0.1:${(fake.address() as { port: number }).port}`
  const token = await provider.token()
  jwksUri = 'http://keys.example.com/jwks'
  const plainHttp = await build({ methods: { idp: method({ issuer: fakeIssuer }) } })
  t.equal((await call(plainHttp, token)).statusCode, 503, 'a jwks_uri over plain HTTP off loopback is not used')
  jwksUri = `${fakeIssuer.replace(/:\d+$/, ':1')}/jwks`
  const closed = await build({ methods: { idp: method({ issuer: fakeIssuer, remote: { timeoutMs: 500 } }) } })
  const res = await call(closed, token)
  t.equal(res.statusCode, 503, 'a key set that cannot be fetched')
  t.equal(res.json().detail, 'The identity provider cannot be reached to check the credentials')
})

test('remote-key options are checked at startup', async (t) => {
  const cases: Array<[Partial<JwtRemoteKeys> & Record<string, unknown>, RegExp]> = [
    [{ jwksUri: `${provider.issuer}/jwks` }, /given exactly one of keys, jwksUri or discovery: true/],
    [{ discovery: undefined }, /given exactly one of keys, jwksUri or discovery: true/],
    [{ discovery: false as never }, /discovery must be true/],
    [{ discovery: 'yes' as never }, /discovery must be true/],
    [{ algorithms: ['HS256'] }, /algorithms must be a non-empty list of asymmetric algorithms/],
    [{ algorithms: [] }, /algorithms must be a non-empty list of asymmetric algorithms/],
    [{ issuer: 'http://idp.example.com' }, /issuer must be an https:\/\/ URL \(http:\/\/ only on loopback\)/],
    [{ issuer: 'not a url' }, /issuer must be an https:\/\/ URL/],
    [{ discovery: undefined, jwksUri: 'https://user:pw@idp.example.com/jwks' }, /jwksUri must be a URL without credentials/],
    [{ remote: { timeoutMs: 0 } }, /remote\.timeoutMs must be a positive number/],
    [{ remote: { cooldownSeconds: -1 } }, /remote\.cooldownSeconds must be a number of seconds/],
    [{ remote: { retries: 3 } as never }, /remote\.retries is not a known option/],
    [{ keys: [] } as never, /given exactly one of keys, jwksUri or discovery/]
  ]
  for (const [extra, message] of cases) {
    await t.rejects(build({ methods: { idp: { ...method(), ...extra } as JwtRemoteKeys } }), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, message.source)
  }
  await t.rejects(build({ methods: { idp: { type: 'jwt', issuer: 'https://i', audience: 'a', keys: [{ algorithms: ['ES256'], key: pair('ec').publicPem }], algorithms: ['ES256'] } as never } }), /algorithms must be set per key/)
})
