import { test } from 'tap'
import Fastify from 'fastify'
import { portcullisCore, type CoreOptions } from '@portcullis/core'
import { portcullisIpRules, type IpRulesOptions } from '../src/index.js'

async function build (options: IpRulesOptions, core: CoreOptions = {}) {
  const app = Fastify()
  await app.register(portcullisCore, core)
  await app.register(portcullisIpRules, options)
  app.get('/open', async (request) => ({ decisions: request.decisions }))
  app.get('/internal', { config: { ipRules: { allow: ['10.0.0.0/8'] } } }, async () => 'internal')
  return app
}
const from = async (app: Awaited<ReturnType<typeof build>>, remoteAddress: string, url = '/open', headers: Record<string, string> = {}) =>
  (await app.inject({ url, remoteAddress, headers })).statusCode

test('deny wins over allow; an allow list lets only its members pass', async (t) => {
  const app = await build({ allow: ['10.0.0.0/8', '2001:db8::/32'], deny: ['10.6.6.0/24'] })
  t.equal(await from(app, '10.1.2.3'), 200)
  t.equal(await from(app, '10.6.6.6'), 403, 'denied although inside the allow list')
  t.equal(await from(app, '192.0.2.1'), 403, 'outside the allow list')
  t.equal(await from(app, '2001:db8::9'), 200)
  t.equal(await from(app, '::ffff:10.1.2.3'), 200, 'IPv4-mapped IPv6 is its IPv4 form')
  t.equal(await from(app, '::ffff:10.6.6.1'), 403)
  const res = await app.inject({ url: '/open', remoteAddress: '10.6.6.6' })
  t.match(res.json(), { code: 'PORTCULLIS_AUTHZ_IP_DENIED', status: 403 })
  t.equal(await from(app, '192.0.2.1', '/missing'), 403, 'unknown paths get the global rules too')
})

test('a route can only narrow the global rules', async (t) => {
  const app = await build({ deny: ['192.0.2.0/24'] })
  t.equal(await from(app, '198.51.100.1', '/open'), 200)
  t.equal(await from(app, '198.51.100.1', '/internal'), 403)
  t.equal(await from(app, '10.0.0.5', '/internal'), 200)
  t.equal(await from(app, '192.0.2.9', '/open'), 403)
})

test('the client IP is core\'s: forwarded addresses count only through trusted proxies', async (t) => {
  const app = await build({ deny: ['203.0.113.0/24'] }, { trustedProxies: ['10.0.0.1'] })
  t.equal(await from(app, '10.0.0.1', '/open', { 'x-forwarded-for': '203.0.113.7' }), 403, 'through the trusted proxy')
  t.equal(await from(app, '198.51.100.1', '/open', { 'x-forwarded-for': '192.0.2.1' }), 200, 'a client cannot claim another address')
  t.equal(await from(app, '203.0.113.7', '/open', { 'x-forwarded-for': '10.9.9.9' }), 403, 'nor hide its own')
})

test('decisions and report mode', async (t) => {
  const app = await build({ deny: ['192.0.2.0/24'], mode: 'report' })
  const res = await app.inject({ url: '/open', remoteAddress: '192.0.2.1' })
  t.equal(res.statusCode, 200)
  t.match(res.json().decisions, [{ plugin: '@portcullis/authz/ip-rules', outcome: 'would-deny', reason: 'PORTCULLIS_AUTHZ_IP_DENIED', rule: 'ipRules.deny' }])
  t.match((await app.inject({ url: '/open', remoteAddress: '198.51.100.1' })).json().decisions, [{ outcome: 'allow', reason: 'PORTCULLIS_AUTHZ_IP_OK' }])
  const none = await build({})
  t.same((await none.inject({ url: '/open' })).json().decisions, null, 'no rules, no decision')
})

test('invalid or ambiguous notations fail at startup', async (t) => {
  const cases: Array<[IpRulesOptions, RegExp]> = [
    [{ deny: ['10.0.0.1/8'] }, /ipRules\.deny\[0\]: "10\.0\.0\.1\/8" has host bits set/],
    [{ allow: ['127.1'] }, /ipRules\.allow\[0\]: "127\.1" is not an IP address/],
    [{ allow: '10.0.0.0/8' as never }, /ipRules\.allow must be a list of IP addresses/],
    [{ deny: [], block: [] } as never, /ipRules\.block is not a known option/],
    [{ mode: 'x' as never }, /ipRules\.mode must be one of enforce, report/]
  ]
  for (const [options, message] of cases) await t.rejects(build(options), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message })
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisIpRules, {})
  t.throws(() => app.get('/x', { config: { ipRules: { allow: ['0x7f.0.0.1'] } } }, async () => 'x'), /route GET \/x config\.ipRules\.allow\[0\]/)
  t.throws(() => app.get('/y', { config: { ipRules: { mode: 'report' } as never } }, async () => 'y'), /config\.ipRules\.mode is not a known option/)
})
