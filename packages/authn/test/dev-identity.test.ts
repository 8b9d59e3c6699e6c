import { test } from 'tap'
import { mkdtemp, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { devJwtMethod, loadDevIdentity, loadOrCreateDevIdentity, signDevToken } from '../src/index.js'
import { build } from './helpers.js'

const defaults = {
  issuer: 'portcullis-dev',
  audience: 'orders-api',
  principals: { alice: { roles: ['user'], scope: 'orders:read orders:write' }, bob: { roles: ['admin'] }, carol: {} }
}

test('a development identity is made once, kept private, and its tokens verify', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-dev-'))
  const file = join(dir, 'nested', 'dev-identity.json')
  const identity = await loadOrCreateDevIdentity(file, defaults)
  t.equal((await stat(file)).mode & 0o777, 0o600, 'readable by the owner only')
  const again = await loadOrCreateDevIdentity(file, defaults)
  t.same(again.key, identity.key, 'the same key on the next start')
  t.same((await loadDevIdentity(file)).key.kid, identity.key.kid)
  const method = devJwtMethod(identity)
  t.notOk('d' in (method.keys[0]?.key as object), 'the method holds the public key only')
  const app = await build({ methods: { dev: method } })
  const res = await app.inject({ url: '/me', headers: { authorization: `Bearer ${signDevToken(identity, 'alice')}` } })
  t.equal(res.statusCode, 200)
  t.match(res.json().principal, { id: 'alice', roles: ['user'], scopes: ['orders:read', 'orders:write'] })
  t.match((await app.inject({ url: '/me', headers: { authorization: `Bearer ${signDevToken(identity, 'carol', 60)}` } })).json().principal, { id: 'carol', roles: [], scopes: [] })
  const claims = JSON.parse(Buffer.from(signDevToken(identity, 'bob', 120).split('.')[1] as string, 'base64url').toString())
  t.equal(claims.exp - claims.iat, 120)
})

test('two processes creating the identity at once end up with one', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-dev-'))
  const file = join(dir, 'id.json')
  const [a, b] = await Promise.all([loadOrCreateDevIdentity(file, defaults), loadOrCreateDevIdentity(file, defaults)])
  t.equal(a.key.kid, b.key.kid)
  await t.rejects(loadOrCreateDevIdentity(join(file, 'below-a-file.json'), defaults), { code: 'ENOTDIR' })
})

test('only the identity principals, for a bounded time', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-dev-'))
  const identity = await loadOrCreateDevIdentity(join(dir, 'id.json'), defaults)
  t.throws(() => signDevToken(identity, 'mallory'), /principal must be one of alice, bob, carol \(got "mallory"\)/)
  t.throws(() => signDevToken(identity, 'constructor'), /principal must be one of/)
  t.throws(() => signDevToken(identity, 'alice', 0), /ttl must be seconds, from 1 to 86400/)
  t.throws(() => signDevToken(identity, 'alice', 86_401), /ttl must be seconds/)
})

test('a damaged identity file is refused', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-dev-'))
  const file = join(dir, 'id.json')
  await writeFile(file, JSON.stringify({ issuer: 'x', audience: 'y', key: { kid: 'k' }, principals: {} }))
  await t.rejects(loadOrCreateDevIdentity(file, defaults), /must be a development identity/)
  await writeFile(file, 'null')
  await t.rejects(loadDevIdentity(file), /must be a development identity/)
  await t.rejects(loadOrCreateDevIdentity(dir, defaults), { code: 'EISDIR' }, 'other read errors are not mistaken for a missing file')
})
