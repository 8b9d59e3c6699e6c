import { test } from 'tap'
import { createPublicKey, generateKeyPairSync } from 'node:crypto'
import type { JwtMethodOptions } from '../src/index.js'
import { build } from './helpers.js'
import { AUDIENCE, claims, ec, ed, forge, hmacSecret, ISSUER, pair, rsa, sign } from './jwt-helpers.js'

const jwt = (extra: Partial<JwtMethodOptions> = {}): JwtMethodOptions => ({
  type: 'jwt',
  issuer: ISSUER,
  audience: AUDIENCE,
  keys: [
    { kid: 'rsa-1', algorithms: ['RS256', 'PS256'], key: rsa.publicPem },
    { kid: 'ec-1', algorithms: ['ES256'], key: ec.publicPem },
    { kid: 'ed-1', algorithms: ['EdDSA'], key: createPublicKey(ed.publicPem).export({ format: 'jwk' }) },
    { kid: 'hs-1', algorithms: ['HS256'], key: hmacSecret }
  ],
  ...extra
})

async function status (options: JwtMethodOptions, token: string) {
  const app = await build({ methods: { jwt: options } })
  const res = await app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })
  return res
}

test('valid tokens of every algorithm family authenticate', async (t) => {
  const app = await build({ methods: { jwt: jwt() } })
  const tokens = [
    sign(claims(), { key: rsa.privatePem, algorithm: 'RS256', kid: 'rsa-1' }),
    sign(claims(), { key: rsa.privatePem, algorithm: 'PS256', kid: 'rsa-1' }),
    sign(claims(), { key: ec.privatePem, algorithm: 'ES256', kid: 'ec-1' }),
    sign(claims(), { key: ed.privatePem, algorithm: 'EdDSA', kid: 'ed-1' }),
    sign(claims(), { key: hmacSecret, algorithm: 'HS256', kid: 'hs-1' })
  ]
  for (const token of tokens) {
    const res = await app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })
    t.equal(res.statusCode, 200)
    t.match(res.json().principal, { id: 'alice', type: 'user', method: 'jwt', roles: ['user'], scopes: ['orders:read', 'orders:write'], credentialId: 'tok-1', claims: { iss: ISSUER } })
  }
  const lower = await app.inject({ url: '/me', headers: { authorization: `bearer ${tokens[0] as string}` } })
  t.equal(lower.statusCode, 200, 'the scheme is case-insensitive')
})

test('claims map to the principal as configured', async (t) => {
  const options = jwt({ principal: { rolesClaim: 'realm_access.roles', scopesClaim: 'scp', tenantClaim: 'org.id', planClaim: 'plan', type: 'auto' } })
  const token = sign(claims({ realm_access: { roles: ['admin', 7] }, scp: ['orders:admin'], org: { id: 't-9' }, plan: 'pro' }), { key: ec.privatePem, algorithm: 'ES256', kid: 'ec-1' })
  t.match((await status(options, token)).json().principal, { roles: ['admin'], scopes: ['orders:admin'], tenant: 't-9', plan: 'pro', type: 'user' })
  const service = sign(claims({ sub: 'billing', client_id: 'billing', scope: 'orders:read', roles: 'batch nightly' }), { key: ec.privatePem, algorithm: 'ES256', kid: 'ec-1' })
  t.match((await status(jwt(), service)).json().principal, { id: 'billing', type: 'service', roles: ['batch', 'nightly'] })
  const fixed = sign(claims({ sub: 'alice', azp: 'alice' }), { key: ec.privatePem, algorithm: 'ES256', kid: 'ec-1' })
  t.match((await status(jwt({ principal: { type: 'user', idClaim: 'sub' } }), fixed)).json().principal, { type: 'user' })
  const oddRoles = sign(claims({ roles: { admin: true }, org: 'flat' }), { key: ec.privatePem, algorithm: 'ES256', kid: 'ec-1' })
  t.match((await status(jwt({ principal: { tenantClaim: 'org.id' } }), oddRoles)).json().principal, { roles: [] })
  t.notOk('tenant' in (await status(jwt({ principal: { tenantClaim: 'org.id' } }), oddRoles)).json().principal)
})

test('issuer and audience match exactly', async (t) => {
  const signed = (extra: Record<string, unknown>) => sign(claims(extra), { key: ec.privatePem, algorithm: 'ES256', kid: 'ec-1' })
  t.equal((await status(jwt(), signed({ iss: 'https://idp.example.com' }))).statusCode, 401, 'no trailing slash: another issuer')
  t.equal((await status(jwt(), signed({ iss: 'https://IDP.example.com/' }))).statusCode, 401)
  t.equal((await status(jwt(), signed({ aud: 'orders-api-v2' }))).statusCode, 401)
  t.equal((await status(jwt(), signed({ aud: ['other', AUDIENCE] }))).statusCode, 200, 'one of the token audiences is ours')
  t.equal((await status(jwt({ audience: ['a', AUDIENCE] }), signed({}))).statusCode, 200, 'one of our audiences is the token\'s')
  t.equal((await status(jwt(), signed({ aud: undefined }))).statusCode, 401, 'no audience is not our audience')
  t.equal((await status(jwt(), signed({ iss: undefined }))).statusCode, 401, 'no issuer is not our issuer')
})

