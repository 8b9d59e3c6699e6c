// Attacks on bearer tokens, after RFC 8725 (JWT best current practices) and published JWT
// vulnerabilities. Every one must end in a refusal that says nothing about why.
import { test, type Test } from 'tap'
import { createServer } from 'node:http'
import { once } from 'node:events'
import { createPublicKey } from 'node:crypto'
import Fastify from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { portcullisAuthn, type AuthnOptions, type JwtMethodOptions } from '../src/index.js'
import { build } from './helpers.js'
import { AUDIENCE, b64, claims, ec, forge, hmacSecret, ISSUER, pair, rsa, sign } from './jwt-helpers.js'

const options: JwtMethodOptions = {
  type: 'jwt',
  issuer: ISSUER,
  audience: AUDIENCE,
  keys: [
    { kid: 'rsa-1', algorithms: ['RS256'], key: rsa.publicPem },
    { kid: 'ec-1', algorithms: ['ES256'], key: ec.publicPem }
  ]
}
const app = await build({ methods: { jwt: options } })
const attacker = pair('rsa')
const good = sign(claims(), { key: rsa.privatePem, algorithm: 'RS256', kid: 'rsa-1' })

async function refused (t: Test, token: string, label: string): Promise<void> {
  const res = await app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })
  t.equal(res.statusCode, 401, label)
  t.equal(res.headers['www-authenticate'], 'Bearer realm="api", error="invalid_token"', `${label}: RFC 6750 challenge`)
  t.same(res.json(), {
    type: 'urn:portcullis:problem:PORTCULLIS_AUTHN_INVALID_TOKEN',
    title: 'Unauthorized',
    status: 401,
    detail: 'The access token is not valid',
    instance: '/me',
    code: 'PORTCULLIS_AUTHN_INVALID_TOKEN'
  }, `${label}: the same generic answer`)
}

test('the baseline token is accepted', async (t) => {
  t.equal((await app.inject({ url: '/me', headers: { authorization: `Bearer ${good}` } })).statusCode, 200)
})

test('alg "none" in any spelling', async (t) => {
  for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
    await refused(t, forge({ alg, kid: 'rsa-1' }, claims()), `alg ${alg}`)
    await refused(t, forge({ alg, kid: 'rsa-1' }, claims()) + 'c2ln', `alg ${alg} with a signature`)
  }
})

test('algorithm confusion: HS256 signed with the RSA public key as the secret', async (t) => {
  await refused(t, forge({ alg: 'HS256', kid: 'rsa-1' }, claims(), { hmac: rsa.publicPem }), 'PEM as HMAC secret')
  const der = createPublicKey(rsa.publicPem).export({ type: 'spki', format: 'der' })
  await refused(t, forge({ alg: 'HS256', kid: 'rsa-1' }, claims(), { hmac: der }), 'DER as HMAC secret')
  await refused(t, sign(claims(), { key: rsa.privatePem, algorithm: 'RS512', kid: 'rsa-1' }), 'an algorithm the key is not allowed')
  await refused(t, sign(claims(), { key: rsa.privatePem, algorithm: 'RS256', kid: 'ec-1' }), 'the kid of a key of another type')
})

test('keys carried by the token are never used', async (t) => {
  const jwk = createPublicKey(attacker.publicPem).export({ format: 'jwk' })
  await refused(t, sign(claims(), { key: attacker.privatePem, algorithm: 'RS256', header: { jwk } }), 'embedded jwk, no kid')
  await refused(t, sign(claims(), { key: attacker.privatePem, algorithm: 'RS256', kid: 'rsa-1', header: { jwk } }), 'embedded jwk with our kid')
  await refused(t, sign(claims(), { key: rsa.privatePem, algorithm: 'RS256', kid: 'rsa-1', header: { jwk: createPublicKey(rsa.publicPem).export({ format: 'jwk' }) } }), 'even our own key, embedded, is a refusal')
  await refused(t, sign(claims(), { key: attacker.privatePem, algorithm: 'RS256', kid: 'rsa-1', header: { x5c: ['MIIB'] } }), 'x5c chain')
})

