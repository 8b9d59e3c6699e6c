import { test } from 'tap'
import fc from 'fast-check'
import { compileDirect, UNDECIDED, type Direct } from '../src/cel-fast.js'
import { compileWhen, environment } from '../src/conditions.js'

/** The direct evaluator of an expression, and cel-js's own evaluation of it. */
function both (source: string): { direct: Direct | null, cel: (input: Record<string, unknown>) => unknown } {
  const parsed = environment.parse(source)
  const checked = parsed.check()
  if (!checked.valid) throw new Error(`${source}: ${String(checked.error)}`)
  return { direct: compileDirect(parsed.ast), cel: (input) => parsed(input) }
}

function celOutcome (cel: (input: Record<string, unknown>) => unknown, input: Record<string, unknown>): { value: unknown } | { error: string } {
  try {
    return { value: cel(input) }
  } catch (err) {
    return { error: (err as Error).message }
  }
}

const principal = Object.freeze({ id: 'alice', n: 2.5, on: true, none: null, count: 3n, tags: ['a', 'b'], mixed: ['a', 1], claims: { tenant: 'acme' }, at: new Date(0), fn: () => 1, map: new Map([['x', 'y']]) })
const input = { principal, grants: { roles: ['user'] }, request: { params: Object.assign(Object.create(null), { id: '42' }) }, resource: null }

test('the direct evaluator decides the plain core of CEL as cel-js does', async (t) => {
  // [expression, what the direct evaluator returns]
  const cases: Array<[string, unknown]> = [
    ['principal.id == "alice"', true],
    ['principal.id != "alice"', false],
    ['request.params.id != "0" && principal.id != ""', true],
    ['principal.n == 2.5 && principal.on == true && principal.count == 3', true],
    ['principal.none == null', true],
    ['principal.n < 3.0 && principal.n <= 2.5 && principal.n > 1.0 && principal.n >= 2.5', true],
    ['principal.count < 4 && !(principal.count > 4)', true],
    ['principal.id in ["alice", "bob"]', true],
    ['principal.claims.tenant in ["acme"] || false', true],
    ['"b" in principal.tags', true],
    ['"c" in principal.tags', false],
    ['"user" in grants.roles', true],
    ['principal.on ? principal.id == "alice" : false', true],
    ['!principal.on ? true : principal.id == "bob"', false],
    ['false && principal.missing == 1', false],
    ['true || principal.missing == 1', true],
    ['principal.on && principal.id == "x"', false],
    ['principal.on || principal.id == "x"', true],
    ['false || principal.on', true],
    // Where CEL's answer is not plain, cel-js answers.
    ['principal.missing == 1', UNDECIDED],
    ['principal.id == 1', UNDECIDED],
    ['principal.n == 2', UNDECIDED],
    ['principal.tags == principal.tags', UNDECIDED],
    ['principal.claims == principal.claims', UNDECIDED],
    ['principal.id < "b"', UNDECIDED],
    ['principal.at == principal.at', UNDECIDED],
    ['principal.fn == 1', UNDECIDED],
    ['principal.map.x == "y"', UNDECIDED],
    ['principal.id.x == "y"', UNDECIDED],
    ['principal.n in ["a"]', UNDECIDED],
    ['principal.id in principal.mixed', UNDECIDED],
    ['principal.id in principal.id', UNDECIDED],
    ['principal.n in principal.tags', UNDECIDED],
    ['!principal.id', UNDECIDED],
    ['principal.id && true', UNDECIDED],
    ['true && principal.id', UNDECIDED],
    ['principal.missing && true', UNDECIDED],
    ['principal.id ? true : false', UNDECIDED],
    ['resource.owner == "alice"', UNDECIDED]
  ]
  for (const [source, expected] of cases) {
    const { direct, cel } = both(source)
    if (direct === null) throw new Error(`${source} has no direct evaluator`)
    const value = direct(input)
    t.equal(value, expected, source)
    const outcome = celOutcome(cel, input)
    if (value !== UNDECIDED) t.same(outcome, { value }, `${source}: cel-js agrees`)
  }
})

test('expressions outside the plain core are left to cel-js whole', async (t) => {
  for (const source of [
    'principal.id.startsWith("a")', 'size(principal.tags) == 2', 'has(principal.id)', 'principal.count + 1 == 4',
    'principal["id"] == "alice"', '{"a": 1}.a == 1', '-principal.n < 0.0', 'principal.count == 3u', 'b"x" == b"x"',
    'principal.tags.exists(t, t == "a")', 'int(principal.n) == 2'
  ]) {
    t.equal(both(source).direct, null, source)
  }
  t.equal(compileDirect({ op: '==', args: null }), null, 'a node of an unknown shape is no error, only slower')
})

