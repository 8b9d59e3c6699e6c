/**
 * A direct evaluator for the plain core of CEL that route conditions are mostly made of: field
 * selection, equality, ordering of numbers, `in` over lists of strings, `!`, `&&`, `||` and `?:`.
 * It is compiled once, from the AST that cel-js parsed and type-checked, into closures.
 *
 * It never decides anything cel-js would decide otherwise. Whenever a value is not one it
 * knows exactly how CEL treats (a missing field, a Map, a timestamp, a comparison across types),
 * it returns {@link UNDECIDED} and the condition is evaluated by cel-js itself, which then gives
 * the answer, or the error, it always gives.
 */

/** What the direct evaluator returns when cel-js has to evaluate the expression instead. */
export const UNDECIDED: unique symbol = Symbol('undecided')

/** A compiled expression: its value for the input, or UNDECIDED. */
export type Direct = (input: Readonly<Record<string, unknown>>) => unknown

/** The parts of a cel-js AST node this evaluator reads. */
interface Node {
  op: string
  args: unknown
  meta?: { alternate?: unknown, macro?: unknown }
}

/**
 * Compiles an expression's AST, or returns `null` when it uses anything outside the core above
 * (function calls, macros, arithmetic, indexing, map literals, bytes and unsigned literals, …).
 */
export function compileDirect (ast: unknown): Direct | null {
  try {
    return compile(ast as Node)
  } catch {
    // Unsupported, or a node this evaluator does not know the shape of: cel-js evaluates it all.
    return null
  }
}

const UNSUPPORTED = new Error('unsupported')

function compile (node: Node): Direct {
  // A node cel-js evaluates as another one (a macro, say) is left to cel-js.
  if (node.meta?.alternate !== undefined || node.meta?.macro !== undefined) throw UNSUPPORTED
  const { op, args } = node
  switch (op) {
    case 'value': return constant(args)
    case 'id': return variable(args as string)
    case '.': {
      const [target, field] = args as [Node, string]
      const of = compile(target)
      return (input) => select(of(input), field)
    }
    case '==':
    case '!=': {
      const [left, right] = pair(args)
      const negate = op === '!='
      return (input) => {
        const equal = equals(left(input), right(input))
        return equal === UNDECIDED ? UNDECIDED : equal !== negate
      }
    }
    case '<': case '<=': case '>': case '>=': {
      const [left, right] = pair(args)
      const compare = ORDER[op as Ordering]
      return (input) => {
        const a = left(input)
        const b = right(input)
        if ((typeof a === 'number' && typeof b === 'number') || (typeof a === 'bigint' && typeof b === 'bigint')) return compare(a, b)
        return UNDECIDED
      }
    }
    case 'in': return compileIn(args as [Node, Node])
    case '!_': {
      const operand = compile(args as Node)
      return (input) => {
        const value = operand(input)
        return typeof value === 'boolean' ? !value : UNDECIDED
      }
    }
    case '&&':
    case '||': {
      const [left, right] = pair(args)
      // `false && x` is false and `true || x` is true whatever x is, errors included.
      const decisive = op === '||'
      return (input) => {
        const first = left(input)
        if (first === decisive) return decisive
        if (first !== !decisive) return UNDECIDED
        const second = right(input)
        return typeof second === 'boolean' ? second : UNDECIDED
      }
    }
    case '?:': {
      const [condition, then, otherwise] = (args as Node[]).map(compile) as [Direct, Direct, Direct]
      return (input) => {
        const value = condition(input)
        if (value === true) return then(input)
        if (value === false) return otherwise(input)
        return UNDECIDED
      }
    }
    default: throw UNSUPPORTED
  }
}

/** A variable; the usual ones each have their own function, so that each one's load stays monomorphic. */
function variable (name: string): Direct {
  const map = (value: unknown): unknown => isMap(value) ? value : UNDECIDED
  switch (name) {
    case 'principal': return (input) => map(input.principal)
    case 'request': return (input) => map(input.request)
    case 'resource': return (input) => map(input.resource)
    default: return (input) => map(input[name])
  }
}

function pair (args: unknown): [Direct, Direct] {
  const [left, right] = args as [Node, Node]
  return [compile(left), compile(right)]
}

type Ordering = '<' | '<=' | '>' | '>='
const ORDER: Record<Ordering, (a: number | bigint, b: number | bigint) => boolean> = {
  '<': (a, b) => a < b,
  '<=': (a, b) => a <= b,
  '>': (a, b) => a > b,
  '>=': (a, b) => a >= b
}

function constant (value: unknown): Direct {
  if (value !== null && typeof value !== 'string' && typeof value !== 'boolean' && typeof value !== 'number' && typeof value !== 'bigint') throw UNSUPPORTED
  return () => value
}

/** `x in [literals]` is one set lookup; `x in list` a scan of a list of strings. */
function compileIn ([needle, haystack]: [Node, Node]): Direct {
  const item = compile(needle)
  if (haystack.op === 'list' && (haystack.args as Node[]).every((n) => n.op === 'value' && typeof n.args === 'string')) {
    const set = new Set((haystack.args as Node[]).map((n) => n.args as string))
    return (input) => {
      const value = item(input)
      return typeof value === 'string' ? set.has(value) : UNDECIDED
    }
  }
  const list = compile(haystack)
  return (input) => {
    const value = item(input)
    const values = list(input)
    if (typeof value !== 'string' || !Array.isArray(values)) return UNDECIDED
    let found = false
    for (const element of values) {
      if (typeof element !== 'string') return UNDECIDED
      if (element === value) found = true
    }
    return found
  }
}

/** What cel-js takes for a map: a plain object, with or without a prototype (Maps are left to it). */
function isMap (value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false
  const constructor = (value as { constructor?: unknown }).constructor
  return constructor === Object || constructor === undefined
}

function select (target: unknown, field: string): unknown {
  if (!isMap(target) || !Object.hasOwn(target, field)) return UNDECIDED
  const value = target[field]
  switch (typeof value) {
    case 'string': case 'boolean': case 'number': case 'bigint': return value
    case 'object': return value === null || isMap(value) || Array.isArray(value) ? value : UNDECIDED
    default: return UNDECIDED
  }
}

/** Equality of two values of one simple type; UNDECIDED for anything else. */
function equals (a: unknown, b: unknown): boolean | typeof UNDECIDED {
  if (a === UNDECIDED || b === UNDECIDED) return UNDECIDED
  const type = typeof a
  const other = typeof b
  if (type !== other) return UNDECIDED
  if (type === 'string' || type === 'boolean' || type === 'number' || type === 'bigint') return a === b
  if (a === null && b === null) return true
  return UNDECIDED
}
