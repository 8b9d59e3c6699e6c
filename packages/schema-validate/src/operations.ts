import { Ajv2020, type Format, type ValidateFunction } from 'ajv/dist/2020.js'
import formatsModule from 'ajv-formats'
import { convertSchema, isPlainObjectSchema, type JsonSchema, type OpenApiVersion } from './schema.js'
import { strip, type Resolve } from './strip.js'
import { bounded } from './bounds.js'
import { exactLengths } from './lengths.js'
import { JSON_TYPE, ruleFor } from './media.js'

/** A request body media type an operation accepts, and what its body must be. */
export interface MediaRule {
  /** `application/json`, `application/*` or `*\/*`, lower case, without parameters. */
  range: string
  validate: ValidateFunction | null
  /**
   * Whether a body must be walked for what no schema may let through (`inspect`) before it is
   * validated: not when the schema itself bounds every value it accepts (see `bounded`).
   */
  inspect: boolean
  /** Removes, in place, what the schema does not declare. */
  strip: (value: unknown) => void
}

export interface BodyRule {
  required: boolean
  media: MediaRule[]
  /** The rule for a body sent as `application/json`, found once at load time: nearly every body is one. */
  json: MediaRule | undefined
}

function bodyRule (required: boolean, media: MediaRule[]): BodyRule {
  return { required, media, json: ruleFor(media, JSON_TYPE) }
}

/** One operation of the document, compiled. */
export interface Operation {
  method: string
  /** The path as the document writes it: `/orders/{id}`. */
  path: string
  operationId: string | undefined
  /** The document's names of the path parameters, in the order they appear in the path. */
  pathNames: string[]
  params: ValidateFunction | null
  query: ValidateFunction | null
  headers: ValidateFunction | null
  cookies: ValidateFunction | null
  cookieNames: string[]
  /** `null`: the operation takes no body. */
  body: BodyRule | null
  /** Response schemas by status (`200`, `2XX`, `default`), then media range. */
  responses: Map<string, MediaRule[]>
  /** From the operation's `x-portcullis-body-limit`, in bytes. */
  bodyLimit: number | undefined
}

export const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']
// Header parameters that the specification says are ignored: the request's own machinery.
const IGNORED_HEADERS = new Set(['accept', 'content-type', 'authorization'])
// Methods whose body writes: unknown properties are refused there by default (mass assignment).
export const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH'])
// Formats OpenAPI names on top of JSON Schema's, checked where they say something checkable.
const OPENAPI_FORMATS: Record<string, Format> = {
  int32: { type: 'number', validate: (n: number) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 },
  int64: { type: 'number', validate: (n: number) => Number.isSafeInteger(n) },
  float: true,
  double: true,
  byte: { type: 'string', validate: /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/ },
  binary: true,
  password: true
}
// ajv-formats is CommonJS whose export is the plugin, with itself as `default`: whichever way a
// loader hands it over, `.default` is the plugin.
const addFormats = (formatsModule as unknown as { default: (ajv: Ajv2020) => Ajv2020 }).default

const OPEN = 'urn:portcullis:openapi:open'
const CLOSED = 'urn:portcullis:openapi:closed'

/** Plain JSON Schemas for a route, in place of a document's operation (Fastify's names for the parts). */
export interface RouteSchemas {
  params?: object
  querystring?: object
  headers?: object
  body?: object
  /** The media types the body may have. @default ['application/json'] */
  contentTypes?: string[]
}

/**
 * Compiles operations into validators, with Ajv (the validator Fastify itself uses), with two
 * instances: one for parameters, which arrive as text and are read as the types the schema
 * gives them (a parameter sent twice where one value is expected is refused), one for bodies,
 * which are never coerced.
 */
export class Compiler {
  readonly #parameters: Ajv2020
  readonly #bodies: Ajv2020
  readonly #maxDepth: number

