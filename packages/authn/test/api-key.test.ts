import { test } from 'tap'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createApiKey, hashApiKey, MemoryApiKeyStore, type ApiKeyRecord } from '../src/index.js'
import { build } from './helpers.js'

const alice = createApiKey({ id: 'key-alice-1', owner: { id: 'alice', type: 'user', roles: ['user'], scopes: ['orders:read'], plan: 'free' } })

test('keys are random, shown once and stored only as a hash', async (t) => {
  const other = createApiKey({ id: 'k2', owner: { id: 'x', type: 'service' }, prefix: 'demo_' })
  t.match(alice.key, /^pk_[A-Za-z0-9_-]{43}$/)
  t.match(other.key, /^demo_/)
  t.not(alice.key, other.key)
  t.equal(alice.record.hash, hashApiKey(alice.key))
  t.notMatch(JSON.stringify(alice.record), alice.key, 'the record does not hold the key')
})

test('a valid key in the header authenticates its owner', async (t) => {
  const app = await build({ methods: { keys: { type: 'api-key', keys: [alice.record] } } })
  const res = await app.inject({ url: '/me', headers: { 'x-api-key': alice.key } })
  t.equal(res.statusCode, 200)
  t.match(res.json().principal, { id: 'alice', type: 'user', method: 'api-key', roles: ['user'], scopes: ['orders:read'], plan: 'free', credentialId: 'key-alice-1' })
  t.match(res.json().decisions, [{ plugin: '@portcullis/authn', outcome: 'allow', reason: 'PORTCULLIS_AUTHN_OK', rule: 'api-key' }])
})

test('a wrong, short or huge key is refused with the ApiKey challenge', async (t) => {
  const app = await build({ methods: { keys: { type: 'api-key', keys: [alice.record] } } })
  for (const key of [alice.key.slice(0, -1) + (alice.key.endsWith('A') ? 'B' : 'A'), 'short', 'x'.repeat(600), `${alice.key}, ${alice.key}`]) {
    const res = await app.inject({ url: '/me', headers: { 'x-api-key': key } })
    t.equal(res.statusCode, 401)
    t.equal(res.headers['www-authenticate'], 'ApiKey realm="api", header="x-api-key"')
    t.same(res.json().code, 'PORTCULLIS_AUTHN_INVALID_CREDENTIALS')
    t.equal(res.json().detail, 'The credentials are not valid')
  }
  const none = await app.inject('/me')
  t.equal(none.statusCode, 401)
  t.equal(none.json().code, 'PORTCULLIS_AUTHN_MISSING_CREDENTIALS')
})

test('expiry, not-before and revocation are enforced at every request', async (t) => {
  const past = createApiKey({ id: 'old', owner: { id: 'o', type: 'service' }, expiresAt: new Date(Date.now() - 1000) })
  const future = createApiKey({ id: 'later', owner: { id: 'l', type: 'service' }, notBefore: new Date(Date.now() + 60_000).toISOString() })
  const live = createApiKey({ id: 'live', owner: { id: 'v', type: 'service' }, expiresAt: new Date(Date.now() + 60_000).toISOString() })
  const store = new MemoryApiKeyStore([past.record, future.record, live.record])
  const app = await build({ methods: { keys: { type: 'api-key', store } } })
  const status = async (key: string) => (await app.inject({ url: '/me', headers: { 'x-api-key': key } })).statusCode
  t.equal(await status(past.key), 401)
  t.equal(await status(future.key), 401)
  t.equal(await status(live.key), 200)
  t.ok(store.revoke('live'))
  t.equal(await status(live.key), 401, 'revoked: refused at once')
  t.notOk(store.revoke('nope'))
})

