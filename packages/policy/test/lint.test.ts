import { test } from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { LINT_RULES, lintPolicy, type LintFinding } from '../src/index.js'

type Data = Record<string, unknown>

const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
const publicPem = ec.publicKey.export({ type: 'spki', format: 'pem' }).toString()
const privatePem = ec.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
const publicJwk = ec.publicKey.export({ format: 'jwk' })
const privateJwk = ec.privateKey.export({ format: 'jwk' })

const upstream = { prefix: '/api', url: 'http://orders:8080' }
const secure = (extra: Data = {}): Data => ({
  version: 1,
  authn: { methods: { jwt: { type: 'jwt', audience: 'orders-api', keys: [{ kid: 'k', key: 'env:JWT_KEY', algorithms: ['HS256'] }] } } },
  authz: { defaultRule: { anyRole: ['user'] } },
  upstreams: [upstream],
  ...extra
})
const jwt = (method: Data): Data => secure({ authn: { methods: { jwt: { type: 'jwt', audience: 'orders-api', ...method } } } })
const rules = (findings: LintFinding[]): string[] => findings.map((finding) => finding.rule)

test('a careful document has no findings', async (t) => {
  t.same(lintPolicy(secure()), [])
  t.same(lintPolicy({ version: 1 }), [], 'nothing to check')
  t.same(lintPolicy({ version: 1, upstreams: [{ ...upstream, public: true }] }), [], 'public upstreams need no authn')
})

test('every rule fires on what it guards against, and stays quiet otherwise', async (t) => {
  // [document, document with its secrets resolved]
  const hmac = (key: string, algorithm: string): [Data, Data] => [
    jwt({ keys: [{ kid: 'k', key: 'env:K', algorithms: [algorithm] }] }),
    jwt({ keys: [{ kid: 'k', key, algorithms: [algorithm] }] })
  ]
  const cases: Record<string, { fires: [Data, Data?], quiet: [Data, Data?] }> = {
    'inline-secret': { fires: [jwt({ keys: [{ kid: 'k', key: 'x'.repeat(64), algorithms: ['HS256'] }] })], quiet: [jwt({ keys: [{ kid: 'k', key: 'env:K', algorithms: ['HS256'] }] })] },
    'hmac-secret-length': { fires: hmac('short', 'HS256'), quiet: hmac('short', 'RS256') },
    'jwt-audience': { fires: [jwt({ audience: undefined })], quiet: [jwt({})] },
    'unauthenticated-upstream': { fires: [{ version: 1, upstreams: [upstream] }], quiet: [{ version: 1, upstreams: [{ ...upstream, public: true }] }] },
    'authz-fail-open': { fires: [secure({ authz: { defaultRule: false } })], quiet: [secure()] },
    'no-authz': { fires: [secure({ authz: undefined })], quiet: [secure()] },
    'report-mode': { fires: [secure({ authz: { defaultRule: { anyRole: ['user'] }, mode: 'report' } })], quiet: [secure({ authz: { defaultRule: { anyRole: ['user'] }, mode: 'enforce' } })] }
  }
  t.same(Object.keys(cases).sort(), Object.keys(LINT_RULES).sort(), 'a case for every rule')
  for (const [rule, { fires, quiet }] of Object.entries(cases)) {
    t.same([...new Set(rules(lintPolicy(...fires)))], [rule], `${rule} fires, alone`)
    t.same(lintPolicy(...quiet), [], `${rule} stays quiet`)
  }
  t.ok(Object.isFrozen(LINT_RULES))
  for (const description of Object.values(LINT_RULES)) t.match(description, /\w{3,}/)
})