  /** `maxDepth`: the deepest nesting a body may have. */
  constructor (maxDepth: number) {
    this.#maxDepth = maxDepth
    const options = { allErrors: true, strictSchema: false, strictNumbers: true, logger: false, useDefaults: false } as const
    this.#parameters = new Ajv2020({ ...options, coerceTypes: 'array' })
    this.#bodies = new Ajv2020({ ...options, coerceTypes: false })
    // Formats no one knows are annotations, as OpenAPI says (strictSchema off).
    for (const ajv of [this.#parameters, this.#bodies]) {
      exactLengths(ajv)
      addFormats(ajv)
      for (const [name, format] of Object.entries(OPENAPI_FORMATS)) ajv.addFormat(name, format)
    }
  }

  /**
   * Every operation of a checked document. `closeBodiesOf` says for which methods a body's
   * objects refuse the properties the document does not declare.
   */
  document (document: Record<string, unknown>, version: OpenApiVersion, closeBodiesOf: (method: string) => boolean): Operation[] {
    const resolve = (ref: string): unknown => pointer(document, ref)
    // Closed twins: a body property that refers to a plain object schema refers, in the closed
    // root, to a copy of it with `additionalProperties: false`, which Ajv checks at compile time
    // (`unevaluatedProperties` next to a `$ref` is tracked at run time, for every request).
    const twins = new Map<string, string>()
    const pending: string[] = []
    const closedRef = (ref: string): string | null => {
      if (!isPlainObjectSchema(resolve(ref))) return null
      let name = twins.get(ref)
      if (name === undefined) {
        name = `t${twins.size}`
        twins.set(ref, name)
        pending.push(ref)
      }
      return `${CLOSED}#/${TWINS}/${name}`
    }
    const convert = (schema: unknown, base: string, closeObjects: boolean, inValuePosition = true): JsonSchema =>
      convertSchema(schema, { version, base, closeObjects, resolve, closedRef }, inValuePosition) as JsonSchema
    // Which twins the closed schemas need, before anything is compiled: the closed root, the
    // bodies that are closed, and the twins themselves.
    const closedRoot = convertDocument(document, (s) => convert(s, CLOSED, true, false))
    for (const { method, operation } of operationsOf(document)) {
      if (!closeBodiesOf(method) || operation.requestBody === undefined) continue
      for (const media of Object.values(objectAt(deref(document, operation.requestBody).content))) convert((media as { schema?: unknown }).schema, CLOSED, true)
    }
    const closedTwins: Record<string, JsonSchema> = {}
    for (let ref = pending.shift(); ref !== undefined; ref = pending.shift()) closedTwins[twins.get(ref) as string] = convert(resolve(ref), CLOSED, true)
    // The whole document, converted, is where references lead: the bundler may have pointed one
    // schema at another anywhere in it, not only under components. What a reference leads to is
    // closed, or not, where it is referenced: the same schema may be a body or a branch of allOf.
    const roots: Record<string, object> = {
      [OPEN]: { ...convertDocument(document, (s) => convert(s, OPEN, false, false)), $id: OPEN },
      [CLOSED]: { ...closedRoot, [TWINS]: closedTwins, $id: CLOSED }
    }
    for (const ajv of [this.#parameters, this.#bodies]) for (const root of Object.values(roots)) ajv.addSchema(root)
    // Where a converted schema's reference leads.
    const lookup = (ref: string): unknown => {
      const hash = ref.indexOf('#')
      return pointer(roots[ref.slice(0, hash)], ref.slice(hash))
    }
    const openSchema = (schema: unknown): JsonSchema => convert(schema, OPEN, false)
    const closedSchema = (schema: unknown): JsonSchema => convert(schema, CLOSED, true)
    const operations: Operation[] = []
    for (const { path, method: upper, pathItem, operation } of operationsOf(document)) {
      const params = mergeParameters(document, pathItem.parameters, operation.parameters)
      const requestBody = operation.requestBody === undefined ? null : deref(document, operation.requestBody)
      const responses = new Map<string, MediaRule[]>()
      for (const [status, response] of Object.entries(objectAt(operation.responses))) {
        responses.set(status.toUpperCase(), this.#mediaRules(objectAt(deref(document, response).content), openSchema, resolve, lookup))
      }
      const bodySchema = closeBodiesOf(upper) ? closedSchema : openSchema
      operations.push({
        method: upper,
        path,
        operationId: typeof operation.operationId === 'string' ? operation.operationId : undefined,
        pathNames: [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1] as string),
        params: this.#parametersValidator(params, 'path', openSchema),
        query: this.#parametersValidator(params, 'query', openSchema),
        headers: this.#parametersValidator(params, 'header', openSchema),
        cookies: this.#parametersValidator(params, 'cookie', openSchema),
        cookieNames: params.filter((p) => p.in === 'cookie').map((p) => p.name),
        body: requestBody === null ? null : bodyRule(requestBody.required === true, this.#mediaRules(objectAt(requestBody.content), bodySchema, resolve, lookup)),
        responses,
        bodyLimit: bodyLimitOf(operation['x-portcullis-body-limit'], `paths.${path}.${upper.toLowerCase()}`)
      })
    }
    return operations
  }

  /** A route's own plain JSON Schemas as an operation. */
  route (method: string, path: string, schemas: RouteSchemas, closeBody: boolean): Operation {
    // A standalone schema's references lead into itself.
    const convert = (schema: unknown, closeObjects: boolean): JsonSchema =>
      convertSchema(schema, { version: '3.1', base: '', closeObjects, resolve: (ref) => pointer(schema, ref) }) as JsonSchema
    const parameters = (schema: object | undefined): ValidateFunction | null => schema === undefined ? null : this.#parameters.compile(convert(schema, false))
    const body = schemas.body === undefined
      ? null
      : bodyRule(true, this.#mediaRules(Object.fromEntries((schemas.contentTypes ?? [JSON_TYPE]).map((type) => [type, { schema: schemas.body }])), (s) => convert(s, closeBody), (ref) => pointer(schemas.body, ref), (ref) => pointer(schemas.body, ref)))
    return {
      method,
      path,
      operationId: undefined,
      pathNames: [],
      params: parameters(schemas.params),
      query: parameters(schemas.querystring),
      headers: parameters(schemas.headers),
      cookies: null,
      cookieNames: [],
      body,
      responses: new Map(),
      bodyLimit: undefined
    }
  }

  #parametersValidator (params: Parameter[], where: string, convert: (schema: unknown) => JsonSchema): ValidateFunction | null {
    const own = params.filter((p) => p.in === where && !(where === 'header' && IGNORED_HEADERS.has(p.name.toLowerCase())))
    if (own.length === 0) return null
    const properties: Record<string, JsonSchema> = {}
    const required: string[] = []
    for (const p of own) {
      const name = where === 'header' ? p.name.toLowerCase() : p.name
      // A parameter described by `content` rather than `schema` is checked as text.
      properties[name] = p.schema === undefined ? { type: 'string' } : convert(p.schema)
      if (p.required === true || where === 'path') required.push(name)
    }
    return this.#parameters.compile({ type: 'object', properties, required })
  }

  /**
   * A body schema's validator. A schema that is a lone reference to another (a document's
   * `$ref: '#/components/schemas/Order'`) is that schema's validator, without a call in between.
   */
  #body (schema: JsonSchema): ValidateFunction {
    const ref = schema.$ref
    const lone = typeof ref === 'string' && !ref.startsWith('#') && Object.keys(schema).length === 1
    return (lone ? this.#bodies.getSchema(ref) : undefined) ?? this.#bodies.compile(schema)
  }

  #mediaRules (content: Record<string, unknown>, convert: (schema: unknown) => JsonSchema, resolve: Resolve, lookup: Resolve): MediaRule[] {
    return Object.entries(content).map(([type, media]) => {
      const range = (type.split(';')[0] as string).trim().toLowerCase()
      const { schema } = media as { schema?: unknown }
      const converted = schema === undefined ? null : convert(schema)
      return {
        range,
        validate: converted === null ? null : this.#body(converted),
        inspect: converted === null || !bounded(converted, this.#maxDepth, lookup),
        strip: (value) => strip(value, schema, resolve)
      }
    })
  }
}

/** Where the closed root keeps its closed twins. */
const TWINS = 'x-portcullis-closed'

/** Every operation of a document, with its path item. */
function operationsOf (document: Record<string, unknown>): Array<{ path: string, method: string, pathItem: Record<string, unknown>, operation: Record<string, unknown> }> {
  const all = []
  for (const [path, item] of Object.entries(objectAt(document.paths))) {
    const pathItem = deref(document, item)
    for (const method of HTTP_METHODS) {
      if (pathItem[method] !== undefined) all.push({ path, method: method.toUpperCase(), pathItem, operation: deref(document, pathItem[method]) })
    }
  }
  return all
}

/** `application/json`, and any `…/…+json` (`application/problem+json`, `application/merge-patch+json`). */
export function isJsonType (essence: string): boolean {
  return essence === JSON_TYPE || essence.endsWith('+json')
}

interface Parameter {
  name: string
  in: string
  required?: boolean
  schema?: unknown
}

/** The path item's parameters with the operation's: an operation's parameter replaces the path's of the same name and place. */
function mergeParameters (document: Record<string, unknown>, pathLevel: unknown, operationLevel: unknown): Parameter[] {
  const merged = new Map<string, Parameter>()
  for (const list of [pathLevel, operationLevel]) {
    if (!Array.isArray(list)) continue
    for (const entry of list) {
      const p = deref(document, entry) as unknown as Parameter
      merged.set(`${p.in}:${p.name}`, p)
    }
  }
  return [...merged.values()]
}

function bodyLimitOf (value: unknown, where: string): number | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new Error(`${where}.x-portcullis-body-limit must be a whole number of bytes, 0 or more (got ${JSON.stringify(value)})`)
  }
  return value
}

/** The document converted where it holds schemas, as the root that references lead into. */
function convertDocument (document: Record<string, unknown>, convert: (schema: unknown) => JsonSchema): Record<string, unknown> {
  const copy = structuredClone(document)
  const visit = (node: unknown, inSchemaSlot: boolean): unknown => {
    if (typeof node !== 'object' || node === null) return node
    if (inSchemaSlot) return convert(node)
    if (Array.isArray(node)) return node.map((n) => visit(n, false))
    const out: Record<string, unknown> = {}
    for (const [key, value] of Object.entries(node)) out[key] = visit(value, key === 'schema')
    return out
  }
  const converted = visit(copy, false) as Record<string, unknown>
  const components = objectAt(copy.components)
  const schemas = objectAt(components.schemas)
  const out: Record<string, unknown> = { ...converted }
  // Components' schemas are schemas by place, not by key.
  out.components = { ...objectAt(converted.components), schemas: Object.fromEntries(Object.entries(schemas).map(([name, s]) => [name, convert(s)])) }
  return out
}

function deref (document: Record<string, unknown>, node: unknown): Record<string, unknown> {
  let current = node
  const seen = new Set<string>()
  while (typeof current === 'object' && current !== null && typeof (current as { $ref?: unknown }).$ref === 'string') {
    const ref = (current as { $ref: string }).$ref
    if (seen.has(ref)) break
    seen.add(ref)
    current = pointer(document, ref)
  }
  return objectAt(current)
}

/** What a local reference (`#/components/schemas/Order`) points at in the document. */
export function pointer (document: unknown, ref: string): unknown {
  if (!ref.startsWith('#')) return undefined
  let node = document
  for (const raw of ref.slice(1).split('/').slice(1)) {
    const key = decodeURIComponent(raw).replaceAll('~1', '/').replaceAll('~0', '~')
    if (typeof node !== 'object' || node === null || !Object.hasOwn(node, key)) return undefined
    node = (node as Record<string, unknown>)[key]
  }
  return node
}

function objectAt (value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? value as Record<string, unknown> : {}
}
