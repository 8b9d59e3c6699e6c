import type { Readable } from 'node:stream'
import type { FastifyReply, FastifyRequest, onSendHookHandler, preHandlerHookHandler, preSerializationHookHandler } from 'fastify'
import { checkKnownKeys, deny, invalidOption, isJsonMediaType, prepareDecision, readPayload, recordDecision, recordPrepared, withViolations, type Mode, type Principal } from '@portcullis/core'
import { compileWhen, type CompiledCondition, type ConditionInput } from './conditions.js'
import { ConditionError, ConditionFailed, NotOwnedHidden, NotOwner, PropertyNotWritable, ResponseUnfilterable } from './errors.js'
import { compileOwner, type CompiledOwner, type OwnerRule } from './ownership.js'
import { compileProperties, type CompiledProperties, type PropertyRules } from './properties.js'
import type { Grants } from './roles.js'

/** Loads the object a request addresses (an order by its id), after validation. `null` when there is none. */
export type ResourceLoader = (request: FastifyRequest) => unknown

/** Checks of a route that need the validated request (step 9) or the response (step 11). */
export interface Conditions {
  /** Loads the object the request addresses, for `owner` and `when` (as `resource`). */
  resource?: ResourceLoader
  /** Object ownership: the principal must own what the request addresses. */
  owner?: OwnerRule
  /** A CEL expression over principal, grants, request, resource and env that must be true. */
  when?: string
  /** Fields each role may write in request bodies and read in responses. */
  properties?: PropertyRules
}

export const CONDITION_KEYS = ['resource', 'owner', 'when', 'properties'] as const

export interface RouteChecks {
  resource: ResourceLoader | null
  owner: CompiledOwner | null
  when: CompiledCondition | null
  properties: CompiledProperties | null
}

/** Compiles a rule's conditions at load time; `null` when it has none. */
export function compileConditions (rule: Conditions, path: string): RouteChecks | null {
  if (CONDITION_KEYS.every((key) => rule[key] === undefined)) return null
  if (rule.resource !== undefined && typeof rule.resource !== 'function') throw invalidOption(`${path}.resource`, 'a function (request) => resource | null, or a promise of one', rule.resource)
  const owner = rule.owner === undefined ? null : compileOwner(rule.owner, `${path}.owner`)
  if (owner?.needsResource === true && rule.resource === undefined) throw invalidOption(`${path}.owner.resource`, 'used with a resource loader (config.authz.resource)', (rule.owner as { resource: string }).resource)
  return {
    resource: rule.resource ?? null,
    owner,
    when: rule.when === undefined ? null : compileWhen(rule.when, `${path}.when`),
    properties: rule.properties === undefined ? null : compileProperties(rule.properties, `${path}.properties`)
  }
}

interface HookContext {
  plugin: string
  mode: Mode
  /** The rule's name for decisions: `GET /orders/:id`. */
  name: string
  /** The route's URL pattern, `/orders/:id`: what conditions see as `request.route`. */
  url: string
  grantsOf: (request: FastifyRequest) => Grants
}

/**
 * Step 9: ownership, the condition and write rules, on validated values. Any failure, including
 * an error while evaluating the condition, denies.
 */
export function conditionsHook (checks: RouteChecks, { plugin, mode, name, url, grantsOf }: HookContext): preHandlerHookHandler {
  const write = checks.properties?.hasWrite === true ? checks.properties : null
  const when = checks.when
  const allowed = prepareDecision({ plugin, outcome: 'allow', reason: 'PORTCULLIS_AUTHZ_CONDITIONS_OK', rule: name })
  const decide = (request: FastifyRequest, principal: Principal, resource: unknown): void => {
    if (when !== null) {
      const { uses } = when
      let verdict: boolean | Error
      try {
        const input: Partial<ConditionInput> = {
          principal,
          grants: uses.grants ? listsOf(grantsOf(request)) : undefined,
          request: uses.request ? { method: request.method, route: url, params: request.params, query: request.query, headers: request.headers, body: request.body ?? null } : undefined,
          resource,
          env: uses.env ? { time: new Date(), clientIp: request.clientIp } : undefined
        }
        verdict = when.test(input)
      } catch (err) {
        verdict = err as Error
      }
      if (verdict instanceof Error) {
        request.log.info({ rule: name, reason: verdict.message }, 'authz condition could not be evaluated; denied')
        deny(request, mode, plugin, new ConditionError(), name)
      } else if (!verdict) deny(request, mode, plugin, new ConditionFailed(), name)
    }
    if (write !== null) {
      const unwritable = write.policyFor(grantsOf(request)).unwritable(request.body)
      if (unwritable.length > 0) deny(request, mode, plugin, withViolations(new PropertyNotWritable(), unwritable), name)
    }
    recordPrepared(request, allowed)
  }
  const { resource: load, owner } = checks
  // Loading the resource and asking who owns it may take a while; the rest never waits.
  const wait = load === null && owner === null
    ? null
    : async (request: FastifyRequest, principal: Principal): Promise<void> => {
      const resource = load === null ? null : (await load(request)) ?? null
      if (owner !== null && !(await owner.owns(request, principal, resource))) {
        deny(request, mode, plugin, owner.status === 404 ? new NotOwnedHidden() : new NotOwner(), name)
      }
      decide(request, principal, resource)
    }
  // Calls back when nothing needs waiting for (no promise to settle), returns a promise otherwise.
  return function authzConditions (request, _reply, done) {
    const principal = request.principal
    // Without a principal the requirements stage has denied already (or recorded it in report mode).
    if (principal === null || principal.type === 'anonymous') return done()
    if (wait !== null) return wait(request, principal)
    try {
      decide(request, principal, null)
    } catch (err) {
      return done(err as Error)
    }
    done()
  }
}

