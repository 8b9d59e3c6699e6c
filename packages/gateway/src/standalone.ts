import { randomUUID } from 'node:crypto'
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyServerOptions } from 'fastify'
import httpProxy from '@fastify/http-proxy'
import replyFrom from '@fastify/reply-from'
import { BadGateway, GatewayTimeout } from '@portcullis/core'
import { portcullis } from './plugin.js'
import { validateGatewayConfig, type GatewayConfig, type UpstreamConfig, type UpstreamRoute } from './config.js'
import { compileResourcePath, upstreamResourceLoader } from './resources.js'

/**
 * Builds the standalone gateway: the Portcullis chain, health endpoints and one proxy per
 * upstream. It is not listening yet: call `listen()` on the result.
 *
 * Every response carries `X-Request-Id` (a UUID, also in the logs) unless `core.requestIdHeader`
 * says otherwise. `/healthz` answers 200 while the gateway serves. Once `close()` is called, no connection is
 * accepted, requests in flight finish, and their responses carry `Connection: close` so that
 * keep-alive clients go away and the close completes without waiting for idle timeouts.
 */
export async function buildGateway (config: GatewayConfig, serverOptions: FastifyServerOptions = {}): Promise<FastifyInstance> {
  const { core, authn, ipRules, ipRateLimit, rateLimit, authz, upstreams } = validateGatewayConfig(config)
  // Requests still being routed while closing are served, not answered with Fastify's own 503
  // (which is not problem+json); the onSend hook below ends their connections.
  // Request ids are UUIDs, unique across instances, and are returned as X-Request-Id.
  const app = Fastify({ genReqId: () => randomUUID(), ...serverOptions, return503OnClosing: false })
  let closing = false
  app.addHook('preClose', async () => { closing = true })
  app.addHook('onSend', (_request, reply, _payload, done) => {
    if (closing) reply.header('connection', 'close')
    done()
  })

  await app.register(portcullis, {
    core: { requestIdHeader: 'x-request-id', ...core },
    ...(ipRules === undefined ? {} : { ipRules }),
    ...(ipRateLimit === undefined ? {} : { ipRateLimit }),
    ...(authn === undefined ? {} : { authn }),
    ...(rateLimit === undefined ? {} : { rateLimit }),
    ...(authz === undefined ? {} : { authz })
  })
  // Health checks come from load balancers, which hold no credentials and poll often.
  app.get('/healthz', { config: { authn: false, authz: false, rateLimit: false } }, async () => ({ status: 'ok' }))

  for (const upstream of upstreams) {
    if (upstream.routes.length > 0) await app.register(declaredRoutes, { prefix: upstream.prefix, upstream })
    await app.register(httpProxy, {
      upstream: upstream.url,
      prefix: upstream.prefix,
      rewritePrefix: upstream.rewritePrefix,
      undici: { headersTimeout: upstream.timeout, bodyTimeout: upstream.timeout },
      replyOptions: { onError: upstreamFailed }
    })
  }
  return app
}

/**
 * The routes an upstream declares, each a Fastify route of its own so that rules key on its
 * pattern; the request goes upstream as it arrived, with the prefix rewritten.
 */
async function declaredRoutes (app: FastifyInstance, { upstream }: { upstream: Required<UpstreamConfig> }): Promise<void> {
  await app.register(replyFrom, { base: upstream.url, undici: { headersTimeout: upstream.timeout, bodyTimeout: upstream.timeout } })
  // Bodies other than JSON and text go upstream as streams, as they do through the proxy.
  app.addContentTypeParser('*', (_request, payload, done) => { done(null, payload) })
  for (const route of upstream.routes) {
    app.route({
      method: route.method as string[],
      url: route.path,
      ...(route.authz === undefined ? {} : { config: { authz: ruleOf(route, upstream) } }),
      handler (request, reply) {
        return reply.from(upstream.rewritePrefix + request.url.slice(upstream.prefix.length), { onError: upstreamFailed })
      }
    })
  }
}

// A declared resource becomes the rule's loader, asking the same upstream within the same timeout.
function ruleOf (route: UpstreamRoute, upstream: Required<UpstreamConfig>): UpstreamRoute['authz'] {
  if (route.resource === undefined) return route.authz
  const parts = compileResourcePath(route.resource, route.path, 'resource')
  return { ...route.authz, resource: upstreamResourceLoader(upstream.url, parts, upstream.timeout) } as UpstreamRoute['authz']
}

// The proxy's failures are the upstream's: connect and response timeouts are 504, anything else
// (refused or reset connections, unknown hosts, malformed answers) 502. The cause is logged here;
// the client only sees the generic problem.
function upstreamFailed (reply: { log: FastifyBaseLogger, send: (payload: Error) => unknown }, { error }: { error: Error & { statusCode?: number } }): void {
  reply.log.warn({ err: error }, 'upstream request failed')
  reply.send(error.statusCode === 504 ? new GatewayTimeout() : new BadGateway())
}
