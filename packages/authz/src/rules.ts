import { checkKnownKeys, invalidOption } from '@portcullis/core'
import type { Grants } from './roles.js'
import { checkRuleKeys, compileConditions, type Conditions, type RouteChecks } from './route-checks.js'

/** One set of conditions; every field given must hold. */
export interface Requirement {
  /** At least one of these roles (after the hierarchy is expanded). */
  anyRole?: string[]
  /** Every one of these roles. */
  allRoles?: string[]
  /** Every one of these scopes: exact, case-sensitive. */
  allScopes?: string[]
  /** At least one of these scopes. */
  anyScope?: string[]
  /** Every one of these permissions (granted by roles). */
  allPermissions?: string[]
  /** At least one of these permissions. */
  anyPermission?: string[]
}

/**
 * A route's rule: a requirement, or alternatives of which one must hold, and conditions checked
 * once the request is validated. A rule with conditions only admits any authenticated principal
 * that meets them.
 */
export type AuthzRule = (Requirement & Conditions) | ({ anyOf: Requirement[] } & Conditions)

const FIELDS = ['anyRole', 'allRoles', 'allScopes', 'anyScope', 'allPermissions', 'anyPermission'] as const

/** The outcome of a rule for one principal: allowed, or which kind of grant was missing. */
export type Verdict = 'allow' | 'scope' | 'other'

export interface CompiledRule {
  /** The scopes to name in an insufficient_scope challenge. */
  scopes: string[]
  /** The roles the rule mentions, to check against the declared ones. */
  roles: string[]
  evaluate: (grants: Grants) => Verdict
  /** Ownership, condition and property checks; `null` when the rule has none. */
  checks: RouteChecks | null
}

/** One requirement field, compiled: which of the grants it reads, the names, and all or any. */
interface Check { set: 'roles' | 'scopes' | 'permissions', values: readonly string[], all: boolean, kind: 'scope' | 'other' }

const allowAll = (): Verdict => 'allow'

/** Compiles a rule once, at load time, into set lookups. */
export function compileRule (rule: AuthzRule, path: string): CompiledRule {
  if (typeof rule !== 'object' || rule === null) throw invalidOption(path, 'false (a public route), a requirement such as { anyRole: ["admin"] }, or { anyOf: [...] }', rule)
  const anyOf = 'anyOf' in rule
  checkRuleKeys(rule, anyOf ? ['anyOf'] : FIELDS, path)
  const checks = compileConditions(rule, path)
  if (!anyOf && checks !== null && FIELDS.every((field) => (rule as Requirement)[field] === undefined)) {
    return { scopes: [], roles: checks.properties?.roles ?? [], evaluate: allowAll, checks }
  }
  const alternatives = anyOf ? rule.anyOf : [rule]
  if (!Array.isArray(alternatives) || alternatives.length === 0) throw invalidOption(`${path}.anyOf`, 'a non-empty list of requirements', alternatives)
  const compiled = alternatives.map((req, i) => compileRequirement(req, anyOf ? `${path}.anyOf[${i}]` : path, anyOf))
  return {
    scopes: [...new Set(compiled.flatMap((c) => c.scopes))],
    roles: [...new Set([...compiled.flatMap((c) => c.roles), ...(checks?.properties?.roles ?? [])])],
    evaluate (grants) {
      let verdict: Verdict = 'scope'
      for (const alternative of compiled) {
        const failed = alternative.failing(grants)
        if (failed === null) return 'allow'
        if (failed !== 'scope') verdict = 'other'
      }
      return verdict
    },
    checks
  }
}

function compileRequirement (req: Requirement, path: string, alternative: boolean): { scopes: string[], roles: string[], failing: (grants: Grants) => 'scope' | 'other' | null } {
  if (alternative) checkKnownKeys(req, FIELDS, path)
  const present = FIELDS.filter((field) => req[field] !== undefined)
  if (present.length === 0) throw invalidOption(path, `at least one of ${FIELDS.join(', ')}, or a condition (mark a public route with config.authz: false)`)
  const checks: Check[] = present.map((field) => {
    const values = req[field]
    if (!Array.isArray(values) || values.length === 0 || !values.every((v) => typeof v === 'string' && v !== '' && !/\s/.test(v))) {
      throw invalidOption(`${path}.${field}`, 'a non-empty list of names without spaces', values)
    }
    const set = field.endsWith('Role') || field.endsWith('Roles') ? 'roles' : field.endsWith('Scope') || field.endsWith('Scopes') ? 'scopes' : 'permissions'
    const all = field.startsWith('all')
    return { set, values: [...values] as string[], all, kind: set === 'scopes' ? 'scope' : 'other' }
  })
  return {
    scopes: [...(req.allScopes ?? []), ...(req.anyScope ?? [])],
    roles: [...(req.anyRole ?? []), ...(req.allRoles ?? [])],
    // Plain loops over plain records: this runs on every request.
    failing (grants) {
      let missing: 'scope' | 'other' | null = null
      for (let i = 0; i < checks.length; i++) {
        const { set, values, all, kind } = checks[i] as Check
        const held = set === 'roles' ? grants.roles : set === 'scopes' ? grants.scopes : grants.permissions
        if (!holds(held, values, all)) {
          if (kind === 'other') return 'other'
          missing = 'scope'
        }
      }
      return missing
    }
  }
}

/** Whether `held` has all of `values` (`all`), or any of them. */
function holds (held: ReadonlySet<string>, values: readonly string[], all: boolean): boolean {
  for (let i = 0; i < values.length; i++) {
    if (held.has(values[i] as string) !== all) return !all
  }
  return all
}
