import { test } from 'tap'
import { POLICY_FORMAT_VERSIONS, checkSchema, parsePolicy, policySchema, type PolicyProblem } from '../src/index.js'

const check = (text: string): PolicyProblem[] => checkSchema(parsePolicy(text))

const full = `
$schema: https://portcullis.dev/schemas/policy-1.json
version: 1
server:
  host: 0.0.0.0
  port: 8443
  tls: { key: tls/key.pem, cert: tls/cert.pem, clientCa: tls/ca.pem, minVersion: TLSv1.3 }
core:
  trustedProxies: [10.0.0.0/8]
  forwardedHeader: x-forwarded-for
  problemDetails: true
  requestIdHeader: false
authn:
  realm: api
  mode: enforce
  methods:
    keys:
      type: api-key
      keys:
        - id: k1
          hash: sha256:abc
    tokens:
      type: jwt
      audience: orders-api
      keys:
        - kid: k1
          key: env:JWT_SECRET
          algorithms: [HS256]
        - kid: k2
          key: { kty: EC, crv: P-256, x: abc, y: def }
    intro:
      type: introspection
      clientSecret: file:secrets/intro
ipRules: { allow: [10.0.0.0/8], deny: [10.1.0.0/16], mode: report }
mtls: { ca: ca.pem, crl: [crl.pem], required: false, crlWatchInterval: 1000 }
ipRateLimit:
  limits: [{ name: per-ip, limit: 100, window: 1m, algorithm: gcra, burst: 10 }]
  ipv6Prefix: 64
rateLimit:
  plans:
    gold: [{ name: gold, limit: 1000, window: 60000 }]
rateLimitStore:
  redis: { url: env:REDIS_URL, prefix: pc, timeoutMs: 50, failMode: open, retryAfterMs: 0 }
authz:
  roles: { admin: { inherits: [user] } }
  defaultRule: { anyRole: [user] }
audit:
  sinks: [{ type: stdout }]
  sample: 0.5
  chain: true
  onSinkFailure: drop
upstreams:
  - prefix: /api
    url: https://orders.internal:8443
    timeout: 30000
    tls: { ca: ca.pem, servername: orders.internal }
    routes:
      - method: GET
        path: /orders/:id
        authz: { anyScope: [orders:read] }
        resource: { path: /orders/:id }
      - method: [POST, PUT]
        path: /orders
        rateLimit: false
        authz: false
  - prefix: /health
    url: http://health:8080
    public: true
`

test('a valid document passes, as YAML and as JSON', async (t) => {
  t.same(check(full), [])
  t.same(check('{"version": 1}'), [], 'version alone is a document')
  t.same(check(JSON.stringify(parsePolicy(full).data)), [])
})

test('the schema is draft-07, and the format versions are [1]', async (t) => {
  t.equal(policySchema.$schema, 'http://json-schema.org/draft-07/schema#')
  t.same(POLICY_FORMAT_VERSIONS, [1])
  t.ok(Object.isFrozen(POLICY_FORMAT_VERSIONS))
  t.same(policySchema.properties.version.enum, [1])
})

test('version is required, and only 1 is known', async (t) => {
  t.same(check('upstreams: []\n'), [{ stage: 'schema', pointer: '', rule: 'required', message: '"version" is required' }])
  t.same(check('version: 2\n'), [{ stage: 'schema', pointer: '/version', rule: 'enum', message: 'must be one of 1' }])
  t.same(check('version: "1"\n'), [{ stage: 'schema', pointer: '/version', rule: 'enum', message: 'must be one of 1' }])
})

test('an unknown field is pointed at itself, at any depth, its name escaped', async (t) => {
  t.same(check('version: 1\nupstream: []\n'), [{ stage: 'schema', pointer: '/upstream', rule: 'additionalProperties', message: '"upstream" is not a known field here' }])
  t.same(check('version: 1\nupstreams:\n  - prefix: /a\n    url: http://a\n    rewrite: /\n'), [
    { stage: 'schema', pointer: '/upstreams/0/rewrite', rule: 'additionalProperties', message: '"rewrite" is not a known field here' }
  ])
  t.same(check('version: 1\nauthz:\n  a/b~c: 1\n'), [
    { stage: 'schema', pointer: '/authz/a~1b~0c', rule: 'additionalProperties', message: '"a/b~c" is not a known field here' }
  ])
})

test('upstreams: prefix and url are required; url is http(s) or a reference; prefix starts with /', async (t) => {
  t.same(check('version: 1\nupstreams:\n  - prefix: /api\n'), [{ stage: 'schema', pointer: '/upstreams/0', rule: 'required', message: '"url" is required' }])
  t.same(check('version: 1\nupstreams:\n  - prefix: /api\n    url: ftp://files\n'), [{ stage: 'schema', pointer: '/upstreams/0/url', rule: 'pattern', message: 'must match pattern "^(https?://|env:|file:)"' }])
  t.same(check('version: 1\nupstreams:\n  - prefix: /api\n    url: orders:8080\n'), [{ stage: 'schema', pointer: '/upstreams/0/url', rule: 'pattern', message: 'must match pattern "^(https?://|env:|file:)"' }])
  t.same(check('version: 1\nupstreams:\n  - prefix: /api\n    url: env:ORDERS_URL\n'), [], 'an address from the environment')
  t.same(check('version: 1\nupstreams:\n  - prefix: /api\n    url: file:orders.url\n'), [], 'or from a file')
  t.same(check('version: 1\nupstreams:\n  - prefix: api\n    url: http://orders\n'), [{ stage: 'schema', pointer: '/upstreams/0/prefix', rule: 'pattern', message: 'must match pattern "^/"' }])
  t.same(check('version: 1\nupstreams:\n  - prefix: /api\n    url: http://orders\n    timeout: 0\n'), [{ stage: 'schema', pointer: '/upstreams/0/timeout', rule: 'minimum', message: 'must be >= 1' }])
})

