import { test } from 'tap'
import { diffPolicies, formatDiff, parsePolicy } from '../src/index.js'

type Data = Record<string, unknown>

const before: Data = {
  version: 1,
  authn: {
    methods: {
      jwt: { type: 'jwt', audience: 'orders', keys: [{ kid: 'a', key: 'env:KEY_A' }, { kid: 'b', key: 'env:KEY_B' }] },
      keys: { type: 'api-key', keys: [{ id: 'k1', hash: 'sha256:1111' }, { id: 'k2', hash: 'sha256:2222' }] },
      basic: { type: 'basic', users: [{ username: 'alice', passwordHash: 'h-alice' }, { username: 'bob', passwordHash: 'h-bob' }] }
    }
  },
  rateLimit: {
    limits: [{ name: 'per-user', limit: 100, window: '1m' }, { name: 'per-day', limit: 10000, window: '1d' }],
    plans: { gold: [{ name: 'gold', limit: 1000, window: '1m' }, { name: 'gold-day', limit: 1e6, window: '1d' }] }
  },
  ipRateLimit: { plans: { free: [{ name: 'ip', limit: 10, window: '1s' }] } },
  upstreams: [
    {
      prefix: '/api',
      url: 'http://orders:8080',
      routes: [
        { method: 'GET', path: '/orders/:id', authz: { anyScope: ['orders:read'] } },
        { method: ['POST', 'PUT'], path: '/orders', authz: { anyScope: ['orders:write'] }, rateLimit: [{ name: 'writes', limit: 5, window: '1s' }, { name: 'writes-min', limit: 50, window: '1m' }] }
      ]
    },
    { prefix: '/health', url: 'http://health:8080', public: true }
  ]
}

const reversed = (list: unknown): unknown[] => [...(list as unknown[])].reverse()

test('the same document, or the same entries reordered, is no change', async (t) => {
  t.same(diffPolicies(before, structuredClone(before)), [])
  const reordered = structuredClone(before)
  reordered.upstreams = reversed(reordered.upstreams)
  const api = (reordered.upstreams as Data[])[1] as Data
  api.routes = reversed(api.routes)
  const write = (api.routes as Data[])[0] as Data
  write.rateLimit = reversed(write.rateLimit)
  const methods = (reordered.authn as Data).methods as Record<string, Data>
  for (const method of Object.values(methods)) {
    if (method.keys !== undefined) method.keys = reversed(method.keys)
    if (method.users !== undefined) method.users = reversed(method.users)
  }
  const rateLimit = reordered.rateLimit as Data
  rateLimit.limits = reversed(rateLimit.limits)
  ;(rateLimit.plans as Data).gold = reversed((rateLimit.plans as Data).gold)
  t.same(diffPolicies(before, reordered), [], 'upstreams, routes, limits, keys, users and plans are matched by their keys')
  t.equal(formatDiff(diffPolicies(before, reordered)), 'no differences')
})

test('entries are matched by their key and named by it', async (t) => {
  const after = structuredClone(before)
  const [api, health] = after.upstreams as [Data, Data]
  const routes = api.routes as [Data, Data]
  api.url = 'http://orders:9090'
  api.routes = [routes[1], { ...routes[0], authz: { anyScope: ['orders:read', 'orders:admin'] } }, { method: 'DELETE', path: '/orders/:id' }]
  after.upstreams = [health, api, { prefix: '/billing', url: 'http://billing' }]
  const rateLimit = after.rateLimit as Data
  rateLimit.limits = [{ name: 'per-day', limit: 20000, window: '1d' }]
  const methods = (after.authn as Data).methods as Record<string, Data>
  ;(methods.basic as Data).users = [{ username: 'bob', passwordHash: 'h-bob' }, { username: 'carol', passwordHash: 'h-carol' }]
  ;(methods.keys as Data).keys = [{ id: 'k2', hash: 'sha256:2222' }, { id: 'k1', hash: 'sha256:1111', expires: '2027-01-01' }]
  t.same(diffPolicies(before, after), [
    { kind: 'added', path: 'authn.methods.keys.keys.[k1].expires' },
    { kind: 'removed', path: 'authn.methods.basic.users.[alice]' },
    { kind: 'added', path: 'authn.methods.basic.users.[carol]' },
    { kind: 'removed', path: 'rateLimit.limits.[per-user]' },
    { kind: 'changed', path: 'rateLimit.limits.[per-day].limit', before: 10000, after: 20000 },
    { kind: 'changed', path: 'upstreams.[/api].url', before: 'http://orders:8080', after: 'http://orders:9090' },
    { kind: 'changed', path: 'upstreams.[/api].routes.[GET /orders/:id].authz.anyScope', before: ['orders:read'], after: ['orders:read', 'orders:admin'] },
    { kind: 'added', path: 'upstreams.[/api].routes.[DELETE /orders/:id]' },
    { kind: 'added', path: 'upstreams.[/billing]' }
  ])
})

