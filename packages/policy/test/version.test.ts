import { test } from 'tap'
import { createHash } from 'node:crypto'
import { parsePolicy, policyVersion } from '../src/index.js'

test('a version id is 16 hex digits of the SHA-256 of the canonical JSON (RFC 8785)', async (t) => {
  const id = policyVersion({ version: 1, b: [true, null, 'x'], a: { d: 1.5, c: 'é' } })
  t.match(id, /^[0-9a-f]{16}$/)
  const canonical = '{"a":{"c":"é","d":1.5},"b":[true,null,"x"],"version":1}'
  t.equal(id, createHash('sha256').update(canonical).digest('hex').slice(0, 16))
})

test('the same data, however written, has one id', async (t) => {
  const yaml = parsePolicy([
    '# orders gateway',
    'version: 1',
    'upstreams:',
    '  - url: http://orders:8080   # the origin',
    '    prefix: /api',
    'authz:',
    '  defaultRule: { anyRole: [user] }',
    ''
  ].join('\n'))
  const json = parsePolicy('{"authz":{"defaultRule":{"anyRole":["user"]}},"upstreams":[{"prefix":"/api","url":"http://orders:8080"}],"version":1.0}')
  const flow = parsePolicy('{ version: 1, authz: { defaultRule: { anyRole: [ user ] } }, upstreams: [ { prefix: /api, url: "http://orders:8080" } ] }')
  t.equal(policyVersion(yaml.data), policyVersion(json.data))
  t.equal(policyVersion(yaml.data), policyVersion(flow.data))
})

test('different data has a different id', async (t) => {
  const base = { version: 1, upstreams: [{ prefix: '/a', url: 'http://a' }, { prefix: '/b', url: 'http://b' }] }
  const ids = new Set([
    policyVersion(base),
    policyVersion({ ...base, upstreams: [{ prefix: '/a', url: 'http://a' }, { prefix: '/b', url: 'http://b2' }] }),
    policyVersion({ ...base, upstreams: [...base.upstreams].reverse() }),
    policyVersion({ ...base, authz: {} }),
    policyVersion({ ...base, version: '1' }),
    policyVersion({ version: 1 })
  ])
  t.equal(ids.size, 6, 'a changed value, a reordered list, an added section, a string for a number')
})
