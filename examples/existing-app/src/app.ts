import Fastify, { type FastifyInstance } from 'fastify'
import { portcullis } from '@portcullis/gateway'
import { orderBody, orderHandlers } from './orders.js'
import { securityOptions, type SecuritySettings } from './security.js'

export interface AppOptions {
  /** Log requests as JSON lines on stdout. */
  logger?: boolean
  /** Keys, limits and audit sinks: see `securityOptions()`. */
  security: SecuritySettings
}

// Health checks: no credentials, never limited, not recorded.
const PUBLIC = { authn: false, authz: false, rateLimit: false, audit: false } as const

/**
 * The orders service: an ordinary Fastify app with its own routes and handlers. Portcullis is
 * the `register` line and each route's `config`; everything else is as it was before.
 */
export async function buildApp ({ logger = false, security }: AppOptions): Promise<FastifyInstance> {
  const app = Fastify({ logger })
  const orders = orderHandlers()
  await app.register(portcullis, securityOptions(security))

  app.get('/healthz', { config: PUBLIC }, async () => ({ status: 'ok' }))
  app.get('/orders', { config: { authz: { anyScope: ['orders:read'] } } }, orders.list)
  app.get<{ Params: { id: string } }>('/orders/:id', { config: { authz: { anyScope: ['orders:read'] } } }, orders.get)
  app.post<{ Body: { item: string, qty: number } }>('/orders', {
    schema: { body: orderBody },
    config: { authz: { allScopes: ['orders:write'] }, schemaValidate: { body: orderBody } }
  }, orders.create)
  app.delete<{ Params: { id: string } }>('/orders/:id', { config: { authz: { anyRole: ['admin'] } } }, orders.remove)
  return app
}