test('keys pointed to by the token are never fetched', async (t) => {
  let hits = 0
  const trap = createServer((_req, res) => { hits++; res.end(JSON.stringify({ keys: [] })) })
  trap.listen(0, '127.0.0.1')
  await once(trap, 'listening')
  t.teardown(() => trap.close())
  const url = `http://127.0.0.1:${(trap.address() as { port: number }).port}/jwks.json`
  await refused(t, sign(claims(), { key: attacker.privatePem, algorithm: 'RS256', kid: 'rsa-1', header: { jku: url } }), 'jku')
  await refused(t, sign(claims(), { key: attacker.privatePem, algorithm: 'RS256', kid: 'rsa-1', header: { x5u: url } }), 'x5u')
  t.equal(hits, 0, 'no request left the gateway')
})

test('kid tricks', async (t) => {
  for (const kid of ['../../../../dev/null', "' OR '1'='1", 'rsa-1\u0000', '', 'RSA-1', 'constructor', '__proto__']) {
    await refused(t, sign(claims(), { key: attacker.privatePem, algorithm: 'RS256', kid }), `kid ${JSON.stringify(kid)}`)
  }
  await refused(t, forge({ alg: 'HS256', kid: '../../../../dev/null' }, claims(), { hmac: '' }), 'empty-secret HMAC with a path kid')
})

test('signatures that should crash or fool a verifier', async (t) => {
  const [header, payload] = good.split('.') as [string, string]
  const zeros = Buffer.alloc(64).toString('base64url')
  await refused(t, `${b64({ alg: 'ES256', kid: 'ec-1' })}.${payload}.${zeros}`, 'ECDSA r = s = 0 (CVE-2022-21449)')
  await refused(t, `${b64({ alg: 'ES256', kid: 'ec-1' })}.${payload}.${Buffer.alloc(70, 0xff).toString('base64url')}`, 'ECDSA signature of the wrong length')
  await refused(t, `${header}.${payload}.`, 'signature stripped')
  await refused(t, `${header}.${b64(claims({ sub: 'admin' }))}.${good.split('.')[2] as string}`, 'payload swapped under a valid signature')
  const flipped = good.slice(0, -2) + (good.endsWith('AA') ? 'BB' : 'AA')
  await refused(t, flipped, 'one signature byte changed')
})

test('critical header parameters that are not understood', async (t) => {
  await refused(t, sign(claims(), { key: rsa.privatePem, algorithm: 'RS256', kid: 'rsa-1', header: { crit: ['exp'], exp: 1 } }), 'crit exp')
  await refused(t, sign(claims(), { key: rsa.privatePem, algorithm: 'RS256', kid: 'rsa-1', header: { crit: ['b64'], b64: false } }), 'crit b64')
})

test('malformed compact serializations', async (t) => {
  const [header, payload, signature] = good.split('.') as [string, string, string]
  const cases = [
    `${header}.${payload}`,
    `${header}.${payload}.${signature}.${signature}`,
    '..',
    `${b64('not json')}.${payload}.${signature}`,
    `${header}.${b64('not json')}.${signature}`,
    `${header}.${b64([1, 2])}.${signature}`,
    `${b64([1])}.${payload}.${signature}`,
    `${header}.${b64('"string"')}.${signature}`,
    `${header}.${payload}.${signature}`.replace(/\./g, '..'),
    `${header}.${b64(JSON.stringify(claims()).replace(/}$/, ',"__proto__":{"admin":true}}'))}.${signature}`,
    `${header}.${'A'.repeat(15_000)}.${signature}`
  ]
  for (const token of cases) await refused(t, token, `malformed ${token.slice(0, 40)}`)
})

test('a validly signed token with __proto__ claims pollutes nothing', async (t) => {
  const hs = await build({ methods: { jwt: { ...options, keys: [{ algorithms: ['HS256'], key: hmacSecret }] } } })
  const payload = JSON.stringify(claims()).replace(/}$/, ',"__proto__":{"admin":true},"constructor":{"prototype":{"admin":true}}}')
  const input = `${b64({ alg: 'HS256' })}.${b64(payload)}`
  const { createHmac } = await import('node:crypto')
  const token = `${input}.${createHmac('sha256', hmacSecret).update(input).digest('base64url')}`
  const res = await hs.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })
  t.equal(res.statusCode, 200)
  t.equal(({} as Record<string, unknown>).admin, undefined, 'Object.prototype untouched')
  t.notOk('admin' in res.json().principal, 'the principal gained nothing')
})

