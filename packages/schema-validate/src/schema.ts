/**
 * OpenAPI Schema Objects as JSON Schema 2020-12, which Ajv compiles. OpenAPI 3.1 schemas are
 * JSON Schema 2020-12 already, with a few annotations of its own; OpenAPI 3.0 schemas are an
 * older dialect (`nullable`, boolean `exclusiveMinimum`, `$ref` that hides its siblings).
 */

export type OpenApiVersion = '3.0' | '3.1'
export type JsonSchema = Record<string, unknown>

export interface ConvertOptions {
  version: OpenApiVersion
  /** Where the document's own `#/…` references point once it is an Ajv schema. */
  base: string
  /**
   * Refuse properties that an object schema does not declare (mass assignment): every object
   * in a value position that declares properties gets `unevaluatedProperties: false`, unless the
   * document says what to do with other properties itself.
   */
  closeObjects: boolean
  /** The document, to look through `$ref`s when deciding whether an object declares properties. */
  resolve: (ref: string) => unknown
  /**
   * Where a closed copy of the plain object schema a local reference leads to is (see
   * `isPlainObjectSchema`), or null when there is none.
   */
  closedRef?: (ref: string) => string | null
}

// OpenAPI's own annotations: they say nothing a validator checks.
const ANNOTATIONS = new Set(['example', 'xml', 'externalDocs', 'discriminator', 'nullable'])
// Keywords whose value is one schema that describes the instance itself, next to its parent.
const IN_PLACE_ONE = ['not', 'if', 'then', 'else']
// Keywords whose value is a list of schemas that describe the instance itself.
const IN_PLACE_LIST = ['allOf', 'anyOf', 'oneOf']
// Keywords whose value is one schema for another value (an item, a property value, a name).
const VALUE_ONE = ['items', 'additionalProperties', 'contains', 'propertyNames', 'unevaluatedItems', 'unevaluatedProperties', 'additionalItems']
// Keywords whose value is a list of schemas for other values.
const VALUE_LIST = ['prefixItems']
// Keywords whose value maps names to schemas for other values.
const VALUE_MAP = ['properties', 'patternProperties']
// Keywords whose value maps names to schemas that describe the instance itself, or that are only
// there to be referenced (their tops are closed, or not, where they are referenced).
const IN_PLACE_MAP = ['dependentSchemas', '$defs', 'definitions']

/**
 * A Schema Object as JSON Schema 2020-12. `inValuePosition` is true for a schema that stands for
 * a value of its own (a body, a property, an item), false for one that is part of its parent's
 * description (a branch of `allOf`): only the former may be closed, or branches would refuse
 * each other's properties.
 */
export function convertSchema (schema: unknown, options: ConvertOptions, inValuePosition = true): unknown {
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) return schema
  const source = schema as JsonSchema
  let out: JsonSchema = {}
  if (typeof source.$ref === 'string' && options.version === '3.0') {
    // In OpenAPI 3.0, a reference stands alone: its siblings are ignored.
    out.$ref = reference(source.$ref, options.base)
  } else {
    for (const [key, value] of Object.entries(source)) {
      if (ANNOTATIONS.has(key) || key.startsWith('x-')) continue
      if (key === '$ref' && typeof value === 'string') out.$ref = reference(value, options.base)
      else if (IN_PLACE_ONE.includes(key)) out[key] = convertSchema(value, options, false)
      else if (IN_PLACE_LIST.includes(key) && Array.isArray(value)) out[key] = value.map((s) => convertSchema(s, options, false))
      else if (key === 'items' && Array.isArray(value)) out.prefixItems = value.map((s) => convertSchema(s, options))
      else if (VALUE_ONE.includes(key)) out[key] = convertSchema(value, options)
      else if (VALUE_LIST.includes(key) && Array.isArray(value)) out[key] = value.map((s) => convertSchema(s, options))
      else if (VALUE_MAP.includes(key) && isObject(value)) out[key] = mapValues(value, (s) => convertSchema(s, options))
      else if (IN_PLACE_MAP.includes(key) && isObject(value)) out[key] = mapValues(value, (s) => convertSchema(s, options, false))
      else out[key] = value
    }
    if (options.version === '3.0') out = fromOpenApi30(source, out)
  }
  if (options.closeObjects && inValuePosition && out.additionalProperties === undefined && out.unevaluatedProperties === undefined) close(out, source, options)
  return out
}

