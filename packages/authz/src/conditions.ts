import { Environment } from '@marcbachmann/cel-js'
import { InvalidOption } from '@portcullis/core'
import { compileDirect, UNDECIDED } from './cel-fast.js'

/**
 * What a condition sees. `principal` is `request.principal`; `grants` holds its roles with the
 * hierarchy expanded, its scopes and its permissions; `request` carries validated values only;
 * `resource` is what the route's `resource` loader returned (or null); `env.time` is a timestamp.
 */
export interface ConditionInput {
  principal: unknown
  grants: { roles: readonly string[], scopes: readonly string[], permissions: readonly string[] }
  request: { method: string, route: string, params: unknown, query: unknown, headers: unknown, body: unknown }
  resource: unknown
  env: { time: Date, clientIp: string | null }
}

/** Expressions are policy, not programs: a bound on their size keeps a typo from costing much. */
export const MAX_CONDITION_LENGTH = 2048

/** The cel-js environment every condition is compiled in (not part of the package API). */
export const environment = new Environment({ limits: { maxAstNodes: 512, maxDepth: 32, maxListElements: 256, maxMapEntries: 256, maxCallArguments: 8 } })
  .registerVariable('principal', 'map')
  .registerVariable('grants', 'map')
  .registerVariable('request', 'map')
  .registerVariable('resource', 'dyn')
  .registerVariable('env', 'map')

export type Condition = (input: ConditionInput) => boolean

/**
 * A compiled condition, with which of the variables that cost something to build (grants,
 * request, env) its source names. An expression reads a variable only by naming it, so one whose
 * name appears nowhere in the source (string literals and comments included, which can only err
 * towards building it) is never read, and may be left undefined in the input.
 */
export interface CompiledCondition {
  test: (input: Partial<ConditionInput>) => boolean
  uses: { grants: boolean, request: boolean, env: boolean }
}

interface CelError { summary: string, range?: { start: number } }

/**
 * Compiles a CEL expression once, at load time, and type-checks it against the variables above.
 * An expression that does not parse, names an unknown variable or cannot yield a bool fails
 * with the option path and the position (1-based line and column) of the fault.
 */
export function compileCondition (source: unknown, path: string): Condition {
  return compileWhen(source, path).test
}

/** `compileCondition`, with the variables the expression names. */
export function compileWhen (source: unknown, path: string): CompiledCondition {
  if (typeof source !== 'string' || source.trim() === '' || source.length > MAX_CONDITION_LENGTH) {
    throw new InvalidOption(`${path} must be a CEL expression of at most ${MAX_CONDITION_LENGTH} characters, such as 'resource.owner == principal.id' (got ${JSON.stringify(source)})`)
  }
  let evaluate: ReturnType<typeof environment.parse> | undefined
  let fault: CelError | undefined
  try {
    evaluate = environment.parse(source)
    const checked = evaluate.check()
    if (!checked.valid) fault = checked.error as CelError
    else if (checked.type !== 'bool' && checked.type !== 'dyn') fault = { summary: `the expression yields ${String(checked.type)}, not bool` }
  } catch (err) {
    fault = err as CelError
  }
  if (fault !== undefined) throw new InvalidOption(`${path} is not a valid condition${position(source, fault.range?.start)}: ${fault.summary}`)
  // Parsed, since parsing threw nothing.
  const parsed = evaluate as ReturnType<typeof environment.parse>
  // Most conditions need nothing cel-js alone can do; the others, and every unusual value, go to it.
  const direct = compileDirect(parsed.ast)
  // A value that is not exactly true (a dyn that turned out to be a string, say) is no permission.
  const slow = (input: Partial<ConditionInput>): boolean => parsed(input) === true
  return {
    test: direct === null
      ? slow
      : (input) => {
          const value = direct(input as Record<string, unknown>)
          return value === UNDECIDED ? slow(input) : value === true
        },
    uses: { grants: /\bgrants\b/.test(source), request: /\brequest\b/.test(source), env: /\benv\b/.test(source) }
  }
}

function position (source: string, offset: number | undefined): string {
  if (offset === undefined) return ''
  const before = source.slice(0, offset).split('\n')
  return ` at line ${before.length}, column ${(before.at(-1) as string).length + 1}`
}