test('route methods are from the enum, alone or in a non-empty list', async (t) => {
  const route = (method: string): PolicyProblem[] => check(`version: 1\nupstreams:\n  - prefix: /api\n    url: http://orders\n    routes:\n      - method: ${method}\n        path: /orders\n`)
  t.same(route('GET'), [])
  t.same(route('[GET, DELETE]'), [])
  const bad = route('FETCH')
  t.same(bad.map((p) => p.rule), ['enum', 'type', 'anyOf'], 'neither a method nor a list of them')
  t.ok(bad.every((p) => p.pointer === '/upstreams/0/routes/0/method'))
  t.equal(bad[0]?.message, 'must be one of "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"')
  t.equal(bad[1]?.message, 'must be array')
  t.equal(bad[2]?.message, 'must match a schema in anyOf')
  t.match(route('[GET, get]'), [
    { pointer: '/upstreams/0/routes/0/method', rule: 'enum' },
    { pointer: '/upstreams/0/routes/0/method/1', rule: 'enum' },
    { pointer: '/upstreams/0/routes/0/method', rule: 'anyOf' }
  ], 'a wrong entry in a list is pointed at')
  t.match(route('[]'), [{ rule: 'enum' }, { pointer: '/upstreams/0/routes/0/method', rule: 'minItems', message: 'must NOT have fewer than 1 items' }, { rule: 'anyOf' }])
  t.match(check('version: 1\nupstreams:\n  - prefix: /api\n    url: http://orders\n    routes:\n      - method: GET\n        path: orders\n'), [{ pointer: '/upstreams/0/routes/0/path', rule: 'pattern' }])
  t.match(check('version: 1\nupstreams:\n  - prefix: /api\n    url: http://orders\n    routes:\n      - path: /orders\n'), [{ pointer: '/upstreams/0/routes/0', rule: 'required', message: '"method" is required' }])
})

test('every fault is reported, with messages for other keywords', async (t) => {
  const problems = check([
    'version: 1',
    'server: { port: 70000 }',
    'audit: { sample: 2, sinks: [] }',
    'authn: { methods: {} }',
    'ipRules: { allow: 10.0.0.0/8 }',
    'rateLimit: { limits: [{ name: a, limit: 0, window: true }] }',
    'authz: { defaultRule: true }'
  ].join('\n'))
  t.same(problems, [
    { stage: 'schema', pointer: '/server/port', rule: 'maximum', message: 'must be <= 65535' },
    { stage: 'schema', pointer: '/authn/methods', rule: 'minProperties', message: 'must NOT have fewer than 1 properties' },
    { stage: 'schema', pointer: '/ipRules/allow', rule: 'type', message: 'must be array' },
    { stage: 'schema', pointer: '/rateLimit/limits/0/limit', rule: 'minimum', message: 'must be >= 1' },
    { stage: 'schema', pointer: '/rateLimit/limits/0/window', rule: 'type', message: 'must be string,integer' },
    { stage: 'schema', pointer: '/authz/defaultRule', rule: 'const', message: 'must be equal to constant' },
    { stage: 'schema', pointer: '/authz/defaultRule', rule: 'type', message: 'must be object' },
    { stage: 'schema', pointer: '/authz/defaultRule', rule: 'anyOf', message: 'must match a schema in anyOf' },
    { stage: 'schema', pointer: '/audit/sinks', rule: 'minItems', message: 'must NOT have fewer than 1 items' },
    { stage: 'schema', pointer: '/audit/sample', rule: 'maximum', message: 'must be <= 1' }
  ])
})

test('secret fields take references or objects (JWKs); an authn method needs its type', async (t) => {
  t.match(check('version: 1\nauthn:\n  methods:\n    m:\n      keys: []\n'), [{ pointer: '/authn/methods/m', rule: 'required', message: '"type" is required' }])
  t.match(check('version: 1\nauthn:\n  methods:\n    m:\n      type: oauth\n'), [{ pointer: '/authn/methods/m/type', rule: 'enum', message: 'must be one of "api-key", "basic", "jwt", "introspection"' }])
  t.match(check('version: 1\nrateLimitStore:\n  redis:\n    url: 6379\n'), [{ pointer: '/rateLimitStore/redis/url', rule: 'type', message: 'must be string' }])
  t.match(check('version: 1\nauthn:\n  methods:\n    m:\n      type: jwt\n      keys: [{ key: 42 }]\n'), [{ pointer: '/authn/methods/m/keys/0/key', rule: 'type' }])
})
