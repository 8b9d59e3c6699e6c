import type { JsonSchema } from './schema.js'

/**
 * Whether every value a schema accepts is one `inspect` would pass: no property named
 * `__proto__` or `constructor`, no number JSON cannot hold, no deeper nesting than `maxDepth`.
 * A body checked by such a schema need not be walked first: Ajv's own check says it all (objects
 * closed to other properties, numbers typed, which Ajv checks to be finite, depth bounded by the
 * schema). Conservative: anything it cannot be sure of is not bounded.
 */
export function bounded (schema: unknown, maxDepth: number, lookup: (ref: string) => unknown): boolean {
  const depth = depthOf(schema, lookup, new Set())
  return depth !== null && depth <= maxDepth
}

const SCALARS = new Set(['string', 'boolean', 'null', 'integer', 'number'])
const FORBIDDEN = new Set(['__proto__', 'constructor'])

/** How deeply values of the schema nest (0 for scalars), or null when it is not bounded. */
function depthOf (schema: unknown, lookup: (ref: string) => unknown, seen: Set<string>): number | null {
  if (typeof schema !== 'object' || schema === null) return null
  const s = schema as JsonSchema
  if (typeof s.$ref === 'string') {
    // A schema that refers to itself, however far round, is not bounded.
    if (seen.has(s.$ref) || Object.keys(s).some((key) => key !== '$ref' && key !== 'description' && key !== 'title')) return null
    return depthOf(lookup(s.$ref), lookup, new Set([...seen, s.$ref]))
  }
  // All of them hold: one bounded part bounds the whole.
  if (Array.isArray(s.allOf)) {
    const depths = s.allOf.map((part) => depthOf(part, lookup, seen)).filter((d): d is number => d !== null)
    return depths.length === 0 ? null : Math.min(...depths)
  }
  const values = s.const !== undefined ? [s.const] : s.enum
  if (Array.isArray(values)) return values.every((v) => v === null || typeof v !== 'object') ? 0 : null
  const types = typeof s.type === 'string' ? [s.type] : s.type
  if (!Array.isArray(types) || types.length === 0 || s.anyOf !== undefined || s.oneOf !== undefined) return null
  let depth = 0
  for (const type of types) {
    if (SCALARS.has(type as string)) continue
    const inner = type === 'object' ? objectDepth(s, lookup, seen) : type === 'array' ? arrayDepth(s, lookup, seen) : null
    if (inner === null) return null
    depth = Math.max(depth, inner)
  }
  return depth
}

function objectDepth (s: JsonSchema, lookup: (ref: string) => unknown, seen: Set<string>): number | null {
  if (s.additionalProperties !== false || s.patternProperties !== undefined) return null
  let depth = 0
  for (const [name, property] of Object.entries((s.properties ?? {}) as Record<string, unknown>)) {
    if (FORBIDDEN.has(name)) return null
    const inner = depthOf(property, lookup, seen)
    if (inner === null) return null
    depth = Math.max(depth, inner)
  }
  return depth + 1
}

function arrayDepth (s: JsonSchema, lookup: (ref: string) => unknown, seen: Set<string>): number | null {
  if (s.prefixItems !== undefined || s.items === undefined) return null
  const inner = depthOf(s.items, lookup, seen)
  return inner === null ? null : inner + 1
}
