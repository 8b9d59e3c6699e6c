import fp from 'fastify-plugin'
import type { FastifyPluginAsync, FastifyRequest, RouteOptions } from 'fastify'
import type { ErrorObject, ValidateFunction } from 'ajv'
import { parse as parseCookies } from 'cookie'
import {
  claimChainStep, checkKnownKeys, checkMode, checkNumber, deny, hooksOf, invalidOption, pathOf, pointerToken, prepareDecision, recordPrepared,
  withHeaders, withViolations, type Mode, type PortcullisError, type PreparedDecision, type ProblemViolation
} from '@portcullis/core'
import { AmbiguousContentType, BodyTooDeep, BodyTooLarge, MethodNotAllowed, PrototypePoisoning, RequestInvalid, UnknownOperation, UnsupportedContentType } from './errors.js'
import { loadDocument } from './document.js'
import { inspect, type Finding } from './inspect.js'
import { essenceOf, hasBody, hasSeveralContentTypes, JSON_TYPE, ruleFor } from './media.js'
import { Compiler, isJsonType, type MediaRule, type Operation, type RouteSchemas } from './operations.js'
import { responseHooks } from './responses.js'

export const PLUGIN_NAME = '@portcullis/schema-validate'

export type UnknownOperations = 'refuse' | 'allow'

export interface SchemaValidateOptions {
  /**
   * The API contract: the path of an OpenAPI 3.0 or 3.1 document (YAML or JSON; the files it
   * refers to are read too, URLs never fetched), or the document as an object.
   */
  openapi?: string | object
  /**
   * Where the document's paths are served: with `'/api'`, the document's `/orders` is the
   * route `/api/orders`. The plugin speaks for the routes under the prefix only. @default ''
   */
  prefix?: string
  /**
   * Routes that are not operations of the document: `refuse` (404, or 405 when the path has
   * other methods), `allow`, or either by path prefix, the longest prefix that matches
   * deciding (`{ '/': 'refuse', '/internal/': 'allow' }`). @default 'refuse' with a document, 'allow' without
   */
  unknownOperations?: UnknownOperations | Record<string, UnknownOperations>
  /**
   * Which bodies refuse properties their schema does not declare (mass assignment): those of
   * `writes` (POST, PUT, PATCH), `all`, or `none` (the document decides alone). An object schema
   * that says `additionalProperties` itself is left as it says. @default 'writes'
   */
  rejectUnknownProperties?: 'writes' | 'all' | 'none'
  /** The largest request body, in bytes, where the operation says nothing (`x-portcullis-body-limit`). @default 1048576 */
  bodyLimit?: number
  /** How deeply a JSON body may nest objects and arrays. @default 32 */
  maxDepth?: number
  /** The most violations one 400 lists. @default 20 */
  maxErrors?: number
  /**
   * Responses checked against the document: `report` records a `would-deny` decision for one
   * that breaks it and sends it anyway, `enforce` answers 502 instead, `off` checks nothing.
   * @default 'report'
   */
  responses?: 'off' | 'report' | 'enforce'
  /**
   * Remove from JSON responses the properties the document does not declare (excessive data
   * exposure), before they are checked and sent. @default false
   */
  stripResponses?: boolean
  /** @default 'enforce' */
  mode?: Mode
}

/** A route's own say (`config.schemaValidate`). */
export interface RouteValidation extends RouteSchemas {
  /** This route's mode, in place of the plugin's. */
  mode?: Mode
  /** This route's largest body, in bytes. */
  bodyLimit?: number
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * Validation for this route (`@portcullis/schema-validate`): its mode, body limit, or plain
     * JSON Schemas in place of a document's operation; `false` exempts it.
     */
    schemaValidate?: RouteValidation | false
  }
}

