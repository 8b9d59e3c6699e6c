import t, { test } from 'tap'
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import {
  createApiKey, MemoryRevocationStore, RedisApiKeyStore, RedisRevocationStore, revocationKey,
  type AuthnOptions, type RedisLike
} from '../src/index.js'
import { build } from './helpers.js'
import { AUDIENCE, claims, ec, ISSUER, sign } from './jwt-helpers.js'

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const redis = new Redis(redisUrl)
t.teardown(() => redis.quit())
// Each run keeps to its own keys, so parallel runs and leftovers never meet.
const prefix = `portcullis-test:${randomUUID()}:`
const asRedis = (client: Redis): RedisLike => client as unknown as RedisLike

const jwtMethod: AuthnOptions['methods'][string] = { type: 'jwt', issuer: ISSUER, audience: AUDIENCE, keys: [{ algorithms: ['ES256'], key: ec.publicPem }] }
const token = (jti: string) => sign(claims({ jti }), { key: ec.privatePem, algorithm: 'ES256' })
const status = async (app: Awaited<ReturnType<typeof build>>, headers: Record<string, string>) => (await app.inject({ url: '/me', headers })).statusCode

test('revocationKey names the credential by method and id', async (t) => {
  t.equal(revocationKey({ method: 'jwt', credentialId: 'abc' }), 'jwt:abc')
  t.equal(revocationKey({ method: 'api-key', credentialId: 'key-1' }), 'api-key:key-1')
  t.equal(revocationKey({ method: 'jwt' }), undefined, 'a token without jti cannot be revoked by id')
})

test('a revoked token is refused until it would have expired', async (t) => {
  const store = new MemoryRevocationStore()
  const app = await build({ methods: { jwt: jwtMethod }, revocation: store })
  const bearer = { authorization: `Bearer ${token('tok-a')}` }
  t.equal(await status(app, bearer), 200)
  await store.revoke('jwt:tok-a', Date.now() + 60_000)
  const res = await app.inject({ url: '/me', headers: bearer })
  t.equal(res.statusCode, 401, 'refused even though the verified token is cached')
  t.equal(res.headers['www-authenticate'], 'Bearer realm="api", error="invalid_token"')
  t.equal(await status(app, { authorization: `Bearer ${token('tok-b')}` }), 200, 'other tokens unaffected')
  await store.revoke('jwt:tok-c', Date.now() + 50)
  await store.revoke('jwt:tok-c', Date.now() - 1000)
  t.ok(await store.isRevoked('jwt:tok-c'), 'a later end is kept')
  await sleep(80)
  t.notOk(await store.isRevoked('jwt:tok-c'), 'forgotten once the credential would have expired')
  t.notOk(await store.isRevoked('jwt:tok-c'))
  await t.rejects(store.revoke('', 1), /revoke key must be a revocation key/)
  await t.rejects(store.revoke('jwt:x', Number.NaN), /revoke untilMs must be a time in epoch milliseconds/)
})

test('every instance sees a revocation through Redis within a second', async (t) => {
  const storeA = new RedisRevocationStore({ client: asRedis(redis), prefix })
  const storeB = new RedisRevocationStore({ client: asRedis(redis), prefix })
  const a = await build({ methods: { jwt: jwtMethod }, revocation: storeA })
  const b = await build({ methods: { jwt: jwtMethod }, revocation: storeB })
  const bearer = { authorization: `Bearer ${token('shared-1')}` }
  t.equal(await status(a, bearer), 200)
  t.equal(await status(b, bearer), 200)
  const revokedAt = Date.now()
  await storeA.revoke('jwt:shared-1', Date.now() + 60_000)
  t.equal(await status(a, bearer), 401, 'the revoking instance refuses at once')
  while (await status(b, bearer) === 200) {
    if (Date.now() - revokedAt > 1500) break
    await sleep(50)
  }
  const seenAfter = Date.now() - revokedAt
  t.equal(await status(b, bearer), 401)
  t.ok(seenAfter <= 1100, `instance B refused after ${seenAfter} ms`)
  t.ok(await redis.pttl(`${prefix}jwt:shared-1`) > 50_000, 'the Redis key expires with the credential')
  await storeA.revoke('jwt:old', Date.now() - 1)
  t.equal(await redis.exists(`${prefix}jwt:old`), 0, 'nothing is stored for a credential already expired')
})

test('without staleness, a revocation is seen by the next request', async (t) => {
  const store = new RedisRevocationStore({ client: asRedis(redis), prefix, maxStalenessMs: 0 })
  const other = new RedisRevocationStore({ client: asRedis(redis), prefix, cacheSize: 1 })
  const app = await build({ methods: { jwt: jwtMethod }, revocation: store })
  const bearer = { authorization: `Bearer ${token('fresh-1')}` }
  t.equal(await status(app, bearer), 200)
  await other.revoke('jwt:fresh-1', Date.now() + 60_000)
  t.equal(await status(app, bearer), 401)
  t.notOk(await other.isRevoked('jwt:x1'))
  t.notOk(await other.isRevoked('jwt:x2'), 'a full cache makes room')
})

