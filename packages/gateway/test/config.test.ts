import { test } from 'tap'
import { writeFile, mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadGatewayConfig, validateGatewayConfig } from '../src/index.js'

test('defaults: loopback, port 3000, no upstreams', async (t) => {
  t.same(validateGatewayConfig({}), { server: { host: '127.0.0.1', port: 3000, requestTimeout: 30_000, keepAliveTimeout: 72_000, maxHeaderSize: 16_384, bodyLimit: 1_048_576 }, core: {}, upstreams: [] })
  t.same(validateGatewayConfig({ upstreams: [{ prefix: '/api', url: 'http://127.0.0.1:4000/' }] }).upstreams, [
    { prefix: '/api', url: 'http://127.0.0.1:4000', rewritePrefix: '', timeout: 10000, routes: [], public: false }
  ])
  const routes = [{ method: 'GET', path: '/orders/:id', authz: { anyScope: ['orders:read'] } }, { method: ['PUT', 'PATCH'], path: '/orders/:id' }]
  t.same(validateGatewayConfig({ authz: {}, upstreams: [{ prefix: '/api', url: 'http://u:1', routes }] }).upstreams[0]?.routes, [
    { method: ['GET'], path: '/orders/:id', authz: { anyScope: ['orders:read'] } },
    { method: ['PUT', 'PATCH'], path: '/orders/:id' }
  ], 'declared routes, methods as lists')
})

