import { checkKnownKeys, invalidOption, pointerToken, type ProblemViolation } from '@portcullis/core'
import type { Grants } from './roles.js'

/**
 * What one role may do with the fields of a route's bodies. Fields are dotted paths from the
 * body's root (`customer.name`); `*` stands for any array item or key (`items.*.sku`); `'*'`
 * alone is the whole body.
 */
export interface PropertyRule {
  /** Request body fields the role may set; any other field is refused (mass assignment). */
  write?: string[]
  /** Response body fields the role may see; the others are removed. Without it, all are. */
  read?: string[]
  /** Response body fields shown to the role as `"****"`. */
  mask?: string[]
}

/** Property rules per role. A principal gets what each of its roles (hierarchy expanded) allows. */
export type PropertyRules = Record<string, PropertyRule>

export const MASK = '****'

/** A tree of allowed paths; `all` covers the whole subtree. */
interface Node {
  all: boolean
  keys: Map<string, Node>
  any: Node | null
}

export interface PropertyPolicy {
  /** JSON Pointers of the body fields the principal may not set (at most a few, for the answer). */
  unwritable: (body: unknown) => ProblemViolation[]
  /** The response body with fields the principal may not read removed and masked ones replaced. */
  filter: (body: unknown) => unknown
  hasWrite: boolean
  hasRead: boolean
}

export interface CompiledProperties {
  /** The roles the rules name, to check against the declared ones. */
  roles: string[]
  hasWrite: boolean
  hasRead: boolean
  /** The policy for a principal's grants, combined once per principal and cached. */
  policyFor: (grants: Grants) => PropertyPolicy
}

const MAX_REPORTED = 10

export function compileProperties (input: unknown, path: string): CompiledProperties {
  if (typeof input !== 'object' || input === null || Array.isArray(input) || Object.keys(input).length === 0) {
    throw invalidOption(path, 'an object of role names to { write?, read?, mask? }', input)
  }
  const roles = Object.entries(input as PropertyRules).map(([role, rule]) => {
    const at = `${path}.${role}`
    checkKnownKeys(rule, ['write', 'read', 'mask'], at)
    return { role, write: paths(rule.write, `${at}.write`), read: paths(rule.read, `${at}.read`), mask: paths(rule.mask, `${at}.mask`) }
  })
  const hasWrite = roles.some((r) => r.write !== undefined)
  const hasRead = roles.some((r) => r.read !== undefined || r.mask !== undefined)
  const cache = new WeakMap<Grants, PropertyPolicy>()
  return {
    roles: roles.map((r) => r.role),
    hasWrite,
    hasRead,
    policyFor (grants) {
      let policy = cache.get(grants)
      if (policy === undefined) {
        const held = roles.filter((r) => grants.roles.has(r.role))
        // Roles add up: a field any held role may write or read is allowed. A field is masked
        // only when every held role that has masks masks it; a role without masks sees it.
        const write = tree(held.flatMap((r) => r.write ?? []))
        const read = held.some((r) => r.read === undefined) ? tree(['*']) : tree(held.flatMap((r) => r.read as string[]))
        const masks = held.map((r) => new Set(r.mask ?? []))
        const mask = tree(masks.length === 0 ? [] : [...(masks[0] as Set<string>)].filter((p) => masks.every((m) => m.has(p))))
        policy = {
          hasWrite,
          hasRead,
          unwritable: (body) => {
            const found: ProblemViolation[] = []
            if (body === undefined || body === null) return found
            // A body that is not JSON (a stream, a buffer) has no fields to check: only a role
            // that may write everything may send it.
            if (isJson(body)) unwritableIn(body, write, '', found)
            else if (!write.all) found.push({ in: 'body', pointer: '', rule: 'writable', message: 'the principal may not send this body' })
            return found
          },
          filter: (body) => filterValue(body, read, mask)
        }
        cache.set(grants, policy)
      }
      return policy
    }
  }
}

