import type { FastifyRequest } from 'fastify'
import { recordDecision } from './decisions.js'
import type { PortcullisError } from './errors.js'

/** `enforce` rejects what the policy denies; `report` only records that it would have. */
export type Mode = 'enforce' | 'report'

export const MODES: readonly Mode[] = Object.freeze(['enforce', 'report'])

/**
 * Applies a denial in the given mode. In `enforce` mode the denial is recorded and the error is
 * thrown; in `report` mode it is recorded as `would-deny` and the request goes on.
 */
export function deny (request: FastifyRequest, mode: Mode, plugin: string, error: PortcullisError, rule?: string): void {
  if (mode === 'report') {
    recordDecision(request, { plugin, outcome: 'would-deny', reason: error.code, rule })
    return
  }
  recordDecision(request, { plugin, outcome: 'deny', reason: error.code, rule })
  throw error
}

/** Records that a plugin let the request through, and why. */
export function allow (request: FastifyRequest, plugin: string, reason: string, rule?: string): void {
  recordDecision(request, { plugin, outcome: 'allow', reason, rule })
}