test('time claims at their edges', async (t) => {
  const now = Math.floor(Date.now() / 1000)
  const signed = (extra: Record<string, unknown>) => sign(claims(extra), { key: ec.privatePem, algorithm: 'ES256', kid: 'ec-1' })
  t.equal((await status(jwt(), signed({ exp: now - 10 }))).statusCode, 401, 'expired')
  t.equal((await status(jwt(), signed({ exp: now - 2 }))).statusCode, 200, 'expired within the default 5 s tolerance')
  t.equal((await status(jwt({ clockToleranceSeconds: 0 }), signed({ exp: now - 2 }))).statusCode, 401)
  t.equal((await status(jwt(), signed({ exp: undefined }))).statusCode, 401, 'exp is required by default')
  t.equal((await status(jwt({ requireExp: false }), signed({ exp: undefined }))).statusCode, 200)
  t.equal((await status(jwt(), signed({ nbf: now + 60 }))).statusCode, 401, 'not yet valid')
  t.equal((await status(jwt(), signed({ iat: now + 60 }))).statusCode, 401, 'issued in the future')
  t.equal((await status(jwt(), forge({ alg: 'HS256', kid: 'hs-1' }, claims({ exp: 'tomorrow' }), { hmac: hmacSecret }))).statusCode, 401, 'a time claim that is not a number')
  t.equal((await status(jwt(), forge({ alg: 'HS256', kid: 'hs-1' }, claims({ iat: 'now' }), { hmac: hmacSecret }))).statusCode, 401)
  t.equal((await status(jwt({ maxAgeSeconds: 60 }), signed({ iat: now - 120 }))).statusCode, 401, 'older than maxAge')
  t.equal((await status(jwt({ maxAgeSeconds: 60 }), signed({ iat: now - 30 }))).statusCode, 200)
})

test('required claims, subject and typ', async (t) => {
  const signed = (extra: Record<string, unknown>, header?: Record<string, unknown>) => sign(claims(extra), { key: ec.privatePem, algorithm: 'ES256', kid: 'ec-1', ...(header === undefined ? {} : { header }) })
  t.equal((await status(jwt({ requiredClaims: ['tenant'] }), signed({}))).statusCode, 401)
  t.equal((await status(jwt({ requiredClaims: ['tenant'] }), signed({ tenant: 't' }))).statusCode, 200)
  t.equal((await status(jwt(), signed({ sub: undefined }))).statusCode, 401, 'no subject, no principal')
  t.equal((await status(jwt(), signed({ sub: '' }))).statusCode, 401)
  t.equal((await status(jwt({ typ: 'at+jwt' }), signed({}, { typ: 'JWT' }))).statusCode, 401, 'RFC 9068: an ID token is not an access token')
  t.equal((await status(jwt({ typ: 'at+jwt' }), signed({}, { typ: 'at+jwt' }))).statusCode, 200)
  t.equal((await status(jwt({ typ: 'at+jwt' }), signed({}, { typ: 'application/at+jwt' }))).statusCode, 200)
})

test('a single key needs no kid; several need one each', async (t) => {
  const single = jwt({ keys: [{ algorithms: ['ES256'], key: ec.publicPem }] })
  t.equal((await status(single, sign(claims(), { key: ec.privatePem, algorithm: 'ES256' }))).statusCode, 200)
  t.equal((await status(single, sign(claims(), { key: ec.privatePem, algorithm: 'ES256', kid: 'any' }))).statusCode, 401, 'a kid that names no key')
  t.equal((await status(jwt(), sign(claims(), { key: ec.privatePem, algorithm: 'ES256' }))).statusCode, 401, 'several keys: a token without kid matches none')
})

test('verified tokens are cached until they expire, and only then', async (t) => {
  const app = await build({ methods: { jwt: jwt({ cacheSize: 10 }) } })
  const token = sign(claims({ exp: Math.floor(Date.now() / 1000) + 2 }), { key: ec.privatePem, algorithm: 'ES256', kid: 'ec-1' })
  for (let i = 0; i < 3; i++) t.equal((await app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })).statusCode, 200)
  await new Promise((resolve) => setTimeout(resolve, 8000))
  t.equal((await app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })).statusCode, 401, 'the cache never outlives the token')
  const aged = await build({ methods: { jwt: jwt({ maxAgeSeconds: 1, clockToleranceSeconds: 0 }) } })
  const young = sign(claims({ iat: Math.floor(Date.now() / 1000) }), { key: ec.privatePem, algorithm: 'ES256', kid: 'ec-1' })
  t.equal((await aged.inject({ url: '/me', headers: { authorization: `Bearer ${young}` } })).statusCode, 200)
  await new Promise((resolve) => setTimeout(resolve, 2100))
  t.equal((await aged.inject({ url: '/me', headers: { authorization: `Bearer ${young}` } })).statusCode, 401, 'nor past maxAge')
  const small = await build({ methods: { jwt: jwt({ cacheSize: 1 }) } })
  const first = sign(claims({ jti: 'one' }), { key: ec.privatePem, algorithm: 'ES256', kid: 'ec-1' })
  const second = sign(claims({ jti: 'two' }), { key: ec.privatePem, algorithm: 'ES256', kid: 'ec-1' })
  for (const token of [first, second, first]) t.equal((await small.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })).statusCode, 200, 'a full cache makes room')
  const uncached = await build({ methods: { jwt: jwt({ cacheSize: 0 }) } })
  t.equal((await uncached.inject({ url: '/me', headers: { authorization: `Bearer ${sign(claims(), { key: ec.privatePem, algorithm: 'ES256', kid: 'ec-1' })}` } })).statusCode, 200)
})

