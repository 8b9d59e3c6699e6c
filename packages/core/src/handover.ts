import type { FastifyRequest } from 'fastify'

// Symbol.for: the ESM and CommonJS builds of core must read and write the same property.
export const kHandedOver: unique symbol = Symbol.for('portcullis.core.handedOver') as never
type Holder = Record<typeof kHandedOver, boolean>

/**
 * Marks a request as served by another Fastify instance from now on, such as a canary policy
 * version that takes over a request once its principal is known. The instance that handed it
 * over neither answers nor records it: its audit log writes no record for it.
 */
export function handOver (request: FastifyRequest): void {
  (request as unknown as Holder)[kHandedOver] = true
}

/** Whether a request was handed over to another instance (see {@link handOver}). */
export function isHandedOver (request: FastifyRequest): boolean {
  return (request as unknown as Holder)[kHandedOver]
}
