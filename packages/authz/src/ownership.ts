import type { FastifyRequest } from 'fastify'
import { checkKnownKeys, invalidOption, InvalidOption, type Principal } from '@portcullis/core'

/** Where the owner of the object named by a request is found, and which principal field it must match. */
export interface OwnerField {
  /** A route parameter (`id` in `/orders/:id`). */
  param?: string
  /** A query parameter. */
  query?: string
  /** A field of the validated body, as a dotted path (`customer.id`). */
  body?: string
  /** A field of the object the route's `resource` loader returned, as a dotted path (`owner`). */
  resource?: string
  /**
   * The principal field it must equal: `id`, `tenant`, `credentialId` or `claims.<path>`. When
   * that field is a list (say `claims.accounts`), the value must be one of its members.
   * @default 'id'
   */
  principal?: string
  /** Answer 404 instead of 403, so that a principal cannot learn which objects exist. @default 403 */
  status?: 403 | 404
}

/** A host-provided check: true when the principal owns what the request addresses. */
export type OwnerResolver = (request: FastifyRequest, principal: Principal, resource: unknown) => boolean | Promise<boolean>

export interface OwnerCheck {
  /** Answer 404 instead of 403, so that a principal cannot learn which objects exist. @default 403 */
  status?: 403 | 404
  resolve: OwnerResolver
}

export type OwnerRule = OwnerField | OwnerCheck

export interface CompiledOwner {
  status: 403 | 404
  /** Whether the check reads the loaded resource. */
  needsResource: boolean
  owns: (request: FastifyRequest, principal: Principal, resource: unknown) => boolean | Promise<boolean>
}

const SOURCES = ['param', 'query', 'body', 'resource'] as const
const PRINCIPAL_FIELDS = ['id', 'tenant', 'credentialId']

/** Compiles an ownership rule at load time into one lookup on each side and a comparison. */
export function compileOwner (rule: unknown, path: string): CompiledOwner {
  if (typeof rule !== 'object' || rule === null) throw invalidOption(path, '{ param | query | body | resource, principal?, status? } or { resolve, status? }', rule)
  const status = (rule as OwnerRule).status ?? 403
  if (status !== 403 && status !== 404) throw invalidOption(`${path}.status`, '403 or 404', status)
  if ('resolve' in rule) {
    const { resolve } = checkKnownKeys(rule, ['resolve', 'status'], path)
    if (typeof resolve !== 'function') throw invalidOption(`${path}.resolve`, 'a function (request, principal, resource) => boolean | Promise<boolean>', resolve)
    return { status, needsResource: false, owns: resolve as OwnerResolver }
  }
  const spec = checkKnownKeys(rule, [...SOURCES, 'principal', 'status'], path) as OwnerField
  const sources = SOURCES.filter((source) => spec[source] !== undefined)
  if (sources.length !== 1) throw new InvalidOption(`${path} must name exactly one of ${SOURCES.join(', ')} (got ${sources.length === 0 ? 'none' : sources.join(', ')})`)
  const source = sources[0] as typeof SOURCES[number]
  const valueOf = compileGetter(spec[source], `${path}.${source}`)
  const principalField = spec.principal ?? 'id'
  if (typeof principalField !== 'string' || !(PRINCIPAL_FIELDS.includes(principalField) || /^claims\.[^.]+(\.[^.]+)*$/.test(principalField))) {
    throw invalidOption(`${path}.principal`, `${PRINCIPAL_FIELDS.join(', ')} or claims.<path>`, principalField)
  }
  const expectedOf = compileGetter(principalField, `${path}.principal`)
  const read: (request: FastifyRequest, resource: unknown) => unknown =
    source === 'param'
      ? (request) => valueOf(request.params)
      : source === 'query' ? (request) => valueOf(request.query) : source === 'body' ? (request) => valueOf(request.body) : (_request, resource) => valueOf(resource)
  return {
    status,
    needsResource: source === 'resource',
    owns: (request, principal, resource) => matches(read(request, resource), expectedOf(principal))
  }
}

// Only strings, and integers written as strings, can name an owner: anything else (objects,
// arrays, booleans, missing values) never matches, so a malformed request cannot pass.
function matches (value: unknown, expected: unknown): boolean {
  const id = typeof value === 'number' && Number.isSafeInteger(value) ? String(value) : value
  if (typeof id !== 'string' || id === '') return false
  if (typeof expected === 'string') return id === expected
  return Array.isArray(expected) && expected.includes(id)
}

/** A dotted path compiled once into a walk over own properties (never the prototype chain). */
export function compileGetter (dotted: unknown, path: string): (value: unknown) => unknown {
  if (typeof dotted !== 'string' || !/^[^.]+(\.[^.]+)*$/.test(dotted)) throw invalidOption(path, 'a field name or dotted path such as "customer.id"', dotted)
  const keys = dotted.split('.')
  return (value) => {
    let current = value
    for (const key of keys) {
      if (typeof current !== 'object' || current === null || !Object.hasOwn(current, key)) return undefined
      current = (current as Record<string, unknown>)[key]
    }
    return current
  }
}
