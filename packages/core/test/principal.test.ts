import { test } from 'tap'
import Fastify from 'fastify'
import { ANONYMOUS, createPrincipal, portcullisCore, setPrincipal, type PrincipalInput } from '../src/index.js'

test('createPrincipal validates and freezes', async (t) => {
  const p = createPrincipal({ id: 'alice', type: 'user', method: 'jwt', roles: ['admin'], scopes: ['orders:read'], claims: { sub: 'alice' }, plan: 'pro', tenant: 't1', credentialId: 'jti-1' })
  t.same(p, { id: 'alice', type: 'user', method: 'jwt', roles: ['admin'], scopes: ['orders:read'], claims: { sub: 'alice' }, tenant: 't1', plan: 'pro', credentialId: 'jti-1' })
  t.ok(Object.isFrozen(p) && Object.isFrozen(p.roles) && Object.isFrozen(p.scopes) && Object.isFrozen(p.claims))
  t.throws(() => { (p.roles as string[]).push('root') }, TypeError)
  t.same(ANONYMOUS, { id: 'anonymous', type: 'anonymous', method: 'anonymous', roles: [], scopes: [], claims: {} })
  const bad: Array<[unknown, RegExp]> = [
    [{ id: '', type: 'user', method: 'jwt' }, /principal\.id/],
    [{ id: 'a', type: 'robot', method: 'jwt' }, /principal\.type must be one of user, service, anonymous, got robot/],
    [{ id: 'a', type: 'user', method: '' }, /principal\.method/],
    [{ id: 'a', type: 'user', method: 'jwt', roles: 'admin' }, /principal\.roles must be an array of strings/],
    [{ id: 'a', type: 'user', method: 'jwt', scopes: [1] }, /principal\.scopes/],
    [{ id: 'a', type: 'user', method: 'jwt', plan: 3 }, /principal\.plan must be a string/]
  ]
  for (const [input, message] of bad) t.throws(() => createPrincipal(input as PrincipalInput), { message })
})

test('request.principal starts null, is set by setPrincipal, and cannot be assigned', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  app.addHook('onRequest', async (request) => {
    if (request.headers['x-test-user'] === 'frozen') setPrincipal(request, createPrincipal({ id: 'bob', type: 'user', method: 'test' }))
    if (request.headers['x-test-user'] === 'plain') setPrincipal(request, { id: 'svc', type: 'service', method: 'test', roles: [], scopes: [], claims: {} })
  })
  app.get('/me', async (request) => {
    let assignment = 'allowed'
    try {
      (request as { principal: unknown }).principal = { id: 'root' }
    } catch (err) {
      assignment = (err as Error).name
    }
    return { principal: request.principal, frozen: Object.isFrozen(request.principal), assignment }
  })
  t.same((await app.inject('/me')).json(), { principal: null, frozen: true, assignment: 'TypeError' })
  t.match((await app.inject({ url: '/me', headers: { 'x-test-user': 'frozen' } })).json(), { principal: { id: 'bob' }, assignment: 'TypeError' })
  t.match((await app.inject({ url: '/me', headers: { 'x-test-user': 'plain' } })).json(), { principal: { id: 'svc', type: 'service' }, frozen: true })
})
