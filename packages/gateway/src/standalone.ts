import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import httpProxy from '@fastify/http-proxy'
import { ServiceUnavailable } from '@portcullis/core'
import { portcullis } from './plugin.js'
import { validateGatewayConfig, type GatewayConfig } from './config.js'

/**
 * Builds the standalone gateway: the Portcullis chain, health endpoints and one proxy per
 * upstream. It is not listening yet: call `listen()` on the result.
 *
 * `/healthz` answers 200 while the gateway serves. Once `close()` is called, requests still
 * arriving on open connections get a 503 problem with `Connection: close` (health checks too, so a
 * load balancer stops sending), while requests already in flight finish.
 */
export async function buildGateway (config: GatewayConfig, serverOptions: FastifyServerOptions = {}): Promise<FastifyInstance> {
  const { core, upstreams } = validateGatewayConfig(config)
  // Fastify's own 503-on-close answer is not problem+json: the hook below gives one that is.
  const app = Fastify({ ...serverOptions, return503OnClosing: false })
  let closing = false
  app.addHook('preClose', async () => { closing = true })
  app.addHook('onRequest', (_request, reply, done) => {
    if (!closing) return done()
    reply.header('connection', 'close')
    done(new ServiceUnavailable())
  })

  await app.register(portcullis, { core })
  app.get('/healthz', async () => ({ status: 'ok' }))

  for (const upstream of upstreams) {
    await app.register(httpProxy, {
      upstream: upstream.url,
      prefix: upstream.prefix,
      rewritePrefix: upstream.rewritePrefix,
      undici: { headersTimeout: upstream.timeout, bodyTimeout: upstream.timeout }
    })
  }
  return app
}