/**
 * Closes an object schema in a value position, the cheapest way that is right: a plain object
 * schema takes `additionalProperties: false`, which Ajv checks at compile time; a lone reference
 * to one leads to its closed copy; anything composed takes `unevaluatedProperties: false`, which
 * sees the properties every part declares.
 */
function close (out: JsonSchema, source: JsonSchema, options: ConvertOptions): void {
  if (isPlainObjectSchema(out)) {
    out.additionalProperties = false
    return
  }
  const twin = Object.keys(out).every((key) => key === '$ref' || ANNOTATION_KEYWORDS.has(key)) && typeof source.$ref === 'string' ? options.closedRef?.(source.$ref) ?? null : null
  if (twin !== null) out.$ref = twin
  else if (declaresProperties(out, options, new Set())) out.unevaluatedProperties = false
}

// Keywords that say nothing a validator checks, beside a reference.
const ANNOTATION_KEYWORDS = new Set(['description', 'title', 'default', 'examples', 'deprecated', 'readOnly', 'writeOnly', '$comment'])
// Keywords that make a schema more than a plain list of properties.
const COMPOSING = ['$ref', '$dynamicRef', 'allOf', 'anyOf', 'oneOf', 'not', 'if', 'then', 'else', 'dependentSchemas', 'additionalProperties', 'unevaluatedProperties']

/** An object schema that declares its properties itself and is made of nothing else. */
export function isPlainObjectSchema (schema: unknown): boolean {
  return isObject(schema) && (isObject(schema.properties) || isObject(schema.patternProperties)) && !COMPOSING.some((key) => schema[key] !== undefined)
}

/** The 3.0 dialect's differences, applied to the converted schema. */
function fromOpenApi30 (source: JsonSchema, out: JsonSchema): JsonSchema {
  if (source.nullable === true) {
    if (typeof out.type === 'string') out.type = [out.type, 'null']
    if (Array.isArray(out.enum) && !out.enum.includes(null)) out.enum = [...out.enum, null]
  }
  for (const [bound, exclusive] of [['minimum', 'exclusiveMinimum'], ['maximum', 'exclusiveMaximum']] as const) {
    if (typeof out[exclusive] !== 'boolean') continue
    if (out[exclusive] === true && typeof out[bound] === 'number') {
      out[exclusive] = out[bound]
      delete out[bound]
    } else {
      delete out[exclusive]
    }
  }
  return out
}

/**
 * Whether a schema says which properties an object has: through its own `properties`, or through
 * the schemas it is made of. An object schema that declares none (a free-form object) is left open.
 */
function declaresProperties (schema: unknown, options: ConvertOptions, seen: Set<string>): boolean {
  if (!isObject(schema)) return false
  if (isObject(schema.properties) || isObject(schema.patternProperties)) return true
  if (typeof schema.$ref === 'string') {
    if (seen.has(schema.$ref)) return false
    seen.add(schema.$ref)
    const local = schema.$ref.startsWith(options.base) ? schema.$ref.slice(options.base.length) : schema.$ref
    if (declaresProperties(options.resolve(local), { ...options, base: '' }, seen)) return true
  }
  return IN_PLACE_LIST.some((key) => Array.isArray(schema[key]) && (schema[key] as unknown[]).some((s) => declaresProperties(s, options, seen)))
}

function reference (ref: string, base: string): string {
  return ref.startsWith('#') ? base + ref : ref
}

function isObject (value: unknown): value is JsonSchema {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function mapValues (value: JsonSchema, f: (v: unknown) => unknown): JsonSchema {
  const out: JsonSchema = {}
  for (const [key, v] of Object.entries(value)) out[key] = f(v)
  return out
}