function isJson (value: unknown): boolean {
  if (typeof value !== 'object') return true
  const prototype = Object.getPrototypeOf(value)
  return prototype === Object.prototype || prototype === Array.prototype || prototype === null
}

function paths (list: unknown, path: string): string[] | undefined {
  if (list === undefined) return undefined
  if (!Array.isArray(list) || !list.every((p) => typeof p === 'string' && /^[^.\s]+(\.[^.\s]+)*$/.test(p))) {
    throw invalidOption(path, 'a list of field paths such as "item", "customer.name" or "items.*.sku" ("*" alone is every field)', list)
  }
  return list as string[]
}

function tree (list: readonly string[]): Node {
  const root = newNode()
  for (const dotted of list) {
    let node = root
    // '*' alone is the whole body; elsewhere it is any key or array item.
    if (dotted !== '*') {
      for (const key of dotted.split('.')) {
        if (key === '*') node = node.any ??= newNode()
        else {
          let next = node.keys.get(key)
          if (next === undefined) node.keys.set(key, next = newNode())
          node = next
        }
      }
    }
    node.all = true
  }
  spread(root)
  return root
}

function newNode (): Node {
  return { all: false, keys: new Map(), any: null }
}

// What is allowed under "any key" is allowed under each named key too, so that a lookup of a
// named key finds the union of both at once.
function spread (node: Node): void {
  if (node.any !== null) {
    for (const child of node.keys.values()) merge(child, node.any)
    spread(node.any)
  }
  for (const child of node.keys.values()) spread(child)
}

function merge (into: Node, from: Node): void {
  into.all ||= from.all
  for (const [key, child] of from.keys) {
    let target = into.keys.get(key)
    if (target === undefined) into.keys.set(key, target = newNode())
    merge(target, child)
  }
  if (from.any !== null) merge(into.any ??= newNode(), from.any)
}

function childOf (node: Node, key: string): Node | null {
  return node.keys.get(key) ?? node.any
}

function pointerTo (parent: string, key: string): string {
  return `${parent}/${pointerToken(key)}`
}

function unwritableIn (value: unknown, node: Node, pointer: string, found: ProblemViolation[]): void {
  if (node.all || found.length >= MAX_REPORTED) return
  if (typeof value !== 'object' || value === null) {
    found.push({ in: 'body', pointer, rule: 'writable', message: 'the principal may not set this field' })
    return
  }
  const entries: Array<[string, unknown]> = Array.isArray(value) ? value.map((item, i) => [String(i), item]) : Object.entries(value)
  for (const [key, item] of entries) {
    const child = Array.isArray(value) ? node.any : childOf(node, key)
    if (child === null) found.push({ in: 'body', pointer: pointerTo(pointer, key), rule: 'writable', message: 'the principal may not set this field' })
    else unwritableIn(item, child, pointerTo(pointer, key), found)
    if (found.length >= MAX_REPORTED) return
  }
}

/** Copies what may be read; `undefined` means "leave the field out". */
function filterValue (value: unknown, read: Node | null, mask: Node | null): unknown {
  // What may not be read is left out, masked or not: its name is not shown either.
  if (read === null) return undefined
  if (mask?.all === true) return MASK
  if (read.all && mask === null) return value
  // A plain value where masks expected fields under it is masked whole: the shape is not the
  // one the rules were written for, and what it holds may be what they hide.
  if (typeof value !== 'object' || value === null) return read.all ? MASK : undefined
  if (Array.isArray(value)) {
    const items = read.all ? read : read.any
    return value.map((item) => filterValue(item, items, mask?.any ?? null) ?? null)
  }
  const kept: Array<[string, unknown]> = []
  for (const [key, item] of Object.entries(value)) {
    const filtered = filterValue(item, read.all ? read : childOf(read, key), mask === null ? null : childOf(mask, key))
    if (filtered !== undefined) kept.push([key, filtered])
  }
  // fromEntries defines fields: a "__proto__" key parsed from JSON stays a field, not a prototype.
  return Object.fromEntries(kept)
}