test('a compiled condition asks cel-js whenever the direct evaluator cannot decide', async (t) => {
  const { test: check } = compileWhen('principal.claims.tenant == "acme" || principal.level > 3', 'when')
  t.equal(check({ principal: { claims: { tenant: 'acme' } } }), true, 'decided directly')
  t.equal(check({ principal: { claims: { tenant: 'other' }, level: 5n } }), true, 'int against int, decided directly')
  t.equal(check({ principal: { claims: { tenant: 'other' }, level: 5 } }), true, 'a double against an int: cel-js decides')
  t.throws(() => check({ principal: { claims: { tenant: 'other' } } }), 'a missing field is an error, from cel-js')
  t.equal(compileWhen('principal.level', 'when').test({ principal: { level: 'yes' } }), false, 'a value that is not true is no permission')
  t.equal(compileWhen('principal.id.startsWith("a")', 'when').test({ principal: { id: 'alice' } }), true, 'outside the core, cel-js evaluates')
})

// A small grammar of conditions over a small set of fields, and inputs whose fields take every
// kind of value, plain or not: whatever the direct evaluator decides, cel-js decides the same.
const FIELDS = ['principal.id', 'principal.n', 'principal.flag', 'principal.tags', 'principal.obj', 'principal.obj.x', 'request.params.id', 'resource.owner', 'principal.absent']
const LITERALS = ['"a"', '"b"', '""', '0', '1', '2', '1.5', '0.0', 'true', 'false', 'null']
const operand = fc.oneof(fc.constantFrom(...FIELDS), fc.constantFrom(...LITERALS))
const expression = fc.letrec<{ bool: string }>((tie) => ({
  bool: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.tuple(operand, fc.constantFrom('==', '!=', '<', '<=', '>', '>='), operand).map(([a, op, b]) => `${a} ${op} ${b}`),
    fc.tuple(operand, fc.constantFrom('["a", "b"]', 'principal.tags', 'principal.id')).map(([a, list]) => `${a} in ${list}`),
    fc.constantFrom('principal.flag', 'true', 'false'),
    tie('bool').map((e) => `!(${e})`),
    fc.tuple(tie('bool'), fc.constantFrom('&&', '||'), tie('bool')).map(([a, op, b]) => `(${a}) ${op} (${b})`),
    fc.tuple(tie('bool'), tie('bool'), tie('bool')).map(([c, a, b]) => `(${c}) ? (${a}) : (${b})`)
  )
}))
const value = fc.oneof(
  fc.constantFrom('a', 'b', '', 0, 1, 1.5, Number.NaN, 2n, true, false, null, new Date(0), new Map([['x', 'a']])),
  fc.constantFrom(['a', 'b'], ['a', 2], [], { x: 'a' }, { x: 1 }, Object.create(null))
)
const record = (keys: string[]): fc.Arbitrary<Record<string, unknown>> => fc.record(Object.fromEntries(keys.map((k) => [k, value])), { requiredKeys: [] })
const inputs = fc.record({
  principal: fc.oneof(record(['id', 'n', 'flag', 'tags', 'obj']), value),
  request: fc.record({ params: fc.oneof(record(['id']), value) }),
  resource: fc.oneof(record(['owner']), value)
})

test('differential: the direct evaluator never disagrees with cel-js', async (t) => {
  let decided = 0
  let total = 0
  fc.assert(fc.property(expression.bool, inputs, (source, input) => {
    const parsed = environment.parse(source)
    // Expressions the type checker refuses never become conditions.
    if (!parsed.check().valid) return
    const direct = compileDirect(parsed.ast)
    if (direct === null) throw new Error(`${source} has no direct evaluator`)
    total++
    const value = direct(input)
    if (value === UNDECIDED) return
    decided++
    const outcome = celOutcome((i) => parsed(i), input)
    if (!('value' in outcome) || !Object.is(outcome.value, value)) {
      throw new Error(`${source} on ${JSON.stringify(input, (_k, v) => typeof v === 'bigint' ? `${v}n` : v)}: direct ${String(value)}, cel-js ${JSON.stringify(outcome)}`)
    }
  }), { numRuns: 3000, seed: 20261123 })
  t.ok(total > 1000, `${total} expressions type-checked`)
  // An evaluator that always deferred would pass the comparison above and be useless.
  t.ok(decided > total / 4, `the direct evaluator decided ${decided} of ${total}`)
})
