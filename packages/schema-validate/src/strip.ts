/**
 * Removing what a response schema does not declare (excessive data exposure): an object keeps
 * the properties its schema names, through `$ref`, `allOf`, `anyOf` and `oneOf`; an object whose
 * schema lets other properties in (`additionalProperties`, `patternProperties`) or names none at
 * all (a free-form object) keeps everything. Arrays are stripped item by item.
 */

type Schema = Record<string, unknown>

/** What one object schema, all its parts together, says of properties. */
interface Shape {
  /** Each named property and the schemas it is described by. */
  properties: Map<string, Schema[]>
  /** Other properties are let in: nothing is removed. */
  open: boolean
}

export type Resolve = (ref: string) => unknown

/** Removes, in place, the properties of `value` that `schema` does not declare. */
export function strip (value: unknown, schema: unknown, resolve: Resolve): void {
  if (typeof value !== 'object' || value === null) return
  const schemas = flatten(schema, resolve)
  if (Array.isArray(value)) {
    const items = schemas.flatMap((s) => s.items === undefined || typeof s.items !== 'object' ? [] : [s.items])
    if (items.length === 0) return
    for (const item of value) for (const s of items) strip(item, s, resolve)
    return
  }
  const shape = shapeOf(schemas)
  const record = value as Record<string, unknown>
  for (const key of Object.keys(record)) {
    const described = shape.properties.get(key)
    if (described === undefined) {
      if (!shape.open) delete record[key]
      continue
    }
    for (const s of described) strip(record[key], s, resolve)
  }
}

/** A schema and the schemas it is made of (`$ref`, `allOf`, `anyOf`, `oneOf`), each once. */
function flatten (schema: unknown, resolve: Resolve, seen = new Set<unknown>()): Schema[] {
  if (typeof schema !== 'object' || schema === null || seen.has(schema)) return []
  seen.add(schema)
  const s = schema as Schema
  const all: Schema[] = [s]
  if (typeof s.$ref === 'string') all.push(...flatten(resolve(s.$ref), resolve, seen))
  for (const key of ['allOf', 'anyOf', 'oneOf']) {
    if (Array.isArray(s[key])) for (const part of s[key] as unknown[]) all.push(...flatten(part, resolve, seen))
  }
  return all
}

function shapeOf (schemas: Schema[]): Shape {
  const properties = new Map<string, Schema[]>()
  let open = false
  for (const s of schemas) {
    if ((s.additionalProperties !== undefined && s.additionalProperties !== false) || s.patternProperties !== undefined) open = true
    if (typeof s.properties !== 'object' || s.properties === null) continue
    for (const [name, property] of Object.entries(s.properties as Record<string, Schema>)) {
      properties.set(name, [...properties.get(name) ?? [], property])
    }
  }
  // An object schema that names no property is a free-form object.
  return { properties, open: open || properties.size === 0 }
}
