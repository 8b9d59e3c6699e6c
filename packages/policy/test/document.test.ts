import { test } from 'tap'
import { MAX_POLICY_BYTES, isPolicyRejected, parsePolicy, type PolicyRejectedError } from '../src/index.js'
import { pointerTokens, withPositions, type ParsedPolicy } from '../src/document.js'

function refusal (text: string, name?: string): PolicyRejectedError {
  try {
    parsePolicy(text, name)
  } catch (err) {
    if (isPolicyRejected(err)) return err
    throw err
  }
  throw new Error('the document was taken')
}

test('YAML and JSON texts of the same document parse to the same data', async (t) => {
  const yaml = parsePolicy('# the gateway\nversion: 1\nupstreams:\n  - prefix: /api\n    url: http://orders:8080\n    public: true\n', 'gateway.yaml')
  const json = parsePolicy('{"version": 1, "upstreams": [{"prefix": "/api", "url": "http://orders:8080", "public": true}]}')
  const expected = { version: 1, upstreams: [{ prefix: '/api', url: 'http://orders:8080', public: true }] }
  t.same(yaml.data, expected)
  t.same(json.data, expected)
  t.equal(yaml.name, 'gateway.yaml')
  t.equal(json.name, 'policy', 'a document is called policy unless named')
  t.equal(json.text, '{"version": 1, "upstreams": [{"prefix": "/api", "url": "http://orders:8080", "public": true}]}')
})

test('YAML 1.2 core schema: yes and no stay strings, numbers stay numbers', async (t) => {
  const { data } = parsePolicy('version: 1\nflag: yes\nport: 0x10\noctal: 010\n')
  t.same(data, { version: 1, flag: 'yes', port: 16, octal: 10 })
})

test('duplicate keys are refused, with their line and column', async (t) => {
  const err = refusal('version: 1\nupstreams: []\nversion: 1\n', 'dup.yaml')
  t.equal(err.code, 'PORTCULLIS_POLICY_REJECTED')
  t.equal(err.statusCode, 422)
  t.equal(err.stage, 'parse')
  t.match(err.problems, [{ stage: 'parse', pointer: '', line: 3, column: 1, message: /Map keys must be unique/ }])
  t.equal(err.message, 'dup.yaml:3:1: Map keys must be unique')
  const nested = refusal('version: 1\nauthz:\n  realm: a\n  realm: b\n')
  t.match(nested.problems, [{ line: 4, column: 3 }])
  t.match(refusal('{"version": 1, "version": 1}').problems, [{ line: 1, column: 16, message: /unique/ }], 'in JSON too')
})

test('syntax errors are refused with their positions; several are counted in the message', async (t) => {
  const err = refusal('version: 1\nupstreams: [\n  {prefix: /api\n')
  t.equal(err.stage, 'parse')
  t.ok(err.problems.length > 1, 'every error is listed')
  for (const problem of err.problems) {
    t.type(problem.line, 'number')
    t.type(problem.column, 'number')
    t.notOk(problem.message.includes('\n'), 'one line per message')
  }
  t.match(err.message, new RegExp(`^policy:\\d+:\\d+: .+ \\(and ${err.problems.length - 1} more\\)$`))
  const json = refusal('{"version": 1,\n  "upstreams": [}\n')
  t.match(json.problems[0], { line: 2 })
})

test('tags other than the core schema\'s are refused: the data stays plain JSON', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['version: 1\nroles: !!set\n  ? admin\n', /Unresolved tag: tag:yaml\.org,2002:set/],
    ['version: 1\nroles: !!omap\n  - admin: 1\n', /Unresolved tag: tag:yaml\.org,2002:omap/],
    ['version: 1\nsince: !!timestamp 2001-12-14\n', /Unresolved tag: tag:yaml\.org,2002:timestamp/],
    ['!!binary aGVsbG8=\n', /Unresolved tag: tag:yaml\.org,2002:binary/],
    ['version: 1\nauthz: !include other.yaml\n', /Unresolved tag: !include/],
    ['version: 1\nauthz: !!str\n  realm: api\n', /!!str|tag:yaml\.org,2002:str/]
  ]
  for (const [text, message] of cases) {
    const err = refusal(text)
    t.equal(err.stage, 'parse', text)
    t.match(err.problems[0], { pointer: '', line: Number, column: Number, message }, text)
  }
  t.match(refusal('version: 1\nsince: !!timestamp 2001-12-14\n').problems, [{ line: 2, column: 8 }])
  const core = parsePolicy('version: !!int 1\nname: !!str 42\nflag: !!bool true\n')
  t.same(core.data, { version: 1, name: '42', flag: true }, 'the core schema\'s own tags are fine')
})

test('a top level that is not a mapping is refused', async (t) => {
  for (const text of ['- version: 1\n', '42\n', '"text"\n', '', '# only a comment\n', 'null\n']) {
    const err = refusal(text)
    t.equal(err.stage, 'parse', JSON.stringify(text))
    t.match(err.problems, [{ pointer: '', message: /must be a mapping of sections/ }])
    t.equal(err.problems[0]?.line, undefined)
  }
})

