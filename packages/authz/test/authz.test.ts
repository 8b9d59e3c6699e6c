import { test } from 'tap'
import { as, build } from './helpers.js'
import type { AuthzOptions } from '../src/index.js'

const roles: AuthzOptions['roles'] = {
  user: { permissions: ['orders:read'] },
  admin: { inherits: ['user'], permissions: ['orders:delete'] },
  root: { inherits: ['admin'] }
}

test('a route without a rule is denied, whoever asks', async (t) => {
  const app = await build({ roles }, { 'GET /new': undefined, 'GET /open': false })
  const res = await app.inject({ url: '/new', headers: as('bob;root') })
  t.equal(res.statusCode, 403)
  t.equal(res.json().code, 'PORTCULLIS_AUTHZ_NO_RULE')
  t.equal((await app.inject('/new')).statusCode, 403)
  t.equal((await app.inject('/open')).statusCode, 200, 'public routes are marked explicitly')
  t.same(app.reached, ['GET /open'])
})

test('no principal on a protected route is 401, never 403', async (t) => {
  const app = await build({ roles, realm: 'orders' }, { 'GET /orders': { anyRole: ['user'] } })
  const res = await app.inject('/orders')
  t.equal(res.statusCode, 401)
  t.equal(res.headers['www-authenticate'], 'Bearer realm="orders"')
  t.equal(res.json().code, 'PORTCULLIS_AUTHZ_UNAUTHENTICATED')
})

test('roles follow the hierarchy: admin includes user, not the reverse', async (t) => {
  const app = await build({ roles }, { 'GET /orders': { anyRole: ['user'] }, 'DELETE /orders/:id': { anyRole: ['admin'] } })
  t.equal((await app.inject({ url: '/orders', headers: as('alice;user') })).statusCode, 200)
  t.equal((await app.inject({ url: '/orders', headers: as('bob;admin') })).statusCode, 200)
  t.equal((await app.inject({ url: '/orders', headers: as('carol;root') })).statusCode, 200, 'transitively')
  const alice = await app.inject({ method: 'DELETE', url: '/orders/1', headers: as('alice;user') })
  t.equal(alice.statusCode, 403)
  t.equal(alice.json().code, 'PORTCULLIS_AUTHZ_FORBIDDEN')
  t.equal((await app.inject({ method: 'DELETE', url: '/orders/1', headers: as('bob;admin') })).statusCode, 200)
  t.equal((await app.inject({ url: '/orders', headers: as('eve;guest') })).statusCode, 403, 'undeclared roles grant nothing')
})

test('scopes are exact and case-sensitive; a missing one says which (RFC 6750)', async (t) => {
  const app = await build({}, { 'POST /orders': { allScopes: ['orders:write'] }, 'GET /report': { anyScope: ['reports:read', 'orders:admin'] } })
  t.equal((await app.inject({ method: 'POST', url: '/orders', headers: as('alice;;orders:read orders:write') })).statusCode, 200)
  for (const scopes of ['orders:read', 'Orders:write', 'orders:write2', 'orders:writ']) {
    const res = await app.inject({ method: 'POST', url: '/orders', headers: as(`alice;;${scopes}`) })
    t.equal(res.statusCode, 403, scopes)
    t.equal(res.headers['www-authenticate'], 'Bearer realm="api", error="insufficient_scope", scope="orders:write"')
    t.equal(res.json().code, 'PORTCULLIS_AUTHZ_INSUFFICIENT_SCOPE')
  }
  t.equal((await app.inject({ url: '/report', headers: as('bob;;orders:admin') })).statusCode, 200)
  t.equal((await app.inject({ url: '/report', headers: as('bob;;orders:read') })).headers['www-authenticate'], 'Bearer realm="api", error="insufficient_scope", scope="reports:read orders:admin"')
})