test('rotation: the new key works at once, the old one until the overlap ends', async (t) => {
  const first = createApiKey({ id: 'svc-1', owner: { id: 'billing', type: 'service' } })
  const store = new MemoryApiKeyStore([first.record])
  const app = await build({ methods: { keys: { type: 'api-key', store } } })
  const status = async (key: string) => (await app.inject({ url: '/me', headers: { 'x-api-key': key } })).statusCode
  const second = store.rotate('svc-1', 'svc-2', 60)
  t.equal(await status(first.key), 200, 'old key still works during the overlap')
  t.equal(await status(second.key), 200)
  t.match((await app.inject({ url: '/me', headers: { 'x-api-key': second.key } })).json().principal, { id: 'billing', credentialId: 'svc-2' })
  store.rotate('svc-2', 'svc-3', 0)
  t.equal(await status(second.key), 401, 'no overlap: the rotated key stops at once')
  const soon = createApiKey({ id: 'soon', owner: { id: 's', type: 'service' }, expiresAt: new Date(Date.now() + 5000) })
  store.add(soon.record)
  store.rotate('soon', 'soon-2', 3600)
  t.equal(await status(soon.key), 200, 'an earlier expiry is kept')
  t.throws(() => store.rotate('missing', 'x', 1), /rotate id must be the id of a stored key/)
  t.throws(() => store.rotate('svc-3', 'svc-4', -1), /overlapSeconds/)
  t.throws(() => store.add(first.record), /a key id not used by another key/)
})

test('the query parameter, when enabled; both at once are refused', async (t) => {
  const app = await build({ methods: { keys: { type: 'api-key', keys: [alice.record], query: 'api_key', header: 'X-Key' } } })
  t.equal((await app.inject({ url: `/me?api_key=${alice.key}` })).statusCode, 200)
  t.equal((await app.inject({ url: '/me', headers: { 'x-key': alice.key } })).statusCode, 200)
  const both = await app.inject({ url: `/me?api_key=${alice.key}`, headers: { 'x-key': alice.key } })
  t.equal(both.statusCode, 400)
  t.equal(both.json().code, 'PORTCULLIS_AUTHN_AMBIGUOUS_CREDENTIALS')
  const twice = await app.inject({ url: `/me?api_key=${alice.key}&api_key=${alice.key}` })
  t.equal(twice.statusCode, 400, 'a repeated parameter is not guessed between')
})

test('key records are checked when loaded', async (t) => {
  const bad: Array<[unknown, RegExp]> = [
    [null, /keys\[0\] must be an API key record/],
    [{ id: '', hash: alice.record.hash, owner: { id: 'a', type: 'user' } }, /keys\[0\]\.id must be a non-empty string/],
    [{ id: 'a', hash: 'plaintext-key', owner: { id: 'a', type: 'user' } }, /keys\[0\]\.hash must be a hash made by hashApiKey/],
    [{ id: 'a', hash: alice.record.hash, owner: { id: 'a', type: 'robot' } }, /keys\[0\]\.owner must be a valid principal/],
    [{ id: 'a', hash: alice.record.hash, owner: { id: 'a', type: 'user' }, expiresAt: 'soon' }, /keys\[0\]\.expiresAt must be an ISO 8601 time/]
  ]
  for (const [record, message] of bad) t.throws(() => new MemoryApiKeyStore([record as ApiKeyRecord]), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message })
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-keys-'))
  const file = join(dir, 'keys.json')
  await writeFile(file, JSON.stringify([alice.record]))
  const store = await MemoryApiKeyStore.fromFile(file)
  t.equal(store.find(alice.record.hash)?.id, 'key-alice-1')
  await writeFile(file, '{}')
  await t.rejects(MemoryApiKeyStore.fromFile(file), /must be a JSON array of API key records/)
})

test('a custom store is asked by hash', async (t) => {
  const asked: string[] = []
  const store = { find: async (hash: string) => { asked.push(hash); return hash === alice.record.hash ? { ...alice.record, hash: hash.slice(0, -1) + (hash.endsWith('0') ? '1' : '0') } : undefined } }
  const app = await build({ methods: { keys: { type: 'api-key', store } } })
  t.equal((await app.inject({ url: '/me', headers: { 'x-api-key': alice.key } })).statusCode, 401, 'a store answering with another hash is not trusted')
  t.same(asked, [alice.record.hash])
})
