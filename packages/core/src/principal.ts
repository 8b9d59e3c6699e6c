import type { FastifyRequest } from 'fastify'

export type PrincipalType = 'user' | 'service' | 'anonymous'

/**
 * Who is making the request, as established by authn (or mtls). Authz, rate-limit and
 * audit-log read only this, never raw headers. Principals are frozen once set.
 */
export interface Principal {
  /** Stable identifier of the subject, such as a user id, a service name or a SPIFFE ID. */
  readonly id: string
  readonly type: PrincipalType
  /** The authentication method that established it: `jwt`, `api-key`, `basic`, `mtls`, `anonymous`, … */
  readonly method: string
  readonly roles: readonly string[]
  readonly scopes: readonly string[]
  /** Verified claims or attributes of the credential (never the credential itself). */
  readonly claims: Readonly<Record<string, unknown>>
  readonly tenant?: string
  readonly plan?: string
  /** Identifier of the credential used (API key id, token `jti`, certificate fingerprint), never its secret. */
  readonly credentialId?: string
}

export interface PrincipalInput {
  id: string
  type: PrincipalType
  method: string
  roles?: readonly string[]
  scopes?: readonly string[]
  claims?: Readonly<Record<string, unknown>>
  tenant?: string
  plan?: string
  credentialId?: string
}

const TYPES: ReadonlySet<string> = new Set<PrincipalType>(['user', 'service', 'anonymous'])

/** Builds a frozen, validated principal. Throws `TypeError` on a malformed input. */
export function createPrincipal (input: PrincipalInput): Principal {
  if (typeof input.id !== 'string' || input.id === '') throw new TypeError('principal.id must be a non-empty string')
  if (!TYPES.has(input.type)) throw new TypeError(`principal.type must be one of user, service, anonymous, got ${String(input.type)}`)
  if (typeof input.method !== 'string' || input.method === '') throw new TypeError('principal.method must be a non-empty string')
  const principal: Principal = {
    id: input.id,
    type: input.type,
    method: input.method,
    roles: Object.freeze(stringList(input.roles, 'roles')),
    scopes: Object.freeze(stringList(input.scopes, 'scopes')),
    claims: Object.freeze({ ...input.claims }),
    ...optional('tenant', input.tenant),
    ...optional('plan', input.plan),
    ...optional('credentialId', input.credentialId)
  }
  return Object.freeze(principal)
}

/** The principal of a request that no credential identified, on routes that allow it. */
export const ANONYMOUS: Principal = createPrincipal({ id: 'anonymous', type: 'anonymous', method: 'anonymous' })

export const kPrincipal: unique symbol = Symbol.for('portcullis.principal')

interface PrincipalSlot { [kPrincipal]: Principal | null }

/**
 * Sets `request.principal`. Only authentication plugins should call it: the property itself is
 * read-only, so application code cannot assign an identity by accident.
 */
export function setPrincipal (request: FastifyRequest, principal: Principal): void {
  (request as unknown as PrincipalSlot)[kPrincipal] = Object.isFrozen(principal) ? principal : createPrincipal(principal)
}

/** The getter behind `request.principal`. */
export function principalGetter (this: FastifyRequest): Principal | null {
  return (this as unknown as PrincipalSlot)[kPrincipal]
}

function stringList (value: readonly string[] | undefined, name: string): string[] {
  if (value === undefined) return []
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) {
    throw new TypeError(`principal.${name} must be an array of strings`)
  }
  return [...value]
}

function optional<K extends string> (key: K, value: string | undefined): { [P in K]?: string } {
  if (value === undefined) return {}
  if (typeof value !== 'string') throw new TypeError(`principal.${key} must be a string`)
  return { [key]: value } as { [P in K]?: string }
}