/** What applies to one method of a route. */
interface Binding {
  operation: Operation | null
  /** The name decisions give: the operation id, or `POST /orders`. */
  name: string
  mode: Mode
  /** Without an operation: what the document says of the path, for 405's `Allow`. */
  allow: string | null
  bodyLimit: number
  /** Fastify's names of the path parameters, when they differ from the document's. */
  renames: Array<[fastify: string, document: string]> | null
  allowed: PreparedDecision
}

type Bindings = Map<string, Binding>

const OPTION_KEYS = ['openapi', 'prefix', 'unknownOperations', 'rejectUnknownProperties', 'bodyLimit', 'maxDepth', 'maxErrors', 'responses', 'stripResponses', 'mode']
// The largest response read in full to be checked or stripped.
export const MAX_CHECKED_RESPONSE = 4 * 1024 * 1024
const ROUTE_KEYS = ['mode', 'bodyLimit', 'params', 'querystring', 'headers', 'body', 'contentTypes']
const POINTER_MAX = 200

const plugin: FastifyPluginAsync<SchemaValidateOptions> = async (app, options) => {
  checkKnownKeys(options, OPTION_KEYS, 'schemaValidate')
  const mode = checkMode(options.mode, 'schemaValidate.mode')
  const prefix = options.prefix ?? ''
  if (typeof prefix !== 'string' || (prefix !== '' && (!prefix.startsWith('/') || prefix.endsWith('/')))) {
    throw invalidOption('schemaValidate.prefix', 'a path such as /api (starting with a slash, not ending with one), or an empty string', prefix)
  }
  claimChainStep(app, { step: 8, name: prefix === '' ? PLUGIN_NAME : `${PLUGIN_NAME} (prefix ${prefix})`, hooks: ['preValidation'] })
  const unknown = unknownPolicy(options.unknownOperations ?? (options.openapi === undefined ? 'allow' : 'refuse'))
  const closing = options.rejectUnknownProperties ?? 'writes'
  if (closing !== 'writes' && closing !== 'all' && closing !== 'none') throw invalidOption('schemaValidate.rejectUnknownProperties', 'writes, all or none', closing)
  const closeBodiesOf = (method: string): boolean => closing === 'all' || (closing === 'writes' && WRITES.has(method))
  const bodyLimit = checkNumber(options.bodyLimit, 1_048_576, 'schemaValidate.bodyLimit', 'a whole number of bytes, 0 or more', (n) => Number.isSafeInteger(n) && n >= 0)
  const maxDepth = checkNumber(options.maxDepth, 32, 'schemaValidate.maxDepth', 'a whole number from 1 to 1000', (n) => Number.isInteger(n) && n >= 1 && n <= 1000)
  const maxErrors = checkNumber(options.maxErrors, 20, 'schemaValidate.maxErrors', 'a whole number from 1 to 1000', (n) => Number.isInteger(n) && n >= 1 && n <= 1000)
  const responses = options.responses ?? 'report'
  if (responses !== 'off' && responses !== 'report' && responses !== 'enforce') throw invalidOption('schemaValidate.responses', 'off, report or enforce', responses)

  const compiler = new Compiler(maxDepth)
  const stripResponses = options.stripResponses ?? false
  if (typeof stripResponses !== 'boolean') throw invalidOption('schemaValidate.stripResponses', 'true or false', stripResponses)
  // The response hooks of one route, which know its bindings.
  const responseChecks = (bindings: Bindings): ReturnType<typeof responseHooks> => responseHooks({
    plugin: PLUGIN_NAME,
    mode: (request) => responses !== 'enforce' || bindings.get(request.method)?.mode === 'report' ? 'report' : 'enforce',
    strip: stripResponses,
    maxBytes: MAX_CHECKED_RESPONSE,
    operationOf: (request) => {
      const binding = bindings.get(request.method)
      return binding?.operation == null ? undefined : { operation: binding.operation, name: binding.name }
    },
    violationsOf: (rule) => violationsOf((rule.validate as ValidateFunction).errors as ErrorObject[], 'response').slice(0, maxErrors)
  })
  // The document's operations by method and path shape (`GET /api/orders/{}`).
  const operations = new Map<string, Operation>()
  // The methods the document has for each path shape.
  const methodsOf = new Map<string, string[]>()
  if (options.openapi !== undefined) {
    const { document, version } = await loadDocument(options.openapi, 'schemaValidate.openapi')
    for (const operation of compiler.document(document, version, closeBodiesOf)) {
      const shape = shapeOf(prefix + operation.path)
      operations.set(`${operation.method} ${shape}`, operation)
      methodsOf.set(shape, [...methodsOf.get(shape) ?? [], operation.method])
    }
  }

  // The document's paths as patterns, for requests that reach a catch-all route: only read when
  // such a request is refused.
  const templates = [...methodsOf].map(([shape, methods]) => ({
    pattern: new RegExp(`^${shape.split('{}').map((part) => part.replace(/[.*+?^$()|[\]\\]/g, '\\$&')).join('[^/]+')}/?$`),
    allow: methods.join(', ')
  }))
  const allowedOn = (path: string): string | null => templates.find((t) => t.pattern.test(path))?.allow ?? null

  const bind = (route: RouteOptions, method: string, own: RouteValidation | undefined): Binding | null => {
    const shape = shapeOf(route.url)
    const at = `route ${method} ${route.url} config.schemaValidate`
    const routeMode = own?.mode === undefined ? mode : checkMode(own.mode, `${at}.mode`)
    const limit = own?.bodyLimit === undefined ? undefined : checkNumber(own.bodyLimit, 0, `${at}.bodyLimit`, 'a whole number of bytes, 0 or more', (n) => Number.isSafeInteger(n) && n >= 0)
    const hasSchemas = own !== undefined && (own.params !== undefined || own.querystring !== undefined || own.headers !== undefined || own.body !== undefined)
    // HEAD is GET without a body: it follows the GET operation where the document has no HEAD.
    const operation = hasSchemas
      ? compiler.route(method, route.url, own as RouteSchemas, closeBodiesOf(method))
      : operations.get(`${method} ${shape}`) ?? (method === 'HEAD' ? operations.get(`GET ${shape}`) : undefined) ?? null
    if (operation === null && unknown(route.url) === 'allow') return null
    const name = operation === null ? `${method} ${route.url}` : operation.operationId ?? `${operation.method} ${prefix}${operation.path}`
    const fastifyNames = [...route.url.matchAll(/:([^/:(-]+)/g)].map((m) => m[1] as string)
    const renames = operation === null || operation.pathNames.length === 0 || sameNames(fastifyNames, operation.pathNames)
      ? null
      : fastifyNames.map((n, i): [string, string] => [n, operation.pathNames[i] as string])
    return {
      operation,
      name,
      mode: routeMode,
      allow: operation === null ? (methodsOf.get(shape)?.join(', ') ?? null) : null,
      bodyLimit: limit ?? operation?.bodyLimit ?? bodyLimit,
      renames,
      allowed: prepareDecision({ plugin: PLUGIN_NAME, outcome: 'allow', reason: 'PORTCULLIS_SCHEMA_OK', rule: name })
    }
  }

  app.addHook('onRoute', (route) => {
    const own = (route.config as { schemaValidate?: RouteValidation | false } | undefined)?.schemaValidate
    // A document speaks for the routes under its prefix only.
    if (own === false || !under(route.url, prefix)) return
    if (own !== undefined) checkKnownKeys(own, ROUTE_KEYS, `route ${String(route.method)} ${route.url} config.schemaValidate`)
    const bindings: Bindings = new Map()
    for (const method of ([] as string[]).concat(route.method)) {
      const binding = bind(route, method, own)
      if (binding !== null) bindings.set(method, binding)
    }
    if (bindings.size === 0) return
    // Fastify's parsers stop reading at the limit; the largest of the route's methods, each
    // method's own checked again once its body is known.
    const largest = Math.max(...[...bindings.values()].map((b) => b.bodyLimit))
    route.bodyLimit = route.bodyLimit === undefined ? largest : Math.min(route.bodyLimit, largest)
    // Step 8, as a route hook: a route the plugin has nothing to say about pays nothing, and one
    // it binds finds its operation without a lookup. Route preValidation hooks run after the
    // app's, as Fastify's own validation runs after every preValidation hook.
    const bindingOf = lookupOf(bindings)
    route.preValidation = [...hooksOf(route.preValidation), (request, _reply, done) => {
      const binding = bindingOf(request.method)
      if (binding === undefined) return done()
      try {
        check(request, binding)
      } catch (err) {
        return done(err as Error)
      }
      done()
    }]
    // Responses are checked on the routes whose operations describe some.
    if ((responses !== 'off' || stripResponses) && [...bindings.values()].some((b) => describesResponses(b.operation))) {
      const checks = responseChecks(bindings)
      route.preSerialization = [...hooksOf(route.preSerialization), checks.preSerialization]
      route.onSend = [...hooksOf(route.onSend), checks.onSend]
    }
  })

  const check = (request: FastifyRequest, binding: Binding): void => {
    const { operation } = binding
    if (operation === null) {
      // A catch-all route (a proxy) may have matched a path the document has, for other methods.
      const allow = binding.allow ?? allowedOn(pathOf(request.url))
      refuse(request, binding, allow === null ? new UnknownOperation() : withHeaders(new MethodNotAllowed(), { allow }))
      return
    }
    const body = checkBody(request, binding, operation)
    if (body === false) return
    const query = request.query as Record<string, unknown>
    // A URL without a query string has an empty query: nearly every body-carrying request.
    const finding = request.raw.url?.includes('?') === true && hasKeys(query) ? inspect(query, maxDepth) : null
    if (finding !== null) {
      refuse(request, binding, findingError(finding, 'querystring'))
      return
    }
    let violations = NONE
    if (operation.params !== null) violations = validateParameters(operation.params, paramsOf(request, binding), 'params', violations)
    if (operation.query !== null) violations = validateParameters(operation.query, query, 'querystring', violations)
    if (operation.headers !== null) violations = validateParameters(operation.headers, { ...request.headers }, 'headers', violations)
    if (operation.cookies !== null) violations = validateParameters(operation.cookies, cookiesOf(request, operation.cookieNames), 'cookies', violations)
    if (body !== null && body.rule.validate !== null) violations = validatePart(body.rule.validate, body.value, 'body', violations)
    if (violations.length > 0) {
      refuse(request, binding, withViolations(new RequestInvalid(), violations.slice(0, maxErrors)))
      return
    }
    recordPrepared(request, binding.allowed)
  }

  /** The body and the rule it is checked by; null when there is none; false when refused. */
  const checkBody = (request: FastifyRequest, binding: Binding, operation: Operation): { rule: MediaRule, value: unknown } | null | false => {
    const { raw } = request
    const headers = raw.headers
    if (!hasBody(headers)) {
      if (operation.body?.required === true) return refuse(request, binding, withViolations(new RequestInvalid(), [{ in: 'body', pointer: '', rule: 'required', message: 'a body is required' }]))
      return null
    }
    const length = Number(headers['content-length'] ?? 0)
    if (length > binding.bodyLimit) return refuse(request, binding, new BodyTooLarge())
    if (hasSeveralContentTypes(raw.rawHeaders)) return refuse(request, binding, new AmbiguousContentType())
    const type = headers['content-type']
    const essence = typeof type === 'string' ? essenceOf(type) : null
    const body = operation.body
    const rule = essence === null || body === null ? undefined : essence === JSON_TYPE ? body.json : ruleFor(body.media, essence)
    if (rule === undefined) return refuse(request, binding, new UnsupportedContentType())
    // JSON by the body's own media type, whichever range of the contract took it.
    const json = isJsonType(essence as string)
    let value = request.body
    if (isStream(value)) {
      // A body still unread: a JSON one the contract describes cannot be checked, and is refused;
      // any other kind (an upload) goes on, its media type and size checked.
      if (json && rule.validate !== null) return refuse(request, binding, new UnsupportedContentType())
      return null
    }
    if (!json) return { rule, value }
    if (typeof value === 'string' || Buffer.isBuffer(value)) {
      // A JSON body the app's parsers passed on as text is read here, for checking only.
      try {
        value = JSON.parse(value.toString())
      } catch {
        return refuse(request, binding, withViolations(new RequestInvalid(), [{ in: 'body', pointer: '', rule: 'json', message: 'is not valid JSON' }]))
      }
    }
    // A schema that bounds every value it accepts says as much as the walk, and more cheaply.
    const finding = rule.inspect ? inspect(value, maxDepth) : null
    if (finding !== null) return refuse(request, binding, findingError(finding, 'body'))
    return { rule, value }
  }
}

const WRITES = new Set(['POST', 'PUT', 'PATCH'])

/** A route's binding by method: with one method, nearly every route, a comparison instead of a lookup. */
function lookupOf (bindings: Bindings): (method: string) => Binding | undefined {
  if (bindings.size > 1) return (method) => bindings.get(method)
  const [only, binding] = [...bindings][0] as [string, Binding]
  return (method) => method === only ? binding : undefined
}

/** Denies the request in the binding's mode: throws in enforce mode, records in report mode. */
function refuse (request: FastifyRequest, binding: Binding, error: PortcullisError): false {
  deny(request, binding.mode, PLUGIN_NAME, error, binding.name)
  return false
}

// Whether an object has a property, without listing them all (nearly every query is empty).
function hasKeys (value: object): boolean {
  // eslint-disable-next-line no-unreachable-loop -- the first property answers
  for (const _key in value) return true
  return false
}

// The violations of a request that has none so far: a list is made only for one that has some.
const NONE: readonly ProblemViolation[] = Object.freeze([])

/** Checks one part of the request: the violations so far, with the part's added. */
function validatePart (validate: ValidateFunction, value: unknown, part: string, violations: readonly ProblemViolation[]): readonly ProblemViolation[] {
  if (validate(value)) return violations
  return [...violations, ...violationsOf(validate.errors as ErrorObject[], part)]
}

/** Checks parameters, which arrive as text: Ajv reads '1e400' as a number, Infinity, and lets it through. */
function validateParameters (validate: ValidateFunction, value: unknown, part: string, violations: readonly ProblemViolation[]): readonly ProblemViolation[] {
  const checked = validatePart(validate, value, part, violations)
  if (checked !== violations) return checked
  const finding = inspect(value, 2)
  return finding === null ? violations : [...violations, findingViolation(finding, part)]
}

function paramsOf (request: FastifyRequest, binding: Binding): Record<string, unknown> {
  const params = request.params as Record<string, unknown>
  if (binding.renames === null) return params
  const renamed: Record<string, unknown> = {}
  for (const [fastify, document] of binding.renames) renamed[document] = params[fastify]
  return renamed
}

function cookiesOf (request: FastifyRequest, names: readonly string[]): Record<string, unknown> {
  const header = request.headers.cookie
  const all = typeof header === 'string' ? parseCookies(header) : {}
  const own: Record<string, unknown> = {}
  for (const name of names) if (all[name] !== undefined) own[name] = all[name]
  return own
}

function findingViolation (finding: Finding, part: string): ProblemViolation {
  return { in: part, pointer: clip(finding.pointer), rule: finding.kind, message: FINDING_MESSAGES[finding.kind] }
}

function findingError (finding: Finding, part: string): PortcullisError {
  const where = [findingViolation(finding, part)]
  if (finding.kind === 'prototype') return withViolations(new PrototypePoisoning(), where)
  if (finding.kind === 'depth') return withViolations(new BodyTooDeep(), where)
  return withViolations(new RequestInvalid(), where)
}

const FINDING_MESSAGES = {
  prototype: 'is a property name that is never accepted',
  number: 'is a number too large to represent',
  depth: 'is nested too deeply'
}

/** Ajv's errors as violations: a JSON Pointer to each value, the rule it broke, and no value echoed. */
export function violationsOf (errors: ErrorObject[], part: string): ProblemViolation[] {
  const violations: ProblemViolation[] = []
  for (const error of errors) {
    let pointer = error.instancePath
    let message = error.message as string
    const params = error.params as Record<string, unknown>
    if (error.keyword === 'required') {
      pointer += `/${pointerToken(String(params.missingProperty))}`
      message = 'is required'
    } else if (error.keyword === 'additionalProperties' || error.keyword === 'unevaluatedProperties') {
      pointer += `/${pointerToken(String(params.additionalProperty ?? params.unevaluatedProperty))}`
      message = 'is not a property the contract declares'
    }
    // A property the contract does not declare is one rule, however the schema came to close the object.
    const rule = error.keyword === 'unevaluatedProperties' ? 'additionalProperties' : error.keyword
    violations.push({ in: part, pointer: clip(pointer), rule, message })
  }
  return violations
}

// Property names come from the client: a pointer is never longer than this in an answer.
function clip (pointer: string): string {
  return pointer.length > POINTER_MAX ? `${pointer.slice(0, POINTER_MAX)}…` : pointer
}

function unknownPolicy (value: unknown): (url: string) => UnknownOperations {
  const allowed = (v: unknown): v is UnknownOperations => v === 'refuse' || v === 'allow'
  if (allowed(value)) return () => value
  const expected = 'refuse, allow, or an object of path prefixes to refuse or allow'
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalidOption('schemaValidate.unknownOperations', expected, value)
  const entries = Object.entries(value).sort(([a], [b]) => b.length - a.length)
  for (const [path, v] of entries) {
    if (!path.startsWith('/')) throw invalidOption('schemaValidate.unknownOperations', 'path prefixes starting with a slash', path)
    if (!allowed(v)) throw invalidOption(`schemaValidate.unknownOperations['${path}']`, 'refuse or allow', v)
  }
  // Where no prefix matches, the route is refused.
  return (url) => (entries.find(([path]) => url.startsWith(path))?.[1] as UnknownOperations | undefined) ?? 'refuse'
}

/** A path with its parameters blanked, trailing slash dropped: `/orders/{id}` and `/orders/:orderId` are both `/orders/{}`. */
export function shapeOf (path: string): string {
  const shape = path.replace(/\{[^}]+\}/g, '{}').replace(/:[^/]+/g, '{}')
  return shape.length > 1 && shape.endsWith('/') ? shape.slice(0, -1) : shape
}

/** Whether an operation has a response schema: routes without one need no response hooks. */
function describesResponses (operation: Operation | null): boolean {
  return operation !== null && [...operation.responses.values()].some((rules) => rules.some((rule) => rule.validate !== null))
}

function under (url: string, prefix: string): boolean {
  return prefix === '' || url === prefix || url.startsWith(`${prefix}/`)
}

function sameNames (a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((name, i) => name === b[i])
}

function isStream (value: unknown): boolean {
  return typeof (value as { pipe?: unknown } | null)?.pipe === 'function'
}

/**
 * Enforces an OpenAPI 3.0/3.1 document (or plain JSON Schemas per route) on every request, before
 * the handler or the upstream sees it: undocumented operations, content types, sizes, nesting,
 * prototype poisoning, and every parameter and body against its schema; responses are checked
 * too, in report mode by default.
 */
export const portcullisSchemaValidate = fp(plugin, { fastify: '5.x', name: PLUGIN_NAME, dependencies: ['@portcullis/core'] })
