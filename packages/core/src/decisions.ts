import type { FastifyRequest } from 'fastify'

/** What a plugin decided. `would-deny` is a denial recorded in report-only mode and not enforced. */
export type Outcome = 'allow' | 'deny' | 'would-deny'

/** One plugin's decision about one request, kept on the request for the audit log and for explain. */
export interface Decision {
  /** The npm name of the plugin that decided, such as `@portcullis/authn`. */
  readonly plugin: string
  readonly outcome: Outcome
  /** A stable reason code: the error code for denials, a short code for allows (`PORTCULLIS_AUTHN_OK`). */
  readonly reason: string
  /** The rule that decided, when there is one (a route pattern, a policy rule id). */
  readonly rule?: string
  /** Version of the policy snapshot the request pinned; `null` when no snapshot is in use. */
  readonly policyVersion: string | null
}

export interface DecisionInput {
  plugin: string
  outcome: Outcome
  reason: string
  rule?: string | undefined
}

/** Records a decision on the request, stamped with the version of the policy snapshot it pinned. */
export function recordDecision (request: FastifyRequest, input: DecisionInput): Decision {
  const { plugin, outcome, reason, rule } = input
  const policyVersion = request.policySnapshot?.version ?? null
  return keep(request, makeDecision(plugin, outcome, reason, rule, policyVersion))
}

function makeDecision (plugin: string, outcome: Outcome, reason: string, rule: string | undefined, policyVersion: string | null): Decision {
  // Two literals rather than a spread: every decision of either kind has one shape, made in one step.
  return Object.freeze(rule === undefined
    ? { plugin, outcome, reason, policyVersion }
    : { plugin, outcome, reason, rule, policyVersion })
}

function keep (request: FastifyRequest, decision: Decision): Decision {
  // Allocated on the first decision only: requests nothing decided about stay cheap.
  if (request.decisions === null) request.decisions = [decision]
  else request.decisions.push(decision)
  return decision
}

/**
 * A decision a plugin makes the same way on many requests, such as the allow of one route's
 * rule: made once at load time, then recorded with {@link recordPrepared}.
 */
export interface PreparedDecision {
  readonly plugin: string
  readonly outcome: Outcome
  readonly reason: string
  readonly rule: string | undefined
  /** The record last made from it, reused while requests pin the same policy version. */
  last: Decision | null
}

export function prepareDecision (input: DecisionInput): PreparedDecision {
  return { plugin: input.plugin, outcome: input.outcome, reason: input.reason, rule: input.rule, last: null }
}

/**
 * Records a prepared decision. Decisions are frozen, so every request that pinned the same
 * policy version shares one record instead of each making its own.
 */
export function recordPrepared (request: FastifyRequest, prepared: PreparedDecision): Decision {
  const policyVersion = request.policySnapshot?.version ?? null
  let decision = prepared.last
  if (decision === null || decision.policyVersion !== policyVersion) {
    decision = prepared.last = makeDecision(prepared.plugin, prepared.outcome, prepared.reason, prepared.rule, policyVersion)
  }
  return keep(request, decision)
}

/** The decisions recorded on a request so far, in the order they were made. */
export function decisionsOf (request: FastifyRequest): readonly Decision[] {
  return request.decisions ?? []
}
