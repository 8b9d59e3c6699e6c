import { test } from 'tap'
import { mkdir, writeFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import { SECRET_FIELDS, isSecretReference, resolveSecrets } from '../src/index.js'
import { secretValues } from '../src/secrets.js'

type Data = Record<string, unknown>

test('SECRET_FIELDS lists where secrets are, and cannot be changed', async (t) => {
  t.same(SECRET_FIELDS, [
    '/authn/methods/*/keys/*/key',
    '/authn/methods/*/keys/*/hash',
    '/authn/methods/*/clientSecret',
    '/authn/methods/*/users/*/passwordHash',
    '/rateLimitStore/redis/url'
  ])
  t.ok(Object.isFrozen(SECRET_FIELDS))
})

test('isSecretReference() knows env:NAME and file:path', async (t) => {
  for (const value of ['env:JWT_SECRET', 'env:_x1', 'file:/run/secrets/jwt', 'file:secrets/jwt', 'file:C:\\keys\\k']) t.ok(isSecretReference(value), value)
  for (const value of ['env:', 'env:1ABC', 'env:A-B', 'env:A B', 'file:', 'ENV:A', 'secret', ' env:A', 42, null, undefined, { env: 'A' }]) t.notOk(isSecretReference(value), String(value))
})

test('secretValues() finds the values at secret fields, in document order, with escaped pointers', async (t) => {
  const data = {
    authn: {
      methods: {
        'a/b~c': { type: 'jwt', keys: [{ key: 'k0' }, { kid: 'nokey' }, { key: { kty: 'oct' } }], clientSecret: 'cs' },
        basic: { type: 'basic', users: [{ username: 'u', passwordHash: 'ph' }], keys: 'not a list' },
        apikeys: { type: 'api-key', keys: [{ id: 'k', hash: 'h' }] }
      }
    },
    rateLimitStore: { redis: { url: 'redis://r' } }
  }
  t.same(secretValues(data), [
    { pointer: '/authn/methods/a~1b~0c/keys/0/key', value: 'k0' },
    { pointer: '/authn/methods/a~1b~0c/keys/2/key', value: { kty: 'oct' } },
    { pointer: '/authn/methods/apikeys/keys/0/hash', value: 'h' },
    { pointer: '/authn/methods/a~1b~0c/clientSecret', value: 'cs' },
    { pointer: '/authn/methods/basic/users/0/passwordHash', value: 'ph' },
    { pointer: '/rateLimitStore/redis/url', value: 'redis://r' }
  ])
  t.same(secretValues({ version: 1 }), [], 'no secret sections')
  t.same(secretValues(null), [])
})

test('references at secret fields are replaced by environment variables and files', async (t) => {
  const dir = t.testdir({
    'jwt.key': 'a-file-secret\n',
    'crlf.key': 'crlf-secret\r\n',
    'two.key': 'kept-newline\n\n',
    sub: { 'pw.hash': '$argon2id$hash' }
  })
  const data = {
    version: 1,
    authn: {
      methods: {
        jwt: { type: 'jwt', audience: 'api', keys: [{ kid: 'a', key: 'env:JWT_KEY' }, { kid: 'b', key: `file:${join(dir, 'jwt.key')}` }, { kid: 'c', key: 'file:crlf.key' }, { kid: 'd', key: 'file:two.key' }] },
        'in/tro': { type: 'introspection', clientSecret: 'env:CLIENT_SECRET' },
        basic: { type: 'basic', users: [{ username: 'u', passwordHash: 'file:sub/pw.hash' }] },
        keys: { type: 'api-key', keys: [{ id: 'k', hash: 'env:KEY_HASH' }] }
      }
    },
    rateLimitStore: { redis: { url: 'env:REDIS_URL' } }
  }
  const before = structuredClone(data)
  const env = { JWT_KEY: 'an-env-secret', CLIENT_SECRET: 'client-secret', KEY_HASH: 'sha256:abc', REDIS_URL: 'redis://:pw@redis:6379' }
  const { data: resolved, problems } = await resolveSecrets(data, { baseDir: dir, env })
  t.same(problems, [])
  t.same(resolved, {
    version: 1,
    authn: {
      methods: {
        jwt: { type: 'jwt', audience: 'api', keys: [{ kid: 'a', key: 'an-env-secret' }, { kid: 'b', key: 'a-file-secret' }, { kid: 'c', key: 'crlf-secret' }, { kid: 'd', key: 'kept-newline\n' }] },
        'in/tro': { type: 'introspection', clientSecret: 'client-secret' },
        basic: { type: 'basic', users: [{ username: 'u', passwordHash: '$argon2id$hash' }] },
        keys: { type: 'api-key', keys: [{ id: 'k', hash: 'sha256:abc' }] }
      }
    },
    rateLimitStore: { redis: { url: 'redis://:pw@redis:6379' } }
  })
  t.same(data, before, 'the input is not changed')
  t.not(resolved, data)
})

test('a reference may stand for any string value; text that merely holds one is left as it is', async (t) => {
  const dir = t.testdir({ 'ca.path': '/etc/orders/ca.pem\n' })
  const data = {
    version: 1,
    authz: { realm: 'env:REALM', roles: { admin: { inherits: ['env:ROLE', 'user'] } } },
    upstreams: [{ prefix: '/api', url: 'env:ORDERS_URL', tls: { ca: 'file:ca.path' } }],
    audit: { 'env:KEY': 'a key is never resolved', note: 'not env:A reference', empty: 'file:', lower: 'Env:REALM', n: 42, flag: true, nothing: null }
  }
  const before = structuredClone(data)
  const { data: resolved, problems } = await resolveSecrets(data, { baseDir: dir, env: { REALM: 'orders', ROLE: 'operator', ORDERS_URL: 'http://orders:8080', KEY: 'x', A: 'y' } })
  t.same(problems, [])
  t.same(resolved, {
    version: 1,
    authz: { realm: 'orders', roles: { admin: { inherits: ['operator', 'user'] } } },
    upstreams: [{ prefix: '/api', url: 'http://orders:8080', tls: { ca: '/etc/orders/ca.pem' } }],
    audit: { 'env:KEY': 'a key is never resolved', note: 'not env:A reference', empty: 'file:', lower: 'Env:REALM', n: 42, flag: true, nothing: null }
  })
  t.same(data, before, 'the input is not changed')
  const { problems: missing } = await resolveSecrets({ upstreams: [{ prefix: '/api', url: 'env:ORDERS_URL' }] }, { env: {} })
  t.same(missing, [{ stage: 'secrets', pointer: '/upstreams/0/url', message: 'the environment variable ORDERS_URL is not set' }])
})

test('a missing variable or file is a problem that names it and never a value', async (t) => {
  const dir = t.testdir({ 'empty.key': '', 'newline.key': '\n', folder: {} })
  const data = {
    version: 1,
    authn: {
      methods: {
        jwt: { type: 'jwt', keys: [{ kid: 'a', key: 'env:MISSING' }, { kid: 'b', key: 'env:EMPTY' }, { kid: 'c', key: 'file:nope.key' }, { kid: 'd', key: 'file:folder' }, { kid: 'e', key: 'env:PRESENT' }] },
        intro: { type: 'introspection', clientSecret: 'file:empty.key' },
        other: { type: 'introspection', clientSecret: 'file:newline.key' }
      }
    }
  }
  const { data: resolved, problems } = await resolveSecrets(data, { baseDir: dir, env: { EMPTY: '', PRESENT: 'the-present-secret' } })
  t.same(problems, [
    { stage: 'secrets', pointer: '/authn/methods/jwt/keys/0/key', message: 'the environment variable MISSING is not set' },
    { stage: 'secrets', pointer: '/authn/methods/jwt/keys/1/key', message: 'the environment variable EMPTY is not set' },
    { stage: 'secrets', pointer: '/authn/methods/jwt/keys/2/key', message: `the file ${join(dir, 'nope.key')} cannot be read (ENOENT)` },
    { stage: 'secrets', pointer: '/authn/methods/jwt/keys/3/key', message: `the file ${join(dir, 'folder')} cannot be read (EISDIR)` },
    { stage: 'secrets', pointer: '/authn/methods/intro/clientSecret', message: `the file ${join(dir, 'empty.key')} is empty` },
    { stage: 'secrets', pointer: '/authn/methods/other/clientSecret', message: `the file ${join(dir, 'newline.key')} is empty` }
  ])
  for (const problem of problems) t.notMatch(problem.message, /the-present-secret/)
  const keys = (resolved.authn as Data).methods as Record<string, Data>
  t.same((keys.jwt?.keys as Data[]).map((key) => key.key), ['env:MISSING', 'env:EMPTY', 'file:nope.key', 'file:folder', 'the-present-secret'], 'what is missing stays a reference')
  t.equal(keys.intro?.clientSecret, 'file:empty.key', 'an empty file is never taken for the secret')
})

test('by default, relative files are read from the working directory and variables from process.env', async (t) => {
  const dir = t.testdir({ keys: { 'cwd.key': 'from-cwd\n' } })
  const name = `PORTCULLIS_TEST_SECRET_${process.pid}`
  process.env[name] = 'from-process-env'
  t.teardown(() => { Reflect.deleteProperty(process.env, name) })
  const data = { authn: { methods: { a: { type: 'introspection', clientSecret: `env:${name}` }, b: { type: 'introspection', clientSecret: `file:${relative(process.cwd(), join(dir, 'keys', 'cwd.key'))}` } } } }
  const { data: resolved, problems } = await resolveSecrets(data)
  t.same(problems, [])
  t.same(resolved, { authn: { methods: { a: { type: 'introspection', clientSecret: 'from-process-env' }, b: { type: 'introspection', clientSecret: 'from-cwd' } } } })
})

test('a file path is resolved against baseDir even when the document is elsewhere', async (t) => {
  const dir = t.testdir()
  await mkdir(join(dir, 'nested'))
  await writeFile(join(dir, 'nested', 'redis.url'), 'redis://:pw@r:6379\n')
  const { data: resolved } = await resolveSecrets({ rateLimitStore: { redis: { url: 'file:nested/redis.url' } } }, { baseDir: dir, env: {} })
  t.same(resolved, { rateLimitStore: { redis: { url: 'redis://:pw@r:6379' } } })
})

test('an invalid path is a problem too; an error without a code is called an error', async (t) => {
  const { problems } = await resolveSecrets({ authn: { methods: { a: { type: 'introspection', clientSecret: 'file:bad\0name' } } } }, { baseDir: '/' })
  t.same(problems, [{ stage: 'secrets', pointer: '/authn/methods/a/clientSecret', message: 'the file /bad\0name cannot be read (ERR_INVALID_ARG_VALUE)' }])
  const mocked = await t.mockImport<typeof import('../src/secrets.js')>('../src/secrets.js', {
    'node:fs/promises': { readFile: async () => { throw new Error('the disk is on fire: p4ssw0rd') } }
  })
  const failed = await mocked.resolveSecrets({ authn: { methods: { a: { type: 'introspection', clientSecret: 'file:/x' } } } })
  t.same(failed.problems, [{ stage: 'secrets', pointer: '/authn/methods/a/clientSecret', message: 'the file /x cannot be read (error)' }], 'the error\'s message is not repeated')
})