test('API keys: revoked by id in the revocation store', async (t) => {
  const key = createApiKey({ id: 'ops-1', owner: { id: 'ops', type: 'service' } })
  const store = new MemoryRevocationStore()
  const app = await build({ methods: { key: { type: 'api-key', keys: [key.record] } }, revocation: store })
  t.equal(await status(app, { 'x-api-key': key.key }), 200)
  await store.revoke('api-key:ops-1', Date.now() + 60_000)
  const res = await app.inject({ url: '/me', headers: { 'x-api-key': key.key } })
  t.equal(res.statusCode, 401)
  t.equal(res.json().code, 'PORTCULLIS_AUTHN_INVALID_CREDENTIALS')
})

test('Redis unreachable: fail closed with 503, never a guess, never a hang', async (t) => {
  const dead = new Redis({ host: '127.0.0.1', port: 1, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 50 })
  dead.on('error', () => {})
  t.teardown(() => dead.disconnect())
  const store = new RedisRevocationStore({ client: asRedis(dead), prefix, timeoutMs: 100 })
  const app = await build({ methods: { jwt: jwtMethod }, revocation: store })
  const started = Date.now()
  const res = await app.inject({ url: '/me', headers: { authorization: `Bearer ${token('x')}` } })
  t.equal(res.statusCode, 503)
  t.equal(res.json().code, 'PORTCULLIS_AUTHN_REVOCATION_UNAVAILABLE')
  t.equal(res.headers['retry-after'], '5')
  t.ok(Date.now() - started < 1000, 'answered at the store timeout')
})

test('an API key store that cannot answer means 503, not 500 and never a pass', async (t) => {
  const dead = new Redis({ host: '127.0.0.1', port: 1, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 50 })
  dead.on('error', () => {})
  t.teardown(() => dead.disconnect())
  const store = new RedisApiKeyStore({ client: asRedis(dead), prefix, timeoutMs: 100 })
  for (const mode of ['enforce', 'report'] as const) {
    const app = await build({ methods: { key: { type: 'api-key', store } }, mode })
    const res = await app.inject({ url: '/me', headers: { 'x-api-key': 'pk_any-key-long-enough-to-look-up' } })
    t.equal(res.statusCode, mode === 'enforce' ? 503 : 200, mode)
    if (mode === 'enforce') t.equal(res.json().code, 'PORTCULLIS_AUTHN_STORE_UNAVAILABLE')
    else t.match(res.json(), { principal: null, decisions: [{ outcome: 'would-deny', reason: 'PORTCULLIS_AUTHN_STORE_UNAVAILABLE' }] })
  }
})

test('API keys shared through Redis: added once, found and revoked everywhere', async (t) => {
  const storeA = new RedisApiKeyStore({ client: asRedis(redis), prefix })
  const storeB = new RedisApiKeyStore({ client: asRedis(redis), prefix, timeoutMs: 500 })
  const key = createApiKey({ id: 'fleet-1', owner: { id: 'partner', type: 'service', plan: 'pro' } })
  await storeA.add(key.record)
  await t.rejects(storeB.add(key.record), /a key id not used by another key/)
  const b = await build({ methods: { key: { type: 'api-key', store: storeB } } })
  const res = await b.inject({ url: '/me', headers: { 'x-api-key': key.key } })
  t.equal(res.statusCode, 200)
  t.match(res.json().principal, { id: 'partner', plan: 'pro', credentialId: 'fleet-1' })
  const rotated = await storeA.rotate('fleet-1', 'fleet-2', 60)
  t.equal(await status(b, { 'x-api-key': rotated.key }), 200, 'a rotated key works everywhere at once')
  t.equal(await status(b, { 'x-api-key': key.key }), 200, 'the old one during the overlap')
  await t.rejects(storeA.rotate('no-such-key', 'x', 1), /rotate id must be the id of a stored key/)
  t.ok(await storeA.revoke('fleet-1'))
  t.equal(await status(b, { 'x-api-key': key.key }), 401, 'refused on the other instance at once')
  t.notOk(await storeA.revoke('no-such-key'))
  await redis.del(`${prefix}hash:${key.record.hash}`)
  t.notOk(await storeA.revoke('fleet-1'), 'an index entry without its record')
})

test('store and option checks', async (t) => {
  t.throws(() => new RedisRevocationStore({ client: {} as RedisLike }), /revocation\.client must be a Redis client/)
  t.throws(() => new RedisRevocationStore({ client: asRedis(redis), timeoutMs: -1 }), /revocation\.timeoutMs must be a whole number/)
  t.throws(() => new RedisApiKeyStore({ client: {} as RedisLike }), /apiKeyStore\.client must be a Redis client/)
  t.equal(await new RedisApiKeyStore({ client: asRedis(redis) }).find(`sha256:${'A'.repeat(43)}`), undefined, 'the default namespace answers too')
  await t.rejects(build({ methods: { jwt: jwtMethod }, revocation: {} as never }), /authn\.revocation must be a revocation store/)
})
