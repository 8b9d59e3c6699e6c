import { test } from 'tap'
import Fastify from 'fastify'
import {
  allow, checkMode, createError, decisionsOf, deny, hooksOf, portcullisCore, prepareDecision, recordPrepared, routeConfigOf, SnapshotHolder, type Mode
} from '../src/index.js'

const Blocked = createError('PORTCULLIS_TEST_BLOCKED', 'Blocked by rule', 403, 'Forbidden')

async function build (mode: Mode, snapshot?: SnapshotHolder) {
  const app = Fastify()
  await app.register(portcullisCore, snapshot === undefined ? {} : { snapshot })
  app.addHook('onRequest', async (request) => {
    allow(request, '@portcullis/test-ip', 'PORTCULLIS_TEST_IP_OK')
    if (request.headers['x-bad'] !== undefined) deny(request, mode, '@portcullis/test', new Blocked(), 'rule-7')
  })
  app.get('/', async (request) => ({ decisions: decisionsOf(request) }))
  return app
}

test('enforce mode records the denial and rejects', async (t) => {
  const app = await build('enforce')
  const denied = await app.inject({ url: '/', headers: { 'x-bad': '1' } })
  t.equal(denied.statusCode, 403)
  t.equal(denied.json().code, 'PORTCULLIS_TEST_BLOCKED')
  const ok = await app.inject('/')
  t.same(ok.json().decisions, [{ plugin: '@portcullis/test-ip', outcome: 'allow', reason: 'PORTCULLIS_TEST_IP_OK', policyVersion: null }])
})

test('report mode records would-deny and lets the request through', async (t) => {
  const app = await build('report')
  const res = await app.inject({ url: '/', headers: { 'x-bad': '1' } })
  t.equal(res.statusCode, 200)
  t.same(res.json().decisions, [
    { plugin: '@portcullis/test-ip', outcome: 'allow', reason: 'PORTCULLIS_TEST_IP_OK', policyVersion: null },
    { plugin: '@portcullis/test', outcome: 'would-deny', reason: 'PORTCULLIS_TEST_BLOCKED', rule: 'rule-7', policyVersion: null }
  ])
})

test('the denial recorded in enforce mode is visible after the rejection', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore, { snapshot: new SnapshotHolder({ version: 'v1', value: {} }) })
  let seen: unknown
  app.addHook('onResponse', async (request) => { seen = decisionsOf(request) })
  app.addHook('onRequest', async (request) => { deny(request, 'enforce', '@portcullis/test', new Blocked()) })
  app.get('/', async () => 'unreachable')
  const res = await app.inject('/')
  t.equal(res.statusCode, 403)
  t.same(seen, [{ plugin: '@portcullis/test', outcome: 'deny', reason: 'PORTCULLIS_TEST_BLOCKED', policyVersion: 'v1' }])
})

test('a request nothing decided about has no decisions', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  app.get('/', async (request) => ({ decisions: decisionsOf(request), raw: request.decisions }))
  t.same((await app.inject('/')).json(), { decisions: [], raw: null })
})

test('checkMode accepts enforce and report only', async (t) => {
  t.equal(checkMode(undefined, 'x.mode'), 'enforce')
  t.equal(checkMode('report', 'x.mode'), 'report')
  t.throws(() => checkMode('audit', 'authn.mode'), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: 'authn.mode must be one of enforce, report (got "audit")' })
})

test('a prepared decision is stamped with the version each request pinned, and shared while it stays the same', async (t) => {
  const snapshot = new SnapshotHolder({ version: 'v1', value: {} })
  const app = Fastify()
  await app.register(portcullisCore, { snapshot })
  const routeAllowed = prepareDecision({ plugin: '@portcullis/test', outcome: 'allow', reason: 'PORTCULLIS_TEST_OK', rule: 'GET /' })
  const seen: unknown[] = []
  app.addHook('onRequest', async (request) => { seen.push(recordPrepared(request, routeAllowed)) })
  app.get('/', async (request) => ({ decisions: decisionsOf(request) }))
  const first = await app.inject('/')
  t.same(first.json().decisions, [{ plugin: '@portcullis/test', outcome: 'allow', reason: 'PORTCULLIS_TEST_OK', rule: 'GET /', policyVersion: 'v1' }])
  await app.inject('/')
  t.equal(seen[0], seen[1], 'one record for every request on v1')
  t.ok(Object.isFrozen(seen[0]), 'and nobody can change it')
  snapshot.swap({ version: 'v2', value: {} })
  const second = await app.inject('/')
  t.equal(second.json().decisions[0].policyVersion, 'v2', 'a request on v2 never carries v1')
  t.not(seen[2], seen[0])
})

test('a prepared decision without a rule, on an app without snapshots, has a null policy version', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  const ipAllowed = prepareDecision({ plugin: '@portcullis/test-ip', outcome: 'allow', reason: 'PORTCULLIS_TEST_IP_OK' })
  app.addHook('onRequest', async (request) => { recordPrepared(request, ipAllowed) })
  app.get('/', async (request) => ({ decisions: decisionsOf(request) }))
  t.same((await app.inject('/')).json().decisions, [{ plugin: '@portcullis/test-ip', outcome: 'allow', reason: 'PORTCULLIS_TEST_IP_OK', policyVersion: null }])
})

test('routeConfigOf reads the matched route once, and again after the request is handed to the not-found handler', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore, { problemDetails: false })
  const read: Array<string | undefined> = []
  const tagOf = (request: Parameters<typeof routeConfigOf>[0]) => (routeConfigOf(request) as { tag?: string }).tag
  app.addHook('onRequest', async (request) => { read.push(tagOf(request)) })
  app.addHook('preHandler', async (request) => { read.push(tagOf(request)) })
  app.setNotFoundHandler(async (request, reply) => {
    read.push(tagOf(request))
    return reply.code(404).send({ missing: true })
  })
  app.get('/found', { config: { tag: 'found' } }, async (request) => ({ tag: tagOf(request) }))
  app.get('/gone', { config: { tag: 'gone' } }, async (_request, reply) => { reply.callNotFound() })
  t.same((await app.inject('/found')).json(), { tag: 'found' })
  t.same(read, ['found', 'found'])
  read.length = 0
  t.equal((await app.inject('/gone')).statusCode, 404)
  // The not-found context runs its own preHandler hooks, then its handler: both see its config.
  t.same(read, ['gone', 'gone', undefined, undefined], 'after callNotFound, the route matched first is not seen again')
})

test('hooksOf gives a route\'s hook option as a list, whichever form it was given in', async (t) => {
  const hook = (): void => {}
  t.same(hooksOf(undefined), [])
  t.same(hooksOf(hook), [hook])
  t.same(hooksOf([hook, hook]), [hook, hook])
})
