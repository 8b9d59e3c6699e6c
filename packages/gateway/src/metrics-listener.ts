import Fastify, { type FastifyInstance } from 'fastify'
import { portcullisCore } from '@portcullis/core'
import type { RateLimitStore } from '@portcullis/rate-limit'
import type { ObserveConfig } from './config.js'
import { metricsHandler } from './metrics.js'
import { createChainObserver, type ChainObserver } from './observe.js'

/**
 * What a standalone gateway reports, made once for its life: the observer its `observe` section
 * asks for (or `null`), watching the shared rate-limit store, and the metrics listener (or `null`).
 */
export function observeGateway (observe: ObserveConfig | undefined, store: RateLimitStore | undefined): { observer: ChainObserver | null, metrics: ReturnType<typeof metricsListener> } {
  const observer = observerOfConfig(observe)
  if (store !== undefined) observer?.watchStore('shared', store)
  return { observer, metrics: metricsListener(observer, observe) }
}

/** The observer a configuration's `observe` section asks for, or `null` for none. */
function observerOfConfig (observe: ObserveConfig | undefined): ChainObserver | null {
  if (observe === undefined) return null
  const { metrics, tracing = false } = observe
  const { port: _port, host: _host, ...options } = metrics ?? { port: 0 }
  return createChainObserver({ metrics: metrics === undefined ? false : options, tracing })
}

/**
 * The metrics listener: `GET /metrics` in Prometheus's text format, on its own address, never the
 * gateway's (what it counts is for operators, not clients). Not listening until `listen()`.
 */
function metricsListener (observer: ChainObserver | null, observe: ObserveConfig | undefined): { listen: () => Promise<string>, close: () => Promise<void> } | null {
  const metrics = observe?.metrics
  if (observer?.registry == null || metrics === undefined) return null
  const app: FastifyInstance = Fastify()
  app.register(portcullisCore)
  app.register(async (scope) => { scope.get('/metrics', metricsHandler(observer.registry as NonNullable<ChainObserver['registry']>)) })
  return {
    listen: async () => await app.listen({ host: metrics.host as string, port: metrics.port }),
    close: async () => { await app.close() }
  }
}