test('limits by name in plans and route rate limits; keys by kid; a changed method list is another route', async (t) => {
  const after = structuredClone(before)
  const gold = ((after.rateLimit as Data).plans as Data).gold as Data[]
  ;(gold[1] as Data).limit = 2e6
  const free = ((after.ipRateLimit as Data).plans as Data).free as Data[]
  ;(free[0] as Data).window = '10s'
  const api = (after.upstreams as Data[])[0] as Data
  const write = (api.routes as Data[])[1] as Data
  ;((write.rateLimit as Data[])[0] as Data).limit = 6
  write.method = ['POST', 'PUT', 'PATCH']
  const jwt = ((after.authn as Data).methods as Record<string, Data>).jwt as Data
  jwt.keys = [{ kid: 'b', key: 'env:KEY_B2' }, { kid: 'a', key: 'env:KEY_A' }]
  t.same(diffPolicies(before, after), [
    { kind: 'changed', path: 'authn.methods.jwt.keys.[b].key', before: 'env:KEY_B', after: 'env:KEY_B2' },
    { kind: 'changed', path: 'rateLimit.plans.gold.[gold-day].limit', before: 1e6, after: 2e6 },
    { kind: 'changed', path: 'ipRateLimit.plans.free.[ip].window', before: '1s', after: '10s' },
    { kind: 'removed', path: 'upstreams.[/api].routes.[POST,PUT /orders]' },
    { kind: 'added', path: 'upstreams.[/api].routes.[POST,PUT,PATCH /orders]' }
  ])
})

test('keys without an id or a kid are told apart by their content', async (t) => {
  const a = { authn: { methods: { jwt: { type: 'jwt', keys: [{ key: 'env:ONE' }, { key: 'env:TWO' }] } } } }
  const b = { authn: { methods: { jwt: { type: 'jwt', keys: [{ key: 'env:TWO' }, { key: 'env:THREE' }] } } } }
  t.same(diffPolicies(a, b), [
    { kind: 'removed', path: 'authn.methods.jwt.keys.[{"key":"env:ONE"}]' },
    { kind: 'added', path: 'authn.methods.jwt.keys.[{"key":"env:THREE"}]' }
  ])
})

test('secrets are shown as (secret), references as they are', async (t) => {
  const doc = (secrets: { key: unknown, hash: string, clientSecret: string, passwordHash: string, url: string }): Data => ({
    authn: {
      methods: {
        jwt: { type: 'jwt', keys: [{ kid: 'a', key: secrets.key }] },
        keys: { type: 'api-key', keys: [{ id: 'k', hash: secrets.hash }] },
        intro: { type: 'introspection', clientSecret: secrets.clientSecret },
        basic: { type: 'basic', users: [{ username: 'u', passwordHash: secrets.passwordHash }] }
      }
    },
    rateLimitStore: { redis: { url: secrets.url } }
  })
  const inline = diffPolicies(
    doc({ key: 'old-hmac', hash: 'old-hash', clientSecret: 'old-client', passwordHash: 'old-pw', url: 'redis://:old@r' }),
    doc({ key: 'new-hmac', hash: 'new-hash', clientSecret: 'new-client', passwordHash: 'new-pw', url: 'redis://:new@r' })
  )
  t.same(inline.map((entry) => [entry.path, entry.before, entry.after]), [
    ['authn.methods.jwt.keys.[a].key', '(secret)', '(secret)'],
    ['authn.methods.keys.keys.[k].hash', '(secret)', '(secret)'],
    ['authn.methods.intro.clientSecret', '(secret)', '(secret)'],
    ['authn.methods.basic.users.[u].passwordHash', '(secret)', '(secret)'],
    ['rateLimitStore.redis.url', '(secret)', '(secret)']
  ])
  t.notMatch(formatDiff(inline), /old-|new-|:old@|:new@/)
  const references = diffPolicies(
    doc({ key: 'env:OLD', hash: 'file:old.hash', clientSecret: 'env:OLD_CLIENT', passwordHash: 'file:/old', url: 'env:OLD_REDIS' }),
    doc({ key: 'env:NEW', hash: 'file:new.hash', clientSecret: 'env:NEW_CLIENT', passwordHash: 'file:/new', url: 'env:NEW_REDIS' })
  )
  t.same(references.map((entry) => [entry.before, entry.after]), [
    ['env:OLD', 'env:NEW'],
    ['file:old.hash', 'file:new.hash'],
    ['env:OLD_CLIENT', 'env:NEW_CLIENT'],
    ['file:/old', 'file:/new'],
    ['env:OLD_REDIS', 'env:NEW_REDIS']
  ])
  const mixed = diffPolicies(doc({ key: 'env:K', hash: 'h', clientSecret: 'c', passwordHash: 'p', url: 'u' }), doc({ key: 'inline-now', hash: 'h', clientSecret: 'c', passwordHash: 'p', url: 'u' }))
  t.same(mixed, [{ kind: 'changed', path: 'authn.methods.jwt.keys.[a].key', before: 'env:K', after: '(secret)' }], 'a reference replaced by an inline secret')
})