test('every bad option fails naming the option and what is allowed', async (t) => {
  const up = (extra: object) => ({ upstreams: [{ prefix: '/api', url: 'http://u:1', ...extra }] })
  const cases: Array<[unknown, string | RegExp]> = [
    [{ servr: {} }, /^gateway\.servr is not a known option; allowed: version, \$schema, server, core, helmet, cors, /],
    [{ server: { host: '' } }, 'server.host must be a host name or IP address (got "")'],
    [{ server: { port: 70000 } }, 'server.port must be an integer from 0 to 65535 (got 70000)'],
    [{ server: { port: '3000' } }, /server\.port must be an integer/],
    [{ upstreams: {} }, 'upstreams must be a list of { prefix, url } (got an object)'],
    [up({ prefix: 'api' }), /upstreams\[0\]\.prefix must be a path that starts with "\/"/],
    [up({ prefix: '/api/' }), /upstreams\[0\]\.prefix must be a path that starts with "\/" and does not end with one/],
    [up({ prefix: '/' }), /upstreams\[0\]\.prefix/],
    [up({ prefix: '/api?x' }), /upstreams\[0\]\.prefix/],
    [up({ prefix: '/healthz' }), /does not cover the health endpoints \/healthz/],
    [up({ url: 'ftp://u' }), /upstreams\[0\]\.url must be an http:\/\/ or https:\/\/ origin/],
    [up({ url: 'http://user:pw@u' }), /upstreams\[0\]\.url/],
    [up({ url: 'http://u/base' }), /upstreams\[0\]\.url/],
    [up({ url: 'http://u?x=1' }), /upstreams\[0\]\.url/],
    [up({ url: 'http://u#x' }), /upstreams\[0\]\.url/],
    [up({ url: 'not a url' }), /upstreams\[0\]\.url/],
    [up({ rewritePrefix: 'v1' }), 'upstreams[0].rewritePrefix must be empty or a path that starts with "/" (got "v1")'],
    [up({ timeout: 0 }), 'upstreams[0].timeout must be milliseconds, an integer from 1 to 600000 (got 0)'],
    [{ version: 2 }, 'version must be 1, the version of the document format this gateway reads (got 2)'],
    [up({ public: 'yes' }), 'upstreams[0].public must be a boolean (got "yes")'],
    [up({ retries: 3 }), 'upstreams[0].retries is not a known option; allowed: prefix, url, rewritePrefix, timeout, routes, openapi, validation, tls, public'],
    [up({ routes: {} }), 'upstreams[0].routes must be a list of { method, path, authz? } (got an object)'],
    [up({ routes: [{ method: 'FETCH', path: '/x' }] }), /upstreams\[0\]\.routes\[0\]\.method must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, or a list of them \(got "FETCH"\)/],
    [up({ routes: [{ method: [], path: '/x' }] }), /routes\[0\]\.method must be one of/],
    [up({ routes: [{ method: 'GET', path: 'x' }] }), 'upstreams[0].routes[0].path must be a path under the prefix that starts with "/", such as "/orders/:id" (got "x")'],
    [up({ routes: [{ method: 'GET', path: '/x' }, { method: ['POST', 'GET'], path: '/x' }] }), 'upstreams[0].routes[1] must be a method and path no other route of this upstream declares (got "GET /x")'],
    [up({ routes: [{ method: 'GET', path: '/x', authz: false }] }), /upstreams\[0\]\.routes\[0\]\.authz must be used with the authz section/],
    [up({ routes: [{ method: 'GET', path: '/x', limits: [] }] }), /routes\[0\]\.limits is not a known option; allowed: method, path, authz, rateLimit, resource/],
    [{ rateLimit: {}, ...up({ routes: [{ method: 'GET', path: '/x', rateLimit: {} }] }) }, /^upstreams\[0\]\.routes\[0\]\.rateLimit must be false \(never limited\) or a list of limits/],
    [{ ipRateLimit: {}, ...up({ routes: [{ method: 'GET', path: '/x', rateLimit: [] }] }) }, /^upstreams\[0\]\.routes\[0\]\.rateLimit must be used with the rateLimit section/],
    [up({ routes: [{ method: 'GET', path: '/x', rateLimit: false }] }), /^upstreams\[0\]\.routes\[0\]\.rateLimit must be used with the ipRateLimit or rateLimit section/],
    [{ authz: {}, ...up({ routes: [{ method: 'GET', path: '/x/:id', resource: { path: '/x/:id' } }] }) }, /routes\[0\]\.resource must be used with an authz rule on the route/],
    [{ authz: {}, ...up({ routes: [{ method: 'GET', path: '/x/:id', resource: { path: '/x/:id' }, authz: false }] }) }, /routes\[0\]\.resource must be used with an authz rule/],
    [{ authz: {}, ...up({ routes: [{ method: 'GET', path: '/x/:id', resource: { path: '/x/:id' }, authz: { resource: () => null } }] }) }, 'upstreams[0].routes[0].resource and upstreams[0].routes[0].authz.resource cannot both be given'],
    [{ authz: {}, ...up({ routes: [{ method: 'GET', path: '/x/:id', resource: { path: '/x/:key' }, authz: {} }] }) }, 'upstreams[0].routes[0].resource.path must be a path whose parameters are those of the route /x/:id (got "/x/:key")'],
    [{ authz: {}, ...up({ routes: [{ method: 'GET', path: '/x/:id', resource: { path: 'x/:id' }, authz: {} }] }) }, /resource\.path must be the upstream path of the object, starting with "\/"/],
    [{ authz: {}, ...up({ routes: [{ method: 'GET', path: '/x/:id', resource: { path: '/x/:id?full=1' }, authz: {} }] }) }, /resource\.path must be the upstream path/],
    [{ authz: {}, ...up({ routes: [{ method: 'GET', path: '/x/:id', resource: '/x/:id', authz: {} }] }) }, /resource\.path must be the upstream path of the object, starting with "\/", such as "\/orders\/:id" \(got "\/x\/:id"\)/],
    [{ authz: {}, ...up({ routes: [{ method: 'GET', path: '/x/:id', resource: { path: '/x/:id', method: 'POST' }, authz: {} }] }) }, 'upstreams[0].routes[0].resource.method is not a known option; allowed: path'],
    [{ upstreams: [{ prefix: '/a', url: 'http://u:1' }, { prefix: '/a', url: 'http://v:1' }] }, 'upstreams[1].prefix "/a" is used by another upstream']
  ]
  for (const [config, message] of cases) {
    t.throws(() => validateGatewayConfig(config), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, JSON.stringify(config))
  }
})