test('permissions come from roles; all-of and any-of; alternatives', async (t) => {
  const app = await build({ roles }, {
    'GET /a': { allPermissions: ['orders:read', 'orders:delete'] },
    'GET /b': { anyPermission: ['orders:delete', 'orders:refund'] },
    'GET /c': { allRoles: ['user', 'admin'] },
    'GET /d': { anyOf: [{ anyRole: ['admin'] }, { allScopes: ['orders:admin'] }] },
    'GET /e': { anyRole: ['user'], allScopes: ['orders:write'] }
  })
  const status = async (url: string, who: string) => (await app.inject({ url, headers: as(who) })).statusCode
  t.equal(await status('/a', 'bob;admin'), 200)
  t.equal(await status('/a', 'alice;user'), 403)
  t.equal(await status('/b', 'bob;admin'), 200)
  t.equal(await status('/b', 'alice;user'), 403)
  t.equal(await status('/c', 'bob;admin'), 200, 'admin includes user')
  t.equal(await status('/c', 'alice;user'), 403)
  t.equal(await status('/d', 'bob;admin'), 200)
  t.equal(await status('/d', 'svc;;orders:admin'), 200, 'the second alternative')
  const neither = await app.inject({ url: '/d', headers: as('alice;user;orders:read') })
  t.equal(neither.statusCode, 403)
  t.equal(neither.json().code, 'PORTCULLIS_AUTHZ_FORBIDDEN', 'a missing role is not a scope problem')
  t.equal(await status('/e', 'alice;user;orders:write'), 200)
  const roleMissing = await app.inject({ url: '/e', headers: as('alice;guest;') })
  t.equal(roleMissing.json().code, 'PORTCULLIS_AUTHZ_FORBIDDEN')
})

test('HEAD follows the rule of GET', async (t) => {
  const app = await build({ roles }, { 'GET /orders': { anyRole: ['admin'] } })
  t.equal((await app.inject({ method: 'HEAD', url: '/orders', headers: as('alice;user') })).statusCode, 403)
  t.equal((await app.inject({ method: 'HEAD', url: '/orders', headers: as('bob;admin') })).statusCode, 200)
  t.same(app.reached, ['HEAD /orders'])
})

test('method and URL override headers are refused, or stripped', async (t) => {
  const app = await build({ roles }, { 'GET /orders': { anyRole: ['user'] }, 'GET /open': false })
  for (const header of ['x-http-method-override', 'X-HTTP-Method', 'x-method-override', 'x-original-url', 'x-rewrite-url']) {
    const res = await app.inject({ url: '/orders', headers: { ...as('alice;user'), [header]: header.includes('url') ? '/admin' : 'DELETE' } })
    t.equal(res.statusCode, 400, header)
    t.equal(res.json().code, 'PORTCULLIS_AUTHZ_OVERRIDE_REFUSED')
  }
  t.equal((await app.inject({ url: '/open', headers: { 'x-http-method-override': 'DELETE' } })).statusCode, 400, 'on public routes too')
  const strip = await build({ roles, overrideHeaders: 'strip' }, { 'GET /orders': { anyRole: ['user'] } })
  const res = await strip.inject({ url: '/orders', headers: { ...as('alice;user'), 'x-http-method-override': 'DELETE', 'x-original-url': '/admin' } })
  t.equal(res.statusCode, 200)
  t.notOk('x-http-method-override' in res.json().headers, 'the handler never sees it')
  t.notOk('x-original-url' in res.json().headers)
})

test('decisions name the rule that decided; report mode lets the request through', async (t) => {
  const app = await build({ roles, mode: 'report' }, { 'GET /orders/:id': { anyRole: ['admin'] }, 'GET /fine': { anyRole: ['user'] } })
  const res = await app.inject({ url: '/orders/7', headers: as('alice;user') })
  t.equal(res.statusCode, 200)
  t.match(res.json().decisions, [{ plugin: '@portcullis/authz', outcome: 'would-deny', reason: 'PORTCULLIS_AUTHZ_FORBIDDEN', rule: 'GET /orders/:id' }])
  t.match((await app.inject({ url: '/fine', headers: as('alice;user') })).json().decisions, [{ outcome: 'allow', reason: 'PORTCULLIS_AUTHZ_OK', rule: 'GET /fine' }])
})