test('inline-secret: HMAC strings, secret and private JWKs, passwords in URLs, client secrets', async (t) => {
  const keys = (key: unknown): LintFinding[] => lintPolicy(jwt({ keys: [{ kid: 'k', key, algorithms: ['ES256'] }] }))
  const inline = { stage: 'lint', severity: 'error', rule: 'inline-secret', pointer: '/authn/methods/jwt/keys/0/key', message: 'a secret is written here; reference it instead, as env:NAME or file:path' }
  t.same(keys('a-hmac-secret-written-out'), [inline], 'an HMAC secret')
  t.same(keys({ kty: 'oct', k: 'c2VjcmV0' }), [inline], 'a symmetric JWK')
  t.same(keys(privateJwk), [inline], 'a private JWK')
  t.same(keys(privatePem), [inline], 'a private key in PEM')
  t.same(keys(publicJwk), [], 'a public JWK')
  t.same(keys(publicPem), [], 'a public key in PEM')
  t.same(keys(`\n  ${publicPem}`), [], 'with space around it')
  t.same(keys('-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'), [], 'a certificate')
  t.same(keys('-----BEGIN RSA PUBLIC KEY-----\nMIIB\n-----END RSA PUBLIC KEY-----\n'), [], 'a PKCS#1 public key')
  t.same(keys('env:JWT_KEY'), [], 'an environment reference')
  t.same(keys('file:/run/secrets/jwt'), [], 'a file reference')
  t.same(keys(42), [], 'not a secret of any kind (the schema refuses it)')
  t.same(keys(null), [])

  const hashes = lintPolicy(secure({
    authn: {
      methods: {
        jwt: { type: 'jwt', audience: 'a', keys: [{ kid: 'k', key: 'env:K' }] },
        keys: { type: 'api-key', keys: [{ id: 'k1', hash: 'sha256:0a1b2c' }] },
        basic: { type: 'basic', users: [{ username: 'alice', passwordHash: '$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA' }] }
      }
    }
  }))
  t.same(hashes, [], 'hashes of keys and passwords may be written out')

  const client = (clientSecret: unknown): LintFinding[] => lintPolicy(secure({ authn: { methods: { intro: { type: 'introspection', clientSecret } } } }))
  t.same(client('s3cret'), [{ stage: 'lint', severity: 'error', rule: 'inline-secret', pointer: '/authn/methods/intro/clientSecret', message: 'a secret is written here; reference it instead, as env:NAME or file:path' }])
  t.same(client('env:CLIENT_SECRET'), [])
  t.same(client(7), [], 'not text: the schema refuses it')

  const redis = (url: string): LintFinding[] => lintPolicy(secure({ rateLimitStore: { redis: { url } } }))
  t.match(redis('redis://:p4ss@redis:6379'), [{ rule: 'inline-secret', pointer: '/rateLimitStore/redis/url' }])
  t.match(redis('rediss://user:p4ss@redis:6379/0'), [{ rule: 'inline-secret', pointer: '/rateLimitStore/redis/url' }])
  t.same(redis('redis://redis:6379'), [], 'no password')
  t.same(redis('redis://user@redis:6379'), [], 'a user name is no secret')
  t.same(redis('env:REDIS_URL'), [])
  t.same(redis('not a url'), [])
  for (const finding of [...keys('a-hmac-secret-written-out'), ...redis('redis://:p4ss@redis:6379'), ...client('s3cret')]) {
    t.notMatch(finding.message, /a-hmac-secret-written-out|p4ss|s3cret/, 'the message never holds the secret')
  }
})

test('hmac-secret-length: at least as long as the hash, by the longest algorithm, in bytes', async (t) => {
  const length = (key: unknown, algorithms?: string[]): LintFinding[] => {
    const data = jwt({ keys: [{ kid: 'k', key: 'env:K', ...(algorithms === undefined ? {} : { algorithms }) }] })
    const resolved = jwt({ keys: [{ kid: 'k', key, ...(algorithms === undefined ? {} : { algorithms }) }] })
    return lintPolicy(data, resolved)
  }
  const finding = (minimum: number): LintFinding => ({ stage: 'lint', severity: 'error', rule: 'hmac-secret-length', pointer: '/authn/methods/jwt/keys/0/key', message: `the HMAC secret must be at least ${minimum} bytes for its algorithms` })
  t.same(length('x'.repeat(31), ['HS256']), [finding(32)])
  t.same(length('x'.repeat(32), ['HS256']), [])
  t.same(length('x'.repeat(47), ['HS384']), [finding(48)])
  t.same(length('x'.repeat(48), ['HS384']), [])
  t.same(length('x'.repeat(63), ['HS512']), [finding(64)])
  t.same(length('x'.repeat(64), ['HS512']), [])
  t.same(length('x'.repeat(40), ['HS256', 'HS512']), [finding(64)], 'the strictest algorithm decides')
  t.same(length('x'.repeat(32), ['HS256', 'RS256']), [])
  t.same(length('é'.repeat(16), ['HS256']), [], 'bytes, not characters: 16 × 2 bytes')
  t.same(length('é'.repeat(15) + 'x', ['HS256']), [finding(32)])
  t.same(length('short', ['RS256', 'ES256']), [], 'no HMAC algorithm')
  t.same(length('short'), [], 'no algorithms')
  t.same(length({ kty: 'oct', k: 'c2hvcnQ' }, ['HS256']), [], 'a JWK is not measured here')
  t.same(length('env:K', ['HS512']), [], 'a reference left unresolved is not the secret: it is not measured')
  const secretInMessage = length('tiny-secret', ['HS256'])
  t.notMatch(secretInMessage[0]?.message, /tiny-secret/)
  t.same(lintPolicy(jwt({ keys: [{ kid: 'k', key: 'x'.repeat(10), algorithms: ['HS256'] }] })).map((f) => f.rule), ['inline-secret', 'hmac-secret-length'], 'without a resolved document the document is measured')
})