test('a token that ends like a remembered one is not taken for it: it is verified in full, and a forgery refused', async (t) => {
  const app = await build({ methods: { jwt: jwt() } })
  const good = sign(claims({ sub: 'alice' }), { key: ec.privatePem, algorithm: 'ES256', kid: 'ec-1' })
  const me = async (token: string): Promise<{ statusCode: number, body: string }> => await app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })
  t.equal((await me(good)).statusCode, 200, 'verified, and remembered')
  // Alice's signature under claims of the attacker's choosing.
  const [header, , signature] = good.split('.') as [string, string, string]
  const forged = `${header}.${Buffer.from(JSON.stringify(claims({ sub: 'mallory' }))).toString('base64url')}.${signature}`
  t.equal((await me(forged)).statusCode, 401)
  const again = await me(good)
  t.equal(again.statusCode, 200, 'the remembered token is still answered')
  t.match(JSON.parse(again.body), { principal: { id: 'alice' } })
})

test('bad JWT options fail at startup naming the option', async (t) => {
  const ecP384 = pair('ec', 'P-384')
  const cases: Array<[Partial<JwtMethodOptions> & Record<string, unknown>, RegExp]> = [
    [{ issuer: '' }, /issuer must be the exact issuer/],
    [{ audience: [] }, /audience must be the audience \(aud\) to accept/],
    [{ audience: undefined as never }, /audience must be/],
    [{ keys: [] }, /keys must be a non-empty list/],
    [{ keys: [{ algorithms: ['ES256'], key: ec.publicPem }, { algorithms: ['ES256'], key: ec.publicPem }] }, /keys must be keys that each have a kid/],
    [{ keys: [{ algorithms: [], key: ec.publicPem }] }, /keys\[0\]\.algorithms must be a non-empty list/],
    [{ keys: [{ algorithms: ['HS256'], key: ec.publicPem }] }, /keys\[0\]\.algorithms must be algorithms this ec:prime256v1 key can verify: ES256 \(got "HS256"\)/],
    [{ keys: [{ algorithms: ['ES256'], key: ecP384.publicPem }] }, /this ec:secp384r1 key can verify: ES384/],
    [{ keys: [{ algorithms: ['RS256'], key: hmacSecret }] }, /this secret key can verify: HS256, HS384, HS512/],
    [{ keys: [{ algorithms: ['HS256'], key: 'too-short-secret' }] }, /keys\[0\]\.key must be an HMAC secret of at least 32 bytes for HS256/],
    [{ keys: [{ algorithms: ['HS512'], key: hmacSecret }] }, /at least 64 bytes for HS512/],
    [{ keys: [{ algorithms: ['RS256'], key: rsa.privatePem }] }, /keys\[0\]\.key must be a public key/],
    [{ keys: [{ algorithms: ['ES256'], key: ec.privateKey.export({ format: 'jwk' }) }] }, /keys\[0\]\.key must be a public key/],
    [{ keys: [{ algorithms: ['RS256'], key: '-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----' }] }, /keys\[0\]\.key must be an HMAC secret, or a public key as PEM or JWK/],
    [{ keys: [{ kid: '', algorithms: ['ES256'], key: ec.publicPem }] }, /keys\[0\]\.kid must be a non-empty string/],
    [{ keys: [{ algorithms: ['ES256'], key: ec.publicPem, use: 'sig' } as never] }, /keys\[0\]\.use is not a known option/],
    [{ clockToleranceSeconds: -1 }, /clockToleranceSeconds must be a number of seconds, 0 or more/],
    [{ maxAgeSeconds: Number.NaN }, /maxAgeSeconds must be a number of seconds/],
    [{ cacheSize: 1.5 }, /cacheSize must be a whole number/],
    [{ typ: '' }, /typ must be a media type/],
    [{ principal: { type: 'robot' as never } }, /principal\.type must be one of auto, user, service/],
    [{ jwks: 'https://x' }, /jwt\.jwks is not a known option/],
    [{ keys: [{ algorithms: ['EdDSA'], key: generateKeyPairSync('x25519').publicKey.export({ type: 'spki', format: 'pem' }).toString() }] }, /this x25519 key can verify: none \(got "EdDSA"\)/]
  ]
  for (const [extra, message] of cases) {
    await t.rejects(build({ methods: { jwt: jwt(extra) } }), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, message.source)
  }
})
