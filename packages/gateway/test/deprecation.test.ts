import { test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { portcullisDeprecation, type DeprecationOptions, type RouteDeprecation } from '../src/index.js'

const DEPRECATED = '2025-07-01'
const SUNSET = '2026-01-31T12:00:00Z'
const SUNSET_MS = Date.parse(SUNSET)

async function appWith (options?: DeprecationOptions): Promise<FastifyInstance & { seen: string[] }> {
  const app = Fastify() as unknown as FastifyInstance & { seen: string[] }
  app.seen = []
  await app.register(portcullisCore)
  await app.register(portcullisDeprecation, options ?? {})
  // Stands for authentication and everything else after step 2.
  app.addHook('onRequest', async (request) => { app.seen.push(`authn ${request.url}`) })
  app.addHook('onResponse', async (request) => {
    for (const d of request.decisions ?? []) app.seen.push(`${d.outcome} ${d.reason} ${d.rule ?? '-'}`)
  })
  return app
}

test('a deprecated route announces its deprecation, sunset and documentation on every response', async (t) => {
  const app = await appWith()
  app.get('/v1/orders', {
    config: { deprecation: { deprecated: DEPRECATED, sunset: SUNSET, link: 'https://developer.example.com/deprecation', sunsetLink: '/docs/migrate?to=v2#orders' } }
  }, async () => ({ ok: true }))
  app.get('/v1/fail', { config: { deprecation: { deprecated: new Date(Date.UTC(2025, 6, 1, 0, 0, 30, 900)) } } }, async () => { throw new Error('boom') })
  app.get('/v2/orders', async () => ({ ok: true }))
  app.get('/v2/plain', { config: { deprecation: false } }, async () => ({ ok: true }))
  const res = await app.inject('/v1/orders')
  t.equal(res.statusCode, 200)
  t.equal(res.headers.deprecation, `@${Date.UTC(2025, 6, 1) / 1000}`, 'RFC 9745: a structured-field Date')
  t.equal(res.headers.deprecation, '@1751328000')
  t.equal(res.headers.sunset, 'Sat, 31 Jan 2026 12:00:00 GMT', 'RFC 8594: an IMF-fixdate')
  t.equal(res.headers.link, '<https://developer.example.com/deprecation>; rel="deprecation", </docs/migrate?to=v2#orders>; rel="sunset"')
  const failed = await app.inject('/v1/fail')
  t.equal(failed.statusCode, 500)
  t.equal(failed.headers.deprecation, '@1751328030', 'on error responses too; seconds, rounded down')
  t.equal(failed.headers.sunset, undefined, 'no sunset given, none sent')
  t.equal(failed.headers.link, undefined)
  for (const url of ['/v2/orders', '/v2/plain']) {
    const plain = await app.inject(url)
    t.equal(plain.headers.deprecation, undefined, url)
    t.equal(plain.headers.sunset, undefined, url)
  }
})

test('links of the route\'s own are kept: ours are appended', async (t) => {
  const app = await appWith()
  const deprecation: RouteDeprecation = { sunset: SUNSET, sunsetLink: 'http://Example.COM/sunset' }
  app.get('/one', { config: { deprecation } }, async (_request, reply) => reply.header('link', '</one?page=2>; rel="next"').send({ ok: true }))
  app.get('/two', { config: { deprecation } }, async (_request, reply) => reply.header('link', ['</two?page=2>; rel="next"', '</two?page=9>; rel="last"']).send({ ok: true }))
  const one = await app.inject('/one')
  t.equal(one.headers.link, '</one?page=2>; rel="next", <http://example.com/sunset>; rel="sunset"')
  t.equal(one.headers.deprecation, undefined, 'a sunset alone sends no Deprecation')
  t.equal(one.headers.sunset, 'Sat, 31 Jan 2026 12:00:00 GMT')
  const head = await app.inject({ method: 'HEAD', url: '/one' })
  t.equal(head.headers.link, '</one?page=2>; rel="next", <http://example.com/sunset>; rel="sunset"', 'HEAD, answered by the GET route: once')
  const two = await app.inject('/two')
  t.same(two.headers.link, ['</two?page=2>; rel="next"', '</two?page=9>; rel="last"', '<http://example.com/sunset>; rel="sunset"'])
})

test('with cutoff, a route past its sunset answers 410 before authentication, and never reaches the handler', async (t) => {
  let clock = SUNSET_MS - 1
  const app = await appWith({ now: () => clock })
  let served = 0
  app.get('/v1/orders', { config: { deprecation: { deprecated: DEPRECATED, sunset: SUNSET, link: '/docs/v1', cutoff: true } } }, async () => { served++; return { ok: true } })
  app.get('/v1/kept', { config: { deprecation: { deprecated: DEPRECATED, sunset: SUNSET } } }, async () => ({ ok: true }))
  app.get('/v2/orders', async () => ({ ok: true }))

  const before = await app.inject('/v1/orders')
  t.equal(before.statusCode, 200, 'served until the sunset')
  t.equal(served, 1)
  clock = SUNSET_MS
  app.seen.length = 0
  const after = await app.inject('/v1/orders')
  t.equal(after.statusCode, 410)
  t.equal(after.headers['content-type'], 'application/problem+json; charset=utf-8')
  t.match(after.json(), { code: 'PORTCULLIS_GATEWAY_SUNSET', status: 410, title: 'Gone', instance: '/v1/orders' })
  t.equal(after.headers.sunset, 'Sat, 31 Jan 2026 12:00:00 GMT')
  t.equal(after.headers.deprecation, '@1751328000')
  t.equal(after.headers.link, '</docs/v1>; rel="deprecation"')
  t.equal(served, 1, 'the handler was not called')
  t.same(app.seen, ['deny PORTCULLIS_GATEWAY_SUNSET GET /v1/orders'], 'nothing after step 2 ran; the denial is recorded')

  app.seen.length = 0
  t.equal((await app.inject('/v1/kept')).statusCode, 200, 'without cutoff, a past sunset is only announced')
  t.equal((await app.inject('/v2/orders')).statusCode, 200)
  t.equal((await app.inject('/nowhere')).statusCode, 404)
  t.same(app.seen, ['authn /v1/kept', 'authn /v2/orders', 'authn /nowhere'])
})

test('cutoff reads the real clock by default', async (t) => {
  const app = await appWith()
  app.get('/gone', { config: { deprecation: { sunset: new Date(Date.now() - 1000), cutoff: true } } }, async () => 'gone')
  app.get('/soon', { config: { deprecation: { sunset: new Date(Date.now() + 3_600_000), cutoff: true } } }, async () => 'soon')
  app.get('/never', { config: { deprecation: { sunset: SUNSET, cutoff: false } } }, async () => 'never')
  t.equal((await app.inject('/gone')).statusCode, 410)
  t.equal((await app.inject('/soon')).statusCode, 200)
  t.equal((await app.inject('/never')).statusCode, 200)
})

test('dates: ISO 8601 dates and date-times with an offset, or Date objects', async (t) => {
  const app = await appWith()
  const cases: Array<[RouteDeprecation, string | undefined, string | undefined]> = [
    [{ deprecated: '2025-07-01T02:00:00+02:00', sunset: '2025-07-01' }, '@1751328000', 'Tue, 01 Jul 2025 00:00:00 GMT'],
    [{ deprecated: '2024-02-29T23:59:59.999Z' }, '@1709251199', undefined],
    [{ deprecated: '1970-01-01T00:00Z' }, '@0', undefined],
    [{ sunset: '9999-12-31T23:59:59Z' }, undefined, 'Fri, 31 Dec 9999 23:59:59 GMT']
  ]
  for (const [index, [deprecation]] of cases.entries()) app.get(`/r${index}`, { config: { deprecation } }, async () => 'x')
  for (const [index, [deprecation, expectedDeprecation, expectedSunset]] of cases.entries()) {
    const res = await app.inject(`/r${index}`)
    t.equal(res.headers.deprecation, expectedDeprecation, JSON.stringify(deprecation))
    t.equal(res.headers.sunset, expectedSunset, JSON.stringify(deprecation))
  }
})

test('bad route configuration fails startup, naming the route and the option', async (t) => {
  const cases: Array<[unknown, string]> = [
    ['2025-07-01', 'route GET /x config.deprecation must be an object (got "2025-07-01")'],
    [{ deprecated: DEPRECATED, until: SUNSET }, 'route GET /x config.deprecation.until is not a known option; allowed: deprecated, sunset, link, sunsetLink, cutoff'],
    [{ link: '/docs' }, 'route GET /x config.deprecation must be an object with a deprecated date, a sunset date or both (got an object)'],
    [{ deprecated: true }, 'route GET /x config.deprecation.deprecated must be a date, not true: the Deprecation header (RFC 9745) says when (got true)'],
    [{ sunset: 'July 1, 2025' }, 'route GET /x config.deprecation.sunset must be an ISO 8601 date ("2026-01-31") or date-time with an offset ("2026-01-31T12:00:00Z"), or a Date, from 1970 to 9999 (got "July 1, 2025")'],
    [{ sunset: '2025-02-30' }, 'config.deprecation.sunset must be an ISO 8601 date'],
    [{ sunset: '2025-13-01' }, 'config.deprecation.sunset must be an ISO 8601 date'],
    [{ sunset: '2025-07-01T12:00:00' }, 'config.deprecation.sunset must be an ISO 8601 date'],
    [{ sunset: '2025-07-01T25:00:00Z' }, 'config.deprecation.sunset must be an ISO 8601 date'],
    [{ deprecated: new Date('nope') }, 'route GET /x config.deprecation.deprecated must be an ISO 8601 date'],
    [{ deprecated: new Date(-1) }, 'config.deprecation.deprecated must be an ISO 8601 date'],
    [{ sunset: new Date(Date.UTC(10000, 0, 1)) }, 'config.deprecation.sunset must be an ISO 8601 date'],
    [{ sunset: 1751328000 }, 'config.deprecation.sunset must be an ISO 8601 date ("2026-01-31") or date-time with an offset ("2026-01-31T12:00:00Z"), or a Date, from 1970 to 9999 (got 1751328000)'],
    [{ deprecated: SUNSET, sunset: DEPRECATED }, 'route GET /x config.deprecation.sunset must be no earlier than route GET /x config.deprecation.deprecated (got "2025-07-01")'],
    [{ sunset: SUNSET, cutoff: 'yes' }, 'route GET /x config.deprecation.cutoff must be a boolean (got "yes")'],
    [{ deprecated: DEPRECATED, cutoff: true }, 'route GET /x config.deprecation.cutoff must be used with route GET /x config.deprecation.sunset (got true)'],
    [{ deprecated: DEPRECATED, link: 'docs/v1' }, 'route GET /x config.deprecation.link must be an absolute http(s) URL or a path starting with / (got "docs/v1")'],
    [{ deprecated: DEPRECATED, link: '//evil.example/x' }, 'config.deprecation.link must be an absolute http(s) URL'],
    [{ deprecated: DEPRECATED, link: 'javascript:alert(1)' }, 'config.deprecation.link must be an absolute http(s) URL'],
    [{ deprecated: DEPRECATED, link: 'http://' }, 'config.deprecation.link must be an absolute http(s) URL'],
    [{ sunset: SUNSET, sunsetLink: 42 }, 'route GET /x config.deprecation.sunsetLink must be an absolute http(s) URL or a path starting with / (got 42)']
  ]
  for (const [deprecation, message] of cases) {
    const app = await appWith()
    await t.rejects(async () => {
      app.get('/x', { config: { deprecation: deprecation as RouteDeprecation } }, async () => 'x')
      await app.ready()
    }, { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: new RegExp(message.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) }, JSON.stringify(deprecation))
  }
})

test('a sunset on the deprecation date itself is allowed', async (t) => {
  const app = await appWith()
  app.get('/x', { config: { deprecation: { deprecated: DEPRECATED, sunset: DEPRECATED } } }, async () => 'x')
  const res = await app.inject('/x')
  t.equal(res.headers.deprecation, '@1751328000')
  t.equal(res.headers.sunset, 'Tue, 01 Jul 2025 00:00:00 GMT')
})

test('bad plugin options fail startup', async (t) => {
  for (const [options, message] of [
    [{ clock: Date.now }, 'deprecation.clock is not a known option; allowed: now'],
    [{ now: 1751328000000 }, 'deprecation.now must be a function returning milliseconds since the epoch (got 1751328000000)']
  ] as const) {
    const app = Fastify()
    await app.register(portcullisCore)
    app.register(portcullisDeprecation, options as unknown as DeprecationOptions)
    await t.rejects(async () => app.ready(), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message })
  }
})
