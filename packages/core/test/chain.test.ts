import { test } from 'tap'
import Fastify from 'fastify'
import fp from 'fastify-plugin'
import { chainOf, claimChainStep, portcullisCore } from '../src/index.js'

const part = (step: number, name: string, hooks: Array<'onRequest' | 'preHandler' | 'preValidation' | 'onResponse'> = ['onRequest']) =>
  fp(async (app) => { claimChainStep(app, { step, name, hooks }) }, { name })

test('parts claim their places in registration order, and core claims step 1', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(part(5, 'authn'))
  await app.register(part(7, 'authz', ['onRequest', 'preHandler']))
  t.same(chainOf(app).map((p) => `${p.step} ${p.name}`), ['1 @portcullis/core', '5 authn', '7 authz'])
  t.ok(Object.isFrozen(chainOf(app)[2]?.hooks))
  t.same(chainOf(Fastify()), [], 'an app with no part has an empty chain')
})

test('a part registered twice in one context fails startup', async (t) => {
  const app = Fastify()
  app.register(portcullisCore)
  app.register(portcullisCore)
  await t.rejects(async () => app.ready(), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: /^@portcullis\/core is registered twice in the same context; register it once/ })
})

test('a part registered after a later step it shares a hook with fails startup, naming both and the fix', async (t) => {
  const app = Fastify()
  app.register(portcullisCore)
  app.register(part(7, 'authz', ['onRequest', 'preHandler']))
  app.register(part(5, 'authn'))
  await t.rejects(async () => app.ready(), {
    message: 'authn (step 5) is registered after authz (step 7); Fastify runs onRequest hooks in the order they are added, so authz would run first. Register authn before it, or register both through the meta-plugin portcullis, which keeps the recommended order'
  })
})

test('parts that share no hook may come in any order', async (t) => {
  const app = Fastify()
  app.register(portcullisCore)
  app.register(part(12, 'audit', ['onResponse']))
  app.register(part(8, 'validation', ['preValidation']))
  app.register(part(5, 'authn'))
  await t.resolves(async () => app.ready())
  t.same(chainOf(app).map((p) => p.name), ['@portcullis/core', 'audit', 'validation', 'authn'])
})

test('a child context sees its parents\' parts; what it registers stays in it', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(part(5, 'authn'))
  let inside: string[] = []
  await app.register(async (child) => {
    await child.register(part(7, 'authz'))
    inside = chainOf(child).map((p) => p.name)
  })
  t.same(inside, ['@portcullis/core', 'authn', 'authz'])
  t.same(chainOf(app).map((p) => p.name), ['@portcullis/core', 'authn'], 'the parent does not see the child\'s part')
  const wrong = Fastify()
  wrong.register(portcullisCore)
  wrong.register(part(7, 'authz'))
  wrong.register(async (child) => { await child.register(part(5, 'authn')) })
  await t.rejects(async () => wrong.ready(), { message: /^authn \(step 5\) is registered after authz \(step 7\)/ }, 'a parent\'s later step runs first in the child too')
  const twice = Fastify()
  twice.register(portcullisCore)
  twice.register(part(5, 'authn'))
  twice.register(async (child) => { await child.register(part(5, 'authn')) })
  await t.rejects(async () => twice.ready(), { message: /^authn is registered twice/ })
})