test('jwt-audience: a JWT method needs a non-empty audience', async (t) => {
  const finding = { stage: 'lint', severity: 'error', rule: 'jwt-audience', pointer: '/authn/methods/a~1b', message: 'a JWT method needs an audience (aud) that names this API' }
  const audience = (value: unknown): LintFinding[] => lintPolicy(secure({ authn: { methods: { 'a/b': { type: 'jwt', ...(value === undefined ? {} : { audience: value }) } } } }))
  t.same(audience(undefined), [finding], 'missing')
  t.same(audience(''), [finding], 'empty')
  t.same(audience([]), [finding], 'an empty list')
  t.same(audience('orders-api'), [])
  t.same(audience(['orders-api', 'billing-api']), [])
  t.same(lintPolicy(secure({ authn: { methods: { keys: { type: 'api-key', keys: [] } } } })), [], 'other methods have no audience')
  t.same(lintPolicy(secure({ authn: { realm: 'api' } })), [], 'no methods at all')
})

test('unauthenticated-upstream: without authn, every upstream not marked public', async (t) => {
  const findings = lintPolicy({ version: 1, upstreams: [upstream, { prefix: '/health', url: 'http://h', public: true }, { prefix: '/b', url: 'http://b', public: false }] })
  t.same(findings, [
    { stage: 'lint', severity: 'error', rule: 'unauthenticated-upstream', pointer: '/upstreams/0', message: 'nothing authenticates requests to this upstream: add an authn section, or mark it public: true' },
    { stage: 'lint', severity: 'error', rule: 'unauthenticated-upstream', pointer: '/upstreams/2', message: 'nothing authenticates requests to this upstream: add an authn section, or mark it public: true' }
  ])
  t.same(lintPolicy(secure()), [], 'with authn')
})

test('authz-fail-open: defaultRule false is an error, an empty rule a warning', async (t) => {
  t.same(lintPolicy(secure({ authz: { defaultRule: false } })), [
    { stage: 'lint', severity: 'error', rule: 'authz-fail-open', pointer: '/authz/defaultRule', message: 'defaultRule: false makes every route without a rule of its own public' }
  ])
  t.same(lintPolicy(secure({ authz: { defaultRule: {} } })), [
    { stage: 'lint', severity: 'warning', rule: 'authz-fail-open', pointer: '/authz/defaultRule', message: 'an empty defaultRule lets any authenticated principal call every route without a rule of its own' }
  ])
  t.same(lintPolicy(secure({ authz: { defaultRule: { anyRole: ['user'] } } })), [])
  t.same(lintPolicy(secure({ authz: {} })), [], 'no defaultRule: the plugin\'s own default')
  t.same(lintPolicy(secure({ authz: { defaultRule: null } })), [])
})

test('no-authz: authentication without authorization is a warning, unless every upstream is public', async (t) => {
  t.same(lintPolicy(secure({ authz: undefined })), [
    { stage: 'lint', severity: 'warning', rule: 'no-authz', pointer: '', message: 'there is no authz section: every authenticated principal may call every route' }
  ])
  t.same(lintPolicy(secure({ authz: undefined, upstreams: [{ ...upstream, public: true }] })), [])
  t.same(lintPolicy(secure({ authz: undefined, upstreams: undefined })), [], 'no upstreams')
})

test('report-mode: a warning for each section in report mode', async (t) => {
  const sections = ['ipRules', 'mtls', 'ipRateLimit', 'authn', 'rateLimit', 'authz']
  const data = secure()
  for (const section of sections) data[section] = { ...(data[section] as Data | undefined), mode: 'report' }
  const findings = lintPolicy(data)
  t.same(findings, sections.map((section) => ({ stage: 'lint', severity: 'warning', rule: 'report-mode', pointer: `/${section}/mode`, message: `${section} only reports what it would deny` })))
  for (const section of sections) data[section] = { ...(data[section] as Data), mode: 'enforce' }
  t.same(lintPolicy(data), [])
  t.same(lintPolicy(secure({ audit: { mode: 'report' } })), [], 'only sections that have a mode')
})
