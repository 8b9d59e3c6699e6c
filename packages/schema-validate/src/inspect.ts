/**
 * What a parsed body or query must never hold, whatever its schema says: property names that
 * reach prototypes when a backend merges the value into an object, numbers that JSON could not
 * hold (`1e400` parses as Infinity, and is sent on as `null`), and nesting deeper than allowed.
 */
export type Finding =
  | { kind: 'prototype', pointer: string }
  | { kind: 'number', pointer: string }
  | { kind: 'depth', pointer: string }

/**
 * The first thing wrong with a value, or null. Iterative, so that no nesting can exhaust the
 * stack; it stops at the first finding.
 */
export function inspect (value: unknown, maxDepth: number): Finding | null {
  if (typeof value !== 'object' || value === null) return typeof value === 'number' && !Number.isFinite(value) ? { kind: 'number', pointer: '' } : null
  const stack: Array<{ node: object, path: string, depth: number }> = [{ node: value, path: '', depth: 1 }]
  while (stack.length > 0) {
    const { node, path, depth } = stack.pop() as { node: object, path: string, depth: number }
    if (depth > maxDepth) return { kind: 'depth', pointer: path }
    const isArray = Array.isArray(node)
    for (const key of isArray ? (node as unknown[]).keys() : Object.keys(node)) {
      const name = String(key)
      if (!isArray && poisons(name, (node as Record<string, unknown>)[name])) return { kind: 'prototype', pointer: `${path}/${escape(name)}` }
      const child = (node as Record<string, unknown>)[name]
      if (typeof child === 'number') {
        if (!Number.isFinite(child)) return { kind: 'number', pointer: `${path}/${escape(name)}` }
      } else if (typeof child === 'object' && child !== null) {
        stack.push({ node: child, path: `${path}/${escape(name)}`, depth: depth + 1 })
      }
    }
  }
  return null
}

// `__proto__` is refused whatever it holds; `constructor` only where it holds a `prototype`, as
// in `{"constructor": {"prototype": {…}}}`: a field named `constructor` holding anything else is
// someone's data (the same line as Fastify's own JSON parser draws).
function poisons (name: string, value: unknown): boolean {
  if (name === '__proto__') return true
  return name === 'constructor' && typeof value === 'object' && value !== null && Object.hasOwn(value, 'prototype')
}

/** A property name as a JSON Pointer token (RFC 6901). */
export function escape (name: string): string {
  return name.includes('~') || name.includes('/') ? name.replaceAll('~', '~0').replaceAll('/', '~1') : name
}
