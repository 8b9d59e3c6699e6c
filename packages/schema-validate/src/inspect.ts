import { pointerToken } from '@portcullis/core'

/**
 * What a parsed body or query must never hold, whatever its schema says: property names that
 * reach prototypes when a backend merges the value into an object, numbers that JSON could not
 * hold (`1e400` parses as Infinity, and is sent on as `null`), and nesting deeper than allowed.
 */
export type Finding =
  | { kind: 'prototype', pointer: string }
  | { kind: 'number', pointer: string }
  | { kind: 'depth', pointer: string }

type Kind = Finding['kind']

/** Where a finding is, innermost property first, while the walk unwinds. */
interface Found { kind: Kind, path: string[] }

/**
 * The first thing wrong with a value, or null. The walk stops at `maxDepth` levels, so that no
 * nesting can exhaust the stack, and at the first finding; a pointer is built for that one only.
 */
export function inspect (value: unknown, maxDepth: number): Finding | null {
  const found = typeof value === 'object' && value !== null
    ? walk(value, 1, maxDepth)
    : typeof value === 'number' && !Number.isFinite(value) ? { kind: 'number' as const, path: [] } : null
  if (found === null) return null
  let pointer = ''
  for (let i = found.path.length - 1; i >= 0; i--) pointer += `/${pointerToken(found.path[i] as string)}`
  return { kind: found.kind, pointer }
}

function walk (node: object, depth: number, maxDepth: number): Found | null {
  if (depth > maxDepth) return { kind: 'depth', path: [] }
  if (Array.isArray(node)) {
    for (let i = 0; i < node.length; i++) {
      const found = child(node[i], depth, maxDepth)
      if (found !== null) {
        found.path.push(String(i))
        return found
      }
    }
    return null
  }
  const record = node as Record<string, unknown>
  const keys = Object.keys(record)
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i] as string
    const value = record[key]
    const found = poisons(key, value) ? { kind: 'prototype' as const, path: [] } : child(value, depth, maxDepth)
    if (found !== null) {
      found.path.push(key)
      return found
    }
  }
  return null
}

function child (value: unknown, depth: number, maxDepth: number): Found | null {
  if (typeof value === 'number') return Number.isFinite(value) ? null : { kind: 'number', path: [] }
  return typeof value === 'object' && value !== null ? walk(value, depth + 1, maxDepth) : null
}

// `__proto__` is refused whatever it holds; `constructor` only where it holds a `prototype`, as
// in `{"constructor": {"prototype": {…}}}`: a field named `constructor` holding anything else is
// someone's data (the same line as Fastify's own JSON parser draws).
function poisons (name: string, value: unknown): boolean {
  if (name === '__proto__') return true
  return name === 'constructor' && typeof value === 'object' && value !== null && Object.hasOwn(value, 'prototype')
}
