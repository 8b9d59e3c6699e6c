import { test } from 'tap'
import Fastify from 'fastify'
import {
  allow, checkMode, createError, decisionsOf, deny, portcullisCore, SnapshotHolder, type Mode
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
