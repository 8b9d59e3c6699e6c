import type { FastifyRequest } from 'fastify'

/** The upstream a proxied request went to, as the audit log records it. Frozen. */
export interface UpstreamCall {
  /** The upstream's origin, such as `http://10.0.0.7:8080`; never with credentials. */
  readonly address: string
  /** The status the upstream answered with; `null` when it gave no answer (refused, reset, timed out). */
  readonly statusCode: number | null
}

/**
 * Records the upstream a request was proxied to and what it answered, as `request.upstream`.
 * The gateway calls it once the upstream answers or fails; `null` until then, and on requests
 * that were not proxied.
 */
export function recordUpstream (request: FastifyRequest, address: string, statusCode: number | null): void {
  request.upstream = Object.freeze({ address, statusCode })
}
