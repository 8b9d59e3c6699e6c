import { test } from 'tap'
import { hashPassword } from '../src/index.js'
import { basic, build } from './helpers.js'

const users = [
  { username: 'carol', passwordHash: await hashPassword('s3cret:with:colons'), owner: { roles: ['ops'], scopes: ['orders:read'] } },
  { username: 'zoë', passwordHash: await hashPassword('pässwörd') }
]

test('Basic: UTF-8 credentials, colons allowed in the password', async (t) => {
  const app = await build({ methods: { basic: { type: 'basic', users } } })
  const carol = await app.inject({ url: '/me', headers: { authorization: basic('carol', 's3cret:with:colons') } })
  t.equal(carol.statusCode, 200)
  t.match(carol.json().principal, { id: 'carol', type: 'user', method: 'basic', roles: ['ops'], credentialId: 'carol' })
  const zoe = await app.inject({ url: '/me', headers: { authorization: basic('zoë', 'pässwörd') } })
  t.equal(zoe.statusCode, 200)
  t.equal(zoe.json().principal.id, 'zoë')
  const decomposed = await app.inject({ url: '/me', headers: { authorization: basic('zoe\u0308', 'pa\u0308sswo\u0308rd') } })
  t.equal(decomposed.statusCode, 200, 'Unicode is compared in normal form C')
  const scheme = await app.inject({ url: '/me', headers: { authorization: basic('carol', 's3cret:with:colons').replace('Basic', 'bAsIc') } })
  t.equal(scheme.statusCode, 200, 'the scheme is case-insensitive')
})

test('Basic: wrong password and unknown user look the same', async (t) => {
  const app = await build({ methods: { basic: { type: 'basic', users } } })
  for (const [user, password] of [['carol', 's3cret'], ['mallory', 's3cret:with:colons']] as const) {
    const res = await app.inject({ url: '/me', headers: { authorization: basic(user, password) } })
    t.equal(res.statusCode, 401)
    t.equal(res.headers['www-authenticate'], 'Basic realm="api", charset="UTF-8"')
    t.same(res.json().code, 'PORTCULLIS_AUTHN_INVALID_CREDENTIALS')
  }
  const none = await app.inject('/me')
  t.equal(none.headers['www-authenticate'], 'Basic realm="api", charset="UTF-8"', 'the challenge says UTF-8 (RFC 7617 §2.1)')
})

test('Basic: malformed credentials are a 400', async (t) => {
  const app = await build({ methods: { basic: { type: 'basic', users } } })
  const malformed = [
    'Basic not*base64',
    'Basic Y2Fyb2w=x',
    'Basic Y2Fyb2w6cHd',
    'Basic Y2Fyb2w6c-c_',
    `Basic ${Buffer.from('no-colon').toString('base64')}`,
    `Basic ${Buffer.from(':empty-user').toString('base64')}`,
    `Basic ${Buffer.from([0x63, 0x3a, 0xff, 0xfe]).toString('base64')}`,
    `Basic ${Buffer.from('carol:pass\u0000word').toString('base64')}`
  ]
  for (const authorization of malformed) {
    const res = await app.inject({ url: '/me', headers: { authorization } })
    t.equal(res.statusCode, 400, authorization)
    t.equal(res.json().code, 'PORTCULLIS_AUTHN_INVALID_REQUEST')
  }
})

test('Basic users and hashes are checked at startup', async (t) => {
  const good = users[0]?.passwordHash as string
  const cases: Array<[unknown, RegExp]> = [
    [[{ username: 'a:b', passwordHash: good }], /users\[0\]\.username must be a non-empty string without ":"/],
    [[{ username: 'a', passwordHash: 'plain' }], /users\[0\]\.passwordHash must be a hash made by hashPassword/],
    [[{ username: 'a', passwordHash: 42 }], /users\[0\]\.passwordHash must be a hash made by hashPassword/],
    [[{ username: 'a', passwordHash: good.replace('$16384$', '$1024$') }], /scrypt parameters with N a power of 2 from 16384 to 1048576/],
    [[{ username: 'a', passwordHash: good.replace('$16384$', '$1073741824$') }], /scrypt parameters with N a power of 2/],
    [[{ username: 'a', passwordHash: good, owner: { type: 'robot' } }], /principal\.type must be one of/],
    [[{ username: 'a', password: 'x' }], /users\[0\]\.password is not a known option/],
    ['carol', /authn\.methods\.basic\.users must be a list/]
  ]
  for (const [list, message] of cases) {
    await t.rejects(build({ methods: { basic: { type: 'basic', users: list as never } } }), { message })
  }
})

test('hashPassword makes salted scrypt hashes', async (t) => {
  const a = await hashPassword('same')
  const b = await hashPassword('same', { N: 32768 })
  t.match(a, /^scrypt\$16384\$8\$1\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/)
  t.match(b, /^scrypt\$32768\$8\$1\$/)
  t.not(a.split('$')[4], b.split('$')[4], 'a fresh salt every time')
})
