import { invalidOption, type Principal } from '@portcullis/core'

/** A role: the roles it includes (admin includes user) and the permissions it grants. */
export interface RoleDefinition {
  inherits?: string[]
  permissions?: string[]
}

/** What a principal holds once roles are expanded: every check is then a set lookup. */
export interface Grants {
  roles: ReadonlySet<string>
  scopes: ReadonlySet<string>
  permissions: ReadonlySet<string>
}

/**
 * Expands the role hierarchy once, at load time: each role maps to itself and every role it
 * includes, transitively. A cycle is refused, since it makes two roles one by accident.
 */
export function compileRoles (definitions: Record<string, RoleDefinition> | undefined): (principal: Principal) => Grants {
  const defs = definitions ?? {}
  if (typeof defs !== 'object' || defs === null || Array.isArray(defs)) throw invalidOption('authz.roles', 'an object of role names to { inherits?, permissions? }', defs)
  const expanded = new Map<string, { roles: string[], permissions: string[] }>()
  const expand = (role: string, trail: string[]): string[] => {
    if (trail.includes(role)) throw invalidOption('authz.roles', `a hierarchy without cycles: ${[...trail, role].join(' ⊇ ')}`)
    // Only declared roles get here: the keys, and inherits checked against them.
    const inherits = (defs[role] as RoleDefinition).inherits ?? []
    if (!Array.isArray(inherits) || !inherits.every((r) => typeof r === 'string' && Object.hasOwn(defs, r))) {
      throw invalidOption(`authz.roles.${role}.inherits`, `a list of declared roles: ${Object.keys(defs).join(', ')}`, inherits)
    }
    return [role, ...inherits.flatMap((r) => expand(r, [...trail, role]))]
  }
  for (const role of Object.keys(defs)) {
    const permissions = defs[role]?.permissions ?? []
    if (!Array.isArray(permissions) || !permissions.every((p) => typeof p === 'string')) throw invalidOption(`authz.roles.${role}.permissions`, 'a list of strings', permissions)
    const roles = [...new Set(expand(role, []))]
    expanded.set(role, { roles, permissions: roles.flatMap((r) => defs[r]?.permissions ?? []) })
  }
  // Principals are frozen and, behind authn's caches, reused: grants are worked out once per principal.
  const cache = new WeakMap<Principal, Grants>()
  return (principal) => {
    let grants = cache.get(principal)
    if (grants === undefined) {
      const roles = new Set<string>()
      const permissions = new Set<string>()
      for (const role of principal.roles) {
        const known = expanded.get(role)
        if (known === undefined) roles.add(role)
        for (const r of known?.roles ?? []) roles.add(r)
        for (const p of known?.permissions ?? []) permissions.add(p)
      }
      grants = { roles, scopes: new Set(principal.scopes), permissions }
      cache.set(principal, grants)
    }
    return grants
  }
}
