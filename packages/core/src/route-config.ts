import type { FastifyRequest } from 'fastify'

type RouteConfig = FastifyRequest['routeOptions']['config']

// Symbol.for: the ESM and CommonJS builds of core must read and write the same property.
export const kRouteConfig: unique symbol = Symbol.for('portcullis.core.routeConfig') as never
type Holder = Record<typeof kRouteConfig, RouteConfig | null | undefined>

/**
 * The config of the route a request matched. Fastify builds `request.routeOptions` afresh on
 * every read, so the first plugin to ask reads it and the others share the answer. A request
 * handed to the not-found handler since is read again, since its route has changed.
 */
export function routeConfigOf (request: FastifyRequest): RouteConfig {
  const holder = request as unknown as Holder
  const kept = holder[kRouteConfig]
  if (kept !== null && kept !== undefined && !request.is404) return kept
  const config = request.routeOptions.config
  holder[kRouteConfig] = config
  return config
}

/**
 * A route option that holds hooks (`onSend`, `preSerialization`, …), which Fastify accepts as one
 * function, a list, or nothing, as a list: so that an `onRoute` hook can add its own to it.
 */
export function hooksOf<T> (hooks: T | T[] | undefined): T[] {
  return ([] as T[]).concat(hooks ?? [])
}
