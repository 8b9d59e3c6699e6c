import { test } from 'tap'
import Fastify from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { as, build } from './helpers.js'
import { portcullisAuthz, type AuthzRule } from '../src/index.js'

const orders = new Map([['1', { id: '1', owner: 'alice' }], ['2', { id: '2', owner: 'bob' }]])
const loadOrder = async (request: { params: unknown }) => orders.get((request.params as { id: string }).id)

test('a route parameter must equal the principal id', async (t) => {
  const app = await build({}, {})
  app.get('/users/:userId/cart', {
    config: { authz: { owner: { param: 'userId' } } },
    // The route's own preHandler runs after ownership is settled, never on a denied request.
    preHandler: async (request) => { app.reached.push(`${request.method} ${request.url}`) }
  }, async () => ({ ok: true }))
  t.equal((await app.inject({ url: '/users/alice/cart', headers: as('alice') })).statusCode, 200)
  const other = await app.inject({ url: '/users/bob/cart', headers: as('alice') })
  t.equal(other.statusCode, 403)
  t.equal(other.json().code, 'PORTCULLIS_AUTHZ_NOT_OWNER')
  t.equal((await app.inject({ url: '/users/ALICE/cart', headers: as('alice') })).statusCode, 403, 'exact match')
  t.equal((await app.inject({ url: '/users/al%69ce/cart', headers: as('alice') })).statusCode, 200, 'on the decoded, routed value')
  t.same(app.reached, ['GET /users/alice/cart', 'GET /users/al%69ce/cart'])
})

test('the owner of a loaded resource; 404 instead of 403 when asked not to reveal it', async (t) => {
  const app = await build({}, {
    'GET /orders/:id': { resource: loadOrder, owner: { resource: 'owner' } },
    'GET /hidden/:id': { resource: loadOrder, owner: { resource: 'owner', status: 404 } }
  })
  t.equal((await app.inject({ url: '/orders/1', headers: as('alice') })).statusCode, 200)
  t.equal((await app.inject({ url: '/orders/2', headers: as('alice') })).statusCode, 403)
  t.equal((await app.inject({ url: '/orders/9', headers: as('alice') })).statusCode, 403, 'no resource, no ownership')
  const hidden = await app.inject({ url: '/hidden/2', headers: as('alice') })
  t.equal(hidden.statusCode, 404)
  t.equal(hidden.json().code, 'PORTCULLIS_AUTHZ_NOT_FOUND')
  const missing = await app.inject({ url: '/hidden/9', headers: as('alice') })
  t.same({ ...missing.json(), instance: '' }, { ...hidden.json(), instance: '' }, 'another\'s object and a missing one look the same')
  t.equal((await app.inject({ method: 'HEAD', url: '/orders/2', headers: as('alice') })).statusCode, 403, 'HEAD as GET')
})

test('a body or query field against a claim, or a member of a list claim', async (t) => {
  const app = await build({}, {
    'POST /transfers': { owner: { body: 'from.account', principal: 'claims.accounts' } },
    'GET /statements': { owner: { query: 'account', principal: 'claims.accounts' } },
    'POST /tenants': { owner: { body: 'tenant', principal: 'claims.org.id' } }
  })
  const claims = { accounts: ['A-1', 'A-2'], org: { id: 'acme' } }
  const transfer = (from: unknown) => app.inject({ method: 'POST', url: '/transfers', headers: as('alice', claims), payload: { from } })
  t.equal((await transfer({ account: 'A-2' })).statusCode, 200)
  t.equal((await transfer({ account: 'B-1' })).statusCode, 403)
  t.equal((await transfer({ account: ['A-1'] })).statusCode, 403, 'a list is not an account')
  t.equal((await transfer({})).statusCode, 403, 'a missing field is not owned')
  t.equal((await transfer('A-1')).statusCode, 403)
  t.equal((await app.inject({ url: '/statements?account=A-1', headers: as('alice', claims) })).statusCode, 200)
  t.equal((await app.inject({ url: '/statements?account=A-1&account=A-9', headers: as('alice', claims) })).statusCode, 403, 'a repeated parameter is a list')
  t.equal((await app.inject({ url: '/statements', headers: as('alice') })).statusCode, 403, 'a principal without the claim owns nothing')
  t.equal((await app.inject({ method: 'POST', url: '/tenants', headers: as('alice', claims), payload: { tenant: 'acme' } })).statusCode, 200)
})

test('numeric ids compare as their decimal text', async (t) => {
  const app = await build({}, { 'POST /accounts': { owner: { body: 'id', principal: 'claims.account' } } })
  const post = (id: unknown) => app.inject({ method: 'POST', url: '/accounts', headers: as('alice', { account: '42' }), payload: { id } })
  t.equal((await post(42)).statusCode, 200)
  t.equal((await post(42.5)).statusCode, 403)
  t.equal((await post('')).statusCode, 403)
})

test('a resolver from the host app, with the loaded resource', async (t) => {
  const seen: unknown[] = []
  const rule: AuthzRule = {
    resource: loadOrder,
    owner: {
      resolve: async (request, principal, resource) => {
        seen.push(resource)
        return principal.id === (resource as { owner: string } | null)?.owner || request.headers['x-support'] === 'yes'
      }
    }
  }
  const app = await build({}, { 'GET /orders/:id': rule })
  t.equal((await app.inject({ url: '/orders/1', headers: as('alice') })).statusCode, 200)
  t.equal((await app.inject({ url: '/orders/2', headers: as('alice') })).statusCode, 403)
  t.equal((await app.inject({ url: '/orders/2', headers: { ...as('alice'), 'x-support': 'yes' } })).statusCode, 200)
  t.same(seen, [orders.get('1'), orders.get('2'), orders.get('2')])
})

test('a resource loader that fails fails the request without details', async (t) => {
  const app = await build({}, { 'GET /orders/:id': { resource: async () => { throw new Error('db down at 10.0.0.5') }, owner: { resource: 'owner' } } })
  const res = await app.inject({ url: '/orders/1', headers: as('alice') })
  t.equal(res.statusCode, 500)
  t.notMatch(res.body, /10\.0\.0\.5/)
  t.same(app.reached, [])
})

test('bad ownership rules fail at startup naming them', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    [{ owner: 'id' }, /config\.authz\.owner must be/],
    [{ owner: {} }, /owner must name exactly one of param, query, body, resource \(got none\)/],
    [{ owner: { param: 'id', body: 'id' } }, /\(got param, body\)/],
    [{ owner: { param: 'a..b' } }, /owner\.param must be a field name or dotted path/],
    [{ owner: { param: 'id', principal: 'roles' } }, /owner\.principal must be id, tenant, credentialId or claims\.<path>/],
    [{ owner: { param: 'id', status: 401 } }, /owner\.status must be 403 or 404/],
    [{ owner: { resolve: 'yes' } }, /owner\.resolve must be a function/],
    [{ owner: { resource: 'owner' } }, /owner\.resource must be used with a resource loader/],
    [{ resource: 'orders', owner: { resource: 'owner' } }, /config\.authz\.resource must be a function/],
    [{ owner: { param: 'id', by: 'x' } }, /unknown option|by/]
  ]
  for (const [authz, message] of cases) {
    const app = Fastify()
    await app.register(portcullisCore)
    await app.register(portcullisAuthz)
    await t.rejects(async () => {
      app.get('/x/:id', { config: { authz: authz as never } }, async () => 'x')
      await app.ready()
    }, { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, JSON.stringify(authz))
  }
})