const lists = new WeakMap<Grants, { roles: string[], scopes: string[], permissions: string[] }>()
function listsOf (grants: Grants): { roles: string[], scopes: string[], permissions: string[] } {
  let found = lists.get(grants)
  if (found === undefined) lists.set(grants, found = { roles: [...grants.roles], scopes: [...grants.scopes], permissions: [...grants.permissions] })
  return found
}

/** The most a response body may be when it has to be read in full to filter it. */
export const MAX_FILTERED_RESPONSE = 4 * 1024 * 1024

/**
 * Step 11: read rules and masks on 2xx responses. Objects are filtered before serialization;
 * JSON that arrives as text or a stream (a proxied response) is parsed, filtered and written
 * again. A response that cannot be filtered is not sent: the client gets a 500.
 */
export function responseHooks (properties: CompiledProperties, { plugin, mode, name, grantsOf }: HookContext): { preSerialization: preSerializationHookHandler<unknown>, onSend: onSendHookHandler<unknown> } {
  const filtered = new WeakSet<FastifyRequest>()
  const filter = (request: FastifyRequest, body: unknown): unknown => {
    const result = properties.policyFor(grantsOf(request)).filter(body)
    if (mode === 'enforce') return result
    if (JSON.stringify(result) !== JSON.stringify(body)) recordDecision(request, { plugin, outcome: 'would-deny', reason: 'PORTCULLIS_AUTHZ_PROPERTY_HIDDEN', rule: name })
    return body
  }
  return {
    preSerialization (request, reply, payload, done) {
      if (!isSuccess(reply) || typeof payload !== 'object' || payload === null) return done(null, payload)
      filtered.add(request)
      done(null, filter(request, payload))
    },
    onSend (request, reply, payload, done) {
      if (!isSuccess(reply) || filtered.has(request) || payload === null || payload === undefined || payload === '') return done(null, payload)
      readJson(payload, reply).then((body) => {
        const text = JSON.stringify(filter(request, body))
        // The representation changed: the upstream's length and validators describe another one.
        reply.removeHeader('content-length')
        reply.removeHeader('etag')
        done(null, text)
      }, (err: Error) => {
        request.log.warn({ rule: name, reason: err.message }, 'response could not be filtered by the read rules; not sent')
        done(new ResponseUnfilterable())
      })
    }
  }
}

function isSuccess (reply: FastifyReply): boolean {
  return reply.statusCode >= 200 && reply.statusCode < 300
}

async function readJson (payload: unknown, reply: FastifyReply): Promise<unknown> {
  const type = String(reply.getHeader('content-type'))
  if (!isJsonMediaType(type)) throw new Error(`content type "${type}" is not JSON`)
  const encoding = reply.getHeader('content-encoding')
  if (encoding !== undefined && String(encoding).toLowerCase() !== 'identity') throw new Error(`content encoding "${String(encoding)}" cannot be filtered`)
  const read = await readPayload(payload as Readable, MAX_FILTERED_RESPONSE)
  if (read.text === null) {
    read.payload.destroy()
    throw new Error(`response body larger than ${MAX_FILTERED_RESPONSE} bytes`)
  }
  return JSON.parse(read.text)
}

/** Checks the condition keys a rule may carry next to its requirement. */
export function checkRuleKeys (rule: object, requirementKeys: readonly string[], path: string): void {
  checkKnownKeys(rule, [...requirementKeys, ...CONDITION_KEYS], path)
}
