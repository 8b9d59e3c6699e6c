import { test } from 'tap'
import Fastify from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { as, build } from './helpers.js'
import { compileCondition, portcullisAuthz, MAX_CONDITION_LENGTH } from '../src/index.js'

const roles = { user: {}, admin: { inherits: ['user'] } }

test('a condition over the validated body, the principal and the route decides after validation', async (t) => {
  const app = await build({ roles }, {})
  app.post('/orders', {
    schema: { body: { type: 'object', properties: { qty: { type: 'integer' } }, required: ['qty'] } },
    config: { authz: { anyRole: ['user'], when: 'request.body.qty <= 10 || "admin" in grants.roles' } }
  }, async (request) => ({ decisions: request.decisions }))
  const post = (who: string, body: unknown) => app.inject({ method: 'POST', url: '/orders', headers: as(who), payload: body as object })
  const small = await post('alice;user', { qty: 3 })
  t.equal(small.statusCode, 200)
  t.same(small.json().decisions.map((d: { reason: string }) => d.reason), ['PORTCULLIS_AUTHZ_OK', 'PORTCULLIS_AUTHZ_CONDITIONS_OK'])
  const large = await post('alice;user', { qty: 50 })
  t.equal(large.statusCode, 403)
  t.equal(large.json().code, 'PORTCULLIS_AUTHZ_CONDITION_FAILED')
  t.equal((await post('bob;admin', { qty: 50 })).statusCode, 200, 'grants carry the role hierarchy')
  t.equal((await post('alice;user', { qty: 'many' })).statusCode, 400, 'validation runs first: the condition never sees raw input')
  t.equal((await app.inject({ method: 'POST', url: '/orders', payload: { qty: 1 } })).statusCode, 401, 'no principal is 401 before any condition')
})

test('an expression that fails while evaluating denies (fail closed)', async (t) => {
  const app = await build({}, { 'POST /notes': { when: 'request.body.owner == principal.id' }, 'GET /flag': { when: 'request.query.flag' } })
  const missing = await app.inject({ method: 'POST', url: '/notes', headers: as('alice'), payload: { text: 'hi' } })
  t.equal(missing.statusCode, 403)
  t.equal(missing.json().code, 'PORTCULLIS_AUTHZ_CONDITION_ERROR')
  t.notMatch(missing.body, /owner|No such key/, 'the problem does not describe the expression')
  t.equal((await app.inject({ method: 'POST', url: '/notes', headers: as('alice'), payload: { owner: 'alice' } })).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/notes', headers: as('alice'), payload: { owner: 'bob' } })).statusCode, 403)
  t.equal((await app.inject({ url: '/flag?flag=true', headers: as('alice') })).statusCode, 403, 'a string is not true')
  t.same(app.reached, ['POST /notes'])
})

test('env carries the client IP from core and the time; request carries method, route and headers', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore, { trustedProxies: ['127.0.0.1/32'] })
  app.addHook('onRequest', async (request) => {
    const { createPrincipal, setPrincipal } = await import('@portcullis/core')
    setPrincipal(request, createPrincipal({ id: 'alice', type: 'user', method: 'test', claims: { tenant: 'acme' } }))
  })
  await app.register(portcullisAuthz)
  app.get('/t/:tenant/report', {
    config: {
      authz: {
        when: 'env.clientIp.startsWith("10.") && request.method == "GET" && request.route == "/t/:tenant/report" && ' +
          'request.params.tenant == principal.claims.tenant && env.time > timestamp("2020-01-01T00:00:00Z") && request.headers["x-purpose"] == "audit"'
      }
    }
  }, async () => ({ ok: true }))
  const headers = { 'x-forwarded-for': '10.1.2.3', 'x-purpose': 'audit' }
  t.equal((await app.inject({ url: '/t/acme/report', headers })).statusCode, 200)
  t.equal((await app.inject({ url: '/t/acme/report', headers: { ...headers, 'x-forwarded-for': '192.0.2.1' } })).statusCode, 403)
  t.equal((await app.inject({ url: '/t/other/report', headers })).statusCode, 403)
  t.equal((await app.inject({ url: '/t/acme/report', headers: { 'x-forwarded-for': '10.1.2.3' } })).statusCode, 403, 'a missing header is an error, and denies')
  t.equal((await app.inject({ method: 'HEAD', url: '/t/acme/report', headers })).statusCode, 403, 'HEAD is not GET to a condition, and is denied here')
})

test('report mode records what a condition would deny and lets the request through', async (t) => {
  const app = await build({ mode: 'report' }, { 'GET /x': { when: 'principal.id == "bob"' } })
  const res = await app.inject({ url: '/x', headers: as('alice') })
  t.equal(res.statusCode, 200)
  t.same(res.json().decisions.map((d: { outcome: string, reason: string }) => `${d.outcome} ${d.reason}`), ['allow PORTCULLIS_AUTHZ_OK', 'would-deny PORTCULLIS_AUTHZ_CONDITION_FAILED', 'allow PORTCULLIS_AUTHZ_CONDITIONS_OK'])
})

test('an expression that does not compile fails startup with its position', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    ['principal.id = "x"', /config\.authz\.when is not a valid condition at line 1, column 14: Unexpected character: =/],
    ['request.method == "GET" &&\n  principal.id ==', /at line 2, column 18: Unexpected token: EOF/],
    ['user.id == "x"', /at line 1, column 1: Unknown variable: user/],
    ['"a" + 1 == "b"', /at line 1, column 1: no such overload/],
    ['size(principal.roles)', /yields int, not bool/],
    ['', /must be a CEL expression/],
    [42, /must be a CEL expression/],
    ['true || '.repeat(MAX_CONDITION_LENGTH / 8) + 'true', /at most 2048 characters/]
  ]
  for (const [when, message] of cases) {
    const app = Fastify()
    await app.register(portcullisCore)
    await app.register(portcullisAuthz)
    await t.rejects(async () => {
      app.get('/x', { config: { authz: { when } as never } }, async () => 'x')
      await app.ready()
    }, { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, String(when).slice(0, 40))
  }
  t.throws(() => compileCondition('[1, 2, 3].exists(x, x > 2) && ' + '('.repeat(40) + 'true' + ')'.repeat(40), 'when'), /not a valid condition/, 'nesting is bounded')
})