test('rateLimitStore: Redis for both stages, checked at startup, its URL never repeated', async (t) => {
  const ip = { limits: [{ name: 'ip', limit: 300, window: '1m' }] }
  const redis = { url: 'rediss://gw:s3cret@redis.internal:6380/2', prefix: 'api:rl:', timeoutMs: 50, failMode: 'closed', retryAfterMs: 0 }
  t.same(validateGatewayConfig({ ipRateLimit: ip, rateLimitStore: { redis } }).rateLimitStore, { redis })
  const store = (value: unknown, extra: object = { ipRateLimit: ip }) => ({ ...extra, rateLimitStore: value })
  const cases: Array<[unknown, string | RegExp]> = [
    [store([]), 'rateLimitStore must be an object (got an array)'],
    [store({ memcached: {} }), 'rateLimitStore.memcached is not a known option; allowed: redis'],
    [store({}), /^rateLimitStore\.redis must be the Redis to count in, such as \{ url: "redis:\/\/127\.0\.0\.1:6379" \}/],
    [store({ redis: { url: 'redis://h', db: 1 } }), 'rateLimitStore.redis.db is not a known option; allowed: url, prefix, timeoutMs, failMode, retryAfterMs'],
    [store({ redis: { url: 'http://user:s3cret@h:6379' } }), 'rateLimitStore.redis.url must be a redis:// or rediss:// URL such as "redis://127.0.0.1:6379"'],
    [store({ redis: { url: 'redis://' } }), /^rateLimitStore\.redis\.url must be/],
    [store({ redis: { url: 'not a url' } }), /^rateLimitStore\.redis\.url must be/],
    [store({ redis: { url: 6379 } }), /^rateLimitStore\.redis\.url must be/],
    [store({ redis: { url: 'redis://h', prefix: '' } }), 'rateLimitStore.redis.prefix must be a non-empty string (got "")'],
    [store({ redis: { url: 'redis://h', timeoutMs: 0 } }), 'rateLimitStore.redis.timeoutMs must be a whole number of ms, 1 or more (got 0)'],
    [store({ redis: { url: 'redis://h', failMode: 'ignore' } }), 'rateLimitStore.redis.failMode must be open or closed (got "ignore")'],
    [store({ redis: { url: 'redis://h', retryAfterMs: -1 } }), 'rateLimitStore.redis.retryAfterMs must be a whole number of ms, 0 or more (got -1)'],
    [store({ redis: { url: 'redis://h' } }, {}), /^rateLimitStore must be used with ipRateLimit or rateLimit, which count in it/],
    [store({ redis: { url: 'redis://h' } }, { rateLimit: { ...ip, store: { consume () {}, release () {} } } }), 'rateLimit.store must be left out when rateLimitStore is set (both stages count in rateLimitStore)']
  ]
  for (const [config, message] of cases) {
    t.throws(() => validateGatewayConfig(config), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, JSON.stringify(config))
  }
  const withPassword = store({ redis: { url: 'http://user:s3cret@h:6379' } })
  t.throws(() => validateGatewayConfig(withPassword), { message: /^(?!.*s3cret)/ }, 'a password in the URL is never in the message')
})

test('configuration files: YAML or JSON, strictly parsed', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-config-'))
  const yaml = join(dir, 'gateway.yaml')
  await writeFile(yaml, 'server:\n  port: 8080\nupstreams:\n  - prefix: /api\n    url: http://127.0.0.1:4000\n')
  t.match(await loadGatewayConfig(yaml), { server: { port: 8080 }, upstreams: [{ prefix: '/api' }] })
  const json = join(dir, 'gateway.JSON')
  await writeFile(json, JSON.stringify({ server: { host: '0.0.0.0' } }))
  t.match(await loadGatewayConfig(json), { server: { host: '0.0.0.0', port: 3000 } })
  const empty = join(dir, 'empty.yml')
  await writeFile(empty, '')
  t.match(await loadGatewayConfig(empty), { upstreams: [] })
  const duplicate = join(dir, 'duplicate.yaml')
  await writeFile(duplicate, 'server:\n  port: 1\nserver:\n  port: 2\n')
  await t.rejects(loadGatewayConfig(duplicate), { message: /duplicate\.yaml is not valid YAML: .*unique/i }, 'a duplicated key is an error, not a silent override')
  const broken = join(dir, 'broken.json')
  await writeFile(broken, '{"server":')
  await t.rejects(loadGatewayConfig(broken), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: /broken\.json is not valid JSON/ })
  await t.rejects(loadGatewayConfig(join(dir, 'missing.yaml')), { code: 'ENOENT' })
})