test('a document larger than MAX_POLICY_BYTES is refused before it is parsed', async (t) => {
  t.equal(MAX_POLICY_BYTES, 16 * 1024 * 1024)
  const prefix = 'version: 1\n# '
  const limit = prefix + 'x'.repeat(MAX_POLICY_BYTES - prefix.length - 1) + '\n'
  t.equal(Buffer.byteLength(limit), MAX_POLICY_BYTES)
  t.same(parsePolicy(limit).data, { version: 1 }, 'exactly the limit is read')
  const err = refusal(limit + 'x', 'big.yaml')
  t.match(err.problems, [{ stage: 'parse', pointer: '', message: `the document is larger than ${MAX_POLICY_BYTES} bytes` }])
  // Bytes, not characters: 'é' is two bytes in UTF-8.
  const wide = 'version: 1\n# ' + 'é'.repeat(MAX_POLICY_BYTES / 2)
  t.ok(wide.length < MAX_POLICY_BYTES)
  t.match(refusal(wide).problems, [{ message: /larger than/ }])
})

test('__proto__ keys are plain data and pollute no prototype', async (t) => {
  const { data } = parsePolicy('version: 1\n__proto__:\n  polluted: yes\nauthz:\n  __proto__:\n    isAdmin: true\n')
  t.equal(({} as Record<string, unknown>).polluted, undefined)
  t.equal(({} as Record<string, unknown>).isAdmin, undefined)
  t.equal(Object.getPrototypeOf(data), Object.prototype)
  t.ok(Object.hasOwn(data, '__proto__'), 'kept as an own field')
  t.same(Object.getOwnPropertyDescriptor(data, '__proto__')?.value, { polluted: 'yes' })
  t.equal((data as { polluted?: unknown }).polluted, undefined)
  const authz = data.authz as Record<string, unknown>
  t.equal(Object.getPrototypeOf(authz), Object.prototype)
  t.equal((authz as { isAdmin?: unknown }).isAdmin, undefined)
  const json = parsePolicy('{"version": 1, "__proto__": {"polluted": true}}')
  t.ok(Object.hasOwn(json.data, '__proto__'))
  t.equal(({} as Record<string, unknown>).polluted, undefined)
})

test('alias bombs are refused; a few aliases are fine', async (t) => {
  const bomb = [
    'a: &a [x, x, x, x, x, x, x, x, x, x]',
    'b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]',
    'c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]',
    'd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]',
    'e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]'
  ].join('\n')
  const err = refusal(bomb)
  t.equal(err.stage, 'parse')
  t.match(err.problems, [{ pointer: '', message: /alias/i }])
  const { data } = parsePolicy('version: 1\nroles: &r [reader]\nagain: *r\n')
  t.same(data.again, ['reader'])
})

test('locate() gives the line and column of a pointer, or of its nearest parent', async (t) => {
  const text = [
    'version: 1',
    'upstreams:',
    '  - prefix: /api',
    '    url: http://orders:8080',
    '    routes:',
    '      - method: GET',
    '        path: /orders/:id',
    'a/b:',
    '  c~d: 1',
    'empty:',
    ''
  ].join('\n')
  const parsed = parsePolicy(text)
  t.same(parsed.locate(''), { line: 1, column: 1 }, 'the document itself')
  t.same(parsed.locate('/version'), { line: 1, column: 10 })
  t.same(parsed.locate('/upstreams'), { line: 3, column: 3 })
  t.same(parsed.locate('/upstreams/0'), { line: 3, column: 5 })
  t.same(parsed.locate('/upstreams/0/url'), { line: 4, column: 10 })
  t.same(parsed.locate('/upstreams/0/routes/0/path'), { line: 7, column: 15 })
  t.same(parsed.locate('/a~1b/c~0d'), { line: 9, column: 8 }, 'escaped tokens')
  t.same(parsed.locate('/empty'), { line: 10, column: 7 }, 'a field without a value')
  t.same(parsed.locate('/upstreams/0/routes/0/authz'), { line: 6, column: 9 }, 'a missing field: the route that would hold it')
  t.same(parsed.locate('/upstreams/3/url'), { line: 3, column: 3 }, 'a missing entry: the list')
  t.same(parsed.locate('/upstreams/first'), { line: 3, column: 3 }, 'not an index: the list')
  t.same(parsed.locate('/version/major'), { line: 1, column: 10 }, 'under a scalar: the scalar')
  t.same(parsed.locate('/nothing/here'), { line: 1, column: 1 }, 'nothing matches: the document')
  const json = parsePolicy('{\n  "version": 1,\n  "upstreams": [\n    {"prefix": "/api"}\n  ]\n}')
  t.same(json.locate('/upstreams/0/prefix'), { line: 4, column: 16 })
})

test('pointerTokens() unescapes RFC 6901 tokens', async (t) => {
  t.same(pointerTokens(''), [])
  t.same(pointerTokens('/'), [''])
  t.same(pointerTokens('/a~1b/c~0d/~01'), ['a/b', 'c~d', '~1'])
})

test('withPositions() adds positions to problems that have none', async (t) => {
  const parsed = parsePolicy('version: 1\nauthz:\n  realm: api\n')
  const problems = withPositions(parsed, [
    { stage: 'schema', pointer: '/authz/realm', message: 'a' },
    { stage: 'schema', pointer: '/authz/realm', line: 9, column: 9, message: 'kept' }
  ])
  t.same(problems, [
    { stage: 'schema', pointer: '/authz/realm', line: 3, column: 10, message: 'a' },
    { stage: 'schema', pointer: '/authz/realm', line: 9, column: 9, message: 'kept' }
  ])
  const unplaced: ParsedPolicy = { ...parsed, locate: () => null }
  t.same(withPositions(unplaced, [{ stage: 'lint', pointer: '/x', message: 'b' }]), [{ stage: 'lint', pointer: '/x', message: 'b' }], 'a problem that cannot be placed is kept as it is')
})
