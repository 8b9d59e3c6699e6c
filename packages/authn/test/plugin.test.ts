import { test } from 'tap'
import Fastify from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { createApiKey, hashPassword, portcullisAuthn, type AuthnOptions } from '../src/index.js'
import { basic, build } from './helpers.js'

const key = createApiKey({ id: 'k1', owner: { id: 'svc', type: 'service' } })
const carol = { username: 'carol', passwordHash: await hashPassword('pw') }
const methods: AuthnOptions['methods'] = {
  key: { type: 'api-key', keys: [key.record] },
  basic: { type: 'basic', users: [carol] }
}

test('routes follow the defaults: deny without credentials, with every challenge', async (t) => {
  const app = await build({ methods, realm: 'orders' })
  const res = await app.inject('/me')
  t.equal(res.statusCode, 401)
  t.same(res.headers['www-authenticate'], ['ApiKey realm="orders", header="x-api-key"', 'Basic realm="orders", charset="UTF-8"'])
  t.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8')
  const unknown = await app.inject('/no-such-route')
  t.equal(unknown.statusCode, 404, 'no route, no credentials asked')
  const strict = await build({ methods, authenticateNotFound: true })
  t.equal((await strict.inject('/no-such-route')).statusCode, 401, 'authenticateNotFound: no route map for anonymous clients')
  t.equal((await strict.inject({ url: '/no-such-route', headers: { 'x-api-key': key.key } })).statusCode, 404)
})

test('per route: off, anonymous, a subset of methods, all of them', async (t) => {
  const app = await build({ methods }, {
    '/open': false,
    '/maybe': { anonymous: true },
    '/keys-only': { methods: ['key'] },
    '/both': { methods: ['key', 'basic'], require: 'all' }
  })
  const open = await app.inject('/open')
  t.same(open.json(), { principal: null, decisions: null }, 'authn off: no principal, no decision')
  t.match((await app.inject('/maybe')).json(), { principal: { id: 'anonymous', type: 'anonymous' }, decisions: [{ reason: 'PORTCULLIS_AUTHN_ANONYMOUS' }] })
  t.equal((await app.inject({ url: '/maybe', headers: { 'x-api-key': 'wrong-key-wrong-key' } })).statusCode, 401, 'anonymous allowed, bad credentials still refused')
  t.equal((await app.inject({ url: '/keys-only', headers: { authorization: basic('carol', 'pw') } })).statusCode, 401, 'a method the route does not take')
  t.equal((await app.inject({ url: '/keys-only', headers: { authorization: basic('carol', 'pw') } })).headers['www-authenticate'], 'ApiKey realm="api", header="x-api-key"')
  const both = await app.inject({ url: '/both', headers: { authorization: basic('carol', 'pw'), 'x-api-key': key.key } })
  t.equal(both.statusCode, 200)
  t.equal(both.json().principal.id, 'svc', 'all-of: the first listed method gives the principal')
  t.equal((await app.inject({ url: '/both', headers: { 'x-api-key': key.key } })).statusCode, 401, 'all-of: each method is needed')
  t.equal((await app.inject({ url: '/both', headers: { authorization: basic('carol', 'nope'), 'x-api-key': key.key } })).statusCode, 401)
})

test('credentials for two methods at once are refused on an any-of route', async (t) => {
  const app = await build({ methods })
  const res = await app.inject({ url: '/me', headers: { authorization: basic('carol', 'pw'), 'x-api-key': key.key } })
  t.equal(res.statusCode, 400)
  t.equal(res.json().code, 'PORTCULLIS_AUTHN_AMBIGUOUS_CREDENTIALS')
})

test('two Authorization headers are refused, not guessed between', async (t) => {
  const app = await build({ methods })
  const res = await app.inject({ url: '/me', headers: { authorization: [basic('carol', 'pw'), basic('mallory', 'x')] as unknown as string } })
  t.equal(res.statusCode, 400)
  t.equal(res.json().code, 'PORTCULLIS_AUTHN_AMBIGUOUS_CREDENTIALS')
})

test('report mode records the denial and lets the request through', async (t) => {
  const app = await build({ methods, mode: 'report' }, { '/me': undefined, '/strict': { mode: 'enforce' } })
  const res = await app.inject('/me')
  t.equal(res.statusCode, 200)
  t.match(res.json(), { principal: null, decisions: [{ plugin: '@portcullis/authn', outcome: 'would-deny', reason: 'PORTCULLIS_AUTHN_MISSING_CREDENTIALS' }] })
  t.equal((await app.inject('/strict')).statusCode, 401, 'a route can still enforce')
})

test('bad options fail at startup naming the option', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    [{ methods: {} }, /authn\.methods must be at least one method/],
    [{}, /authn\.methods must be an object \(got undefined\)/],
    [{ methods, realm: 'a"b' }, /authn\.realm must be a non-empty string without quotes/],
    [{ methods, mode: 'audit' }, /authn\.mode must be one of enforce, report/],
    [{ methods, authenticateNotFound: 'yes' }, /authn\.authenticateNotFound must be a boolean/],
    [{ methods, default: {} }, /authn\.default is not a known option; allowed: methods, realm, mode, defaults, revocation, authenticateNotFound/],
    [{ methods: { x: null } }, /authn\.methods\.x must be an object with a type/],
    [{ methods: { x: { type: 'saml' } } }, /authn\.methods\.x\.type must be one of api-key, basic, jwt/],
    [{ methods: { x: { type: 'api-key' } } }, /authn\.methods\.x must be given exactly one of store or keys/],
    [{ methods: { x: { type: 'api-key', store: {} } } }, /authn\.methods\.x\.store must be an object with find/],
    [{ methods: { x: { type: 'api-key', keys: [], header: 'Authorization' } } }, /authn\.methods\.x\.header must be a header name other than authorization/],
    [{ methods: { x: { type: 'api-key', keys: [], query: '' } } }, /authn\.methods\.x\.query must be a query parameter name/],
    [{ methods, defaults: { methods: ['nope'] } }, /authn\.defaults\.methods must be names of configured methods: key, basic \(got "nope"\)/],
    [{ methods, defaults: { methods: [] } }, /authn\.defaults\.methods must be a non-empty list of: key, basic/],
    [{ methods, defaults: { require: 'some' } }, /authn\.defaults\.require must be any or all/],
    [{ methods, defaults: { anonymous: 'yes' } }, /authn\.defaults\.anonymous must be a boolean/],
    [{ methods, defaults: { mode: 'x' } }, /authn\.defaults\.mode must be one of enforce, report/]
  ]
  for (const [options, message] of cases) {
    await t.rejects(build(options as AuthnOptions), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, message.source)
  }
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisAuthn, { methods })
  t.throws(() => app.get('/x', { config: { authn: { methods: ['saml'] } } }, async () => 'x'), /route GET \/x config\.authn\.methods must be names of configured methods/)
})

test('authn needs core registered first', async (t) => {
  const app = Fastify()
  app.register(portcullisAuthn, { methods })
  await t.rejects(async () => app.ready(), /@portcullis\/core/)
})