test('a default rule for routes without their own; unknown paths stay 404', async (t) => {
  const app = await build({ roles, defaultRule: { anyRole: ['user'] } }, { 'GET /plain': undefined })
  t.equal((await app.inject({ url: '/plain', headers: as('alice;user') })).statusCode, 200)
  t.equal((await app.inject({ url: '/plain' })).statusCode, 401)
  t.equal((await app.inject({ url: '/missing', headers: as('alice;user') })).statusCode, 404)
  t.equal((await app.inject({ url: '/missing' })).statusCode, 404)
})

test('routes added before authz get the default rule', async (t) => {
  const Fastify = (await import('fastify')).default
  const { portcullisCore } = await import('@portcullis/core')
  const { portcullisAuthz } = await import('../src/index.js')
  const app = Fastify()
  await app.register(portcullisCore)
  app.get('/early', async () => 'early')
  await app.register(portcullisAuthz, {})
  const res = await app.inject('/early')
  t.equal(res.statusCode, 403)
  t.match(res.json(), { code: 'PORTCULLIS_AUTHZ_NO_RULE' })
})

test('the same principal object is worked out once', async (t) => {
  const { compileRoles } = await import('../src/roles.js')
  const grantsOf = compileRoles(roles)
  const { createPrincipal } = await import('@portcullis/core')
  const bob = createPrincipal({ id: 'bob', type: 'user', method: 'test', roles: ['admin', 'other'] })
  const grants = grantsOf(bob)
  t.equal(grantsOf(bob), grants)
  t.same([...grants.roles].sort(), ['admin', 'other', 'user'])
  t.same([...grants.permissions].sort(), ['orders:delete', 'orders:read'])
})

test('bad rules and options fail at startup naming them', async (t) => {
  const cases: Array<[AuthzOptions, Record<string, unknown>, RegExp]> = [
    [{ roles: { a: { inherits: ['b'] }, b: { inherits: ['a'] } } }, {}, /authz\.roles must be a hierarchy without cycles: a ⊇ b ⊇ a/],
    [{ roles: { a: { inherits: ['ghost'] } } }, {}, /authz\.roles\.a\.inherits must be a list of declared roles: a/],
    [{ roles: { a: { permissions: 'all' as never } } }, {}, /authz\.roles\.a\.permissions must be a list of strings/],
    [{ roles: [] as never }, {}, /authz\.roles must be an object/],
    [{ mode: 'x' as never }, {}, /authz\.mode must be one of enforce, report/],
    [{ realm: 'a"b' }, {}, /authz\.realm must be a non-empty string/],
    [{ overrideHeaders: 'allow' as never }, {}, /authz\.overrideHeaders must be refuse or strip/],
    [{ defaultRule: 'allow' as never }, {}, /authz\.defaultRule must be false \(a public route\)/],
    [{ policy: {} } as never, {}, /authz\.policy is not a known option/],
    [{ roles }, { 'GET /x': { anyRole: ['admn'] } }, /route GET \/x config\.authz must be naming declared roles only: user, admin, root \(got "admn"\)/],
    [{}, { 'GET /x': {} }, /config\.authz must be at least one of anyRole/],
    [{}, { 'GET /x': { anyRole: [] } }, /config\.authz\.anyRole must be a non-empty list of names without spaces/],
    [{}, { 'GET /x': { allScopes: ['orders:read orders:write'] } }, /allScopes must be a non-empty list of names without spaces/],
    [{}, { 'GET /x': { anyOf: [] } }, /config\.authz\.anyOf must be a non-empty list of requirements/],
    [{}, { 'GET /x': { anyOf: [{ anyRole: ['a'] }], anyRole: ['b'] } }, /config\.authz\.anyRole is not a known option; allowed: anyOf/],
    [{}, { 'GET /x': { anyOf: [{ roles: ['a'] }] } }, /config\.authz\.anyOf\[0\]\.roles is not a known option/],
    [{}, { 'GET /x': true }, /config\.authz must be false \(a public route\)/]
  ]
  for (const [options, routes, message] of cases) {
    await t.rejects(build(options, routes as never), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, message.source)
  }
})