test('a JWK is compared whole: its private members are never shown', async (t) => {
  const jwk = (k: string, d: string): Data => ({ authn: { methods: { jwt: { type: 'jwt', keys: [{ kid: 'a', key: { kty: 'oct', k } }, { kid: 'b', key: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y', d } }] } } } })
  const entries = diffPolicies(jwk('old-k', 'old-d'), jwk('new-k', 'new-d'))
  t.same(entries, [
    { kind: 'changed', path: 'authn.methods.jwt.keys.[a].key', before: '(secret)', after: '(secret)' },
    { kind: 'changed', path: 'authn.methods.jwt.keys.[b].key', before: '(secret)', after: '(secret)' }
  ])
  t.notMatch(formatDiff(entries), /old-|new-/)
  t.same(diffPolicies(jwk('same', 'same'), jwk('same', 'same')), [], 'an unchanged JWK is no change')
  t.same(diffPolicies(jwk('k', 'd'), { authn: { methods: { jwt: { type: 'jwt', keys: [{ kid: 'a', key: 'env:K' }, { kid: 'b', key: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y', d: 'd' } }] } } } }), [
    { kind: 'changed', path: 'authn.methods.jwt.keys.[a].key', before: '(secret)', after: 'env:K' }
  ])
})

test('sections and fields added, removed or changed in kind', async (t) => {
  t.same(diffPolicies({ version: 1, authz: { realm: 'a' } }, { version: 1, audit: { sinks: [{ type: 'stdout' }] } }), [
    { kind: 'removed', path: 'authz' },
    { kind: 'added', path: 'audit' }
  ])
  t.same(diffPolicies({ a: { b: 1 } }, { a: [1] }), [{ kind: 'changed', path: 'a', before: { b: 1 }, after: [1] }], 'an object become a list')
  t.same(diffPolicies({ upstreams: ['/a'] }, { upstreams: ['/b'] }), [{ kind: 'changed', path: 'upstreams', before: ['/a'], after: ['/b'] }], 'a keyed list whose entries are not objects: compared whole')
  t.same(diffPolicies({ upstreams: [{ prefix: '/a' }] }, { upstreams: { prefix: '/a' } }), [{ kind: 'changed', path: 'upstreams', before: [{ prefix: '/a' }], after: { prefix: '/a' } }])
  t.same(diffPolicies({ core: { trustedProxies: ['a', 'b'] } }, { core: { trustedProxies: ['b', 'a'] } }), [
    { kind: 'changed', path: 'core.trustedProxies', before: ['a', 'b'], after: ['b', 'a'] }
  ], 'other lists are ordered')
  t.same(diffPolicies({ version: 1 }, { version: 1 }), [])
})

test('documents parsed from YAML and JSON diff by meaning', async (t) => {
  const yaml = parsePolicy('version: 1\nupstreams:\n  - prefix: /a\n    url: http://a\n  - prefix: /b\n    url: http://b\n')
  const json = parsePolicy('{"version": 1, "upstreams": [{"url": "http://b", "prefix": "/b"}, {"prefix": "/a", "url": "http://a2"}]}')
  t.equal(formatDiff(diffPolicies(yaml.data, json.data)), '~ upstreams[/a].url: "http://a" → "http://a2"')
})

test('formatDiff() writes + added, - removed, ~ changed (old → new), long values cut short', async (t) => {
  t.equal(formatDiff([]), 'no differences')
  const long = 'x'.repeat(200)
  const lines = formatDiff([
    { kind: 'added', path: 'upstreams.[/billing]' },
    { kind: 'removed', path: 'authn.methods.basic.users.[alice]' },
    { kind: 'changed', path: 'upstreams.[/api].routes.[GET /orders/:id].authz', before: { anyScope: ['a'] }, after: false },
    { kind: 'changed', path: 'authz.realm', before: undefined, after: long },
    { kind: 'changed', path: 'a.b', before: 'y'.repeat(118), after: 'z'.repeat(119) }
  ]).split('\n')
  t.same(lines.slice(0, 4), [
    '+ upstreams[/billing]',
    '- authn.methods.basic.users[alice]',
    '~ upstreams[/api].routes[GET /orders/:id].authz: {"anyScope":["a"]} → false',
    `~ authz.realm: undefined → "${'x'.repeat(118)}…`
  ])
  t.equal(lines[3]?.split(' → ')[1]?.length, 120, 'cut to 120 characters, the ellipsis included')
  t.equal(lines[4], `~ a.b: "${'y'.repeat(118)}" → "${'z'.repeat(118)}…`, '120 characters fit; 121 do not')
  t.equal(lines.length, 5)
})