test('RFC 6750 on the wire', async (t) => {
  const none = await app.inject('/me')
  t.equal(none.statusCode, 401)
  t.equal(none.headers['www-authenticate'], 'Bearer realm="api"', 'no credentials: a challenge without an error')
  for (const authorization of ['Bearer', 'Bearer ', 'Bearer a b', 'Bearer {json}', 'Bearer tok"en']) {
    const res = await app.inject({ url: '/me', headers: { authorization } })
    t.equal(res.statusCode, 400, authorization)
    t.equal(res.headers['www-authenticate'], 'Bearer realm="api", error="invalid_request"')
    t.equal(res.json().code, 'PORTCULLIS_AUTHN_INVALID_REQUEST')
  }
  const inQuery = await app.inject(`/me?access_token=${good}`)
  t.equal(inQuery.statusCode, 400, 'a token in the query string is refused, not used')
  t.equal(inQuery.headers['www-authenticate'], 'Bearer realm="api", error="invalid_request"')
  const twice = await app.inject({ url: `/me?access_token=${good}`, headers: { authorization: `Bearer ${good}` } })
  t.equal(twice.statusCode, 400, 'the same token sent two ways')
  t.equal(twice.json().code, 'PORTCULLIS_AUTHN_AMBIGUOUS_CREDENTIALS')
  const other = await app.inject({ url: '/me', headers: { authorization: 'Digest username="alice"' } })
  t.equal(other.statusCode, 401, 'another scheme is no credential for this route')
  t.equal(other.headers['www-authenticate'], 'Bearer realm="api"')
})

test('tokens never reach the logs', async (t) => {
  const lines: string[] = []
  const logged = Fastify({ logger: { level: 'trace', stream: { write: (line: string) => { lines.push(line) } } } })
  await logged.register(portcullisCore)
  await logged.register(portcullisAuthn, { methods: { jwt: options } } satisfies AuthnOptions)
  logged.get('/me', async () => 'ok')
  const forged = forge({ alg: 'HS256', kid: 'rsa-1' }, claims(), { hmac: hmacSecret })
  await logged.inject({ url: '/me', headers: { authorization: `Bearer ${forged}` } })
  await logged.inject({ url: '/me', headers: { authorization: `Bearer ${good}` } })
  t.ok(lines.length > 0)
  const all = lines.join('\n')
  t.notMatch(all, forged.split('.')[2] as string, 'no part of a refused token')
  t.notMatch(all, good.split('.')[1] as string, 'no part of an accepted token')
})

test('several issuers: the token goes to the method of its issuer', async (t) => {
  const other = pair('ec')
  const multi = await build({
    methods: {
      staff: options,
      partners: { type: 'jwt', issuer: 'https://partners.example.com', audience: AUDIENCE, keys: [{ algorithms: ['ES256'], key: other.publicPem }] }
    }
  })
  const partner = sign(claims({ iss: 'https://partners.example.com', sub: 'acme' }), { key: other.privatePem, algorithm: 'ES256' })
  const call = async (token: string) => multi.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })
  t.match((await call(partner)).json().principal, { id: 'acme' })
  t.match((await call(good)).json().principal, { id: 'alice' })
  const stranger = sign(claims({ iss: 'https://evil.example.com' }), { key: other.privatePem, algorithm: 'ES256' })
  t.equal((await call(stranger)).statusCode, 401, 'an issuer nobody configured')
  t.equal((await call(stranger)).headers['www-authenticate'], 'Bearer realm="api", error="invalid_token"')
  const crossed = sign(claims({ iss: 'https://partners.example.com' }), { key: rsa.privatePem, algorithm: 'RS256', kid: 'rsa-1' })
  t.equal((await call(crossed)).statusCode, 401, "one issuer's key cannot sign for another")
  t.equal((await call('not.a.jwt')).statusCode, 401, 'an unreadable token names no issuer')
  t.equal((await call(forge({ alg: 'ES256' }, claims({ iss: 42 })))).statusCode, 401, 'an issuer that is not a string names none')
})
