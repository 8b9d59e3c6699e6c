// Type tests, checked by `pnpm typecheck`: each @ts-expect-error must be an error, or the check fails.
import Fastify from 'fastify'
import { buildGateway, portcullis, type GatewayConfig } from '../src/index.js'

const app = Fastify()
app.register(portcullis, { core: { trustedProxies: ['loopback'] } })
// @ts-expect-error parts this version does not have are not options
app.register(portcullis, { auditLog: {} })
app.register(portcullis, { mtls: { required: false, principal: { from: ['uri'] } } })
// @ts-expect-error identities come from uri, dns or cn
app.register(portcullis, { mtls: { principal: { from: ['email'] } } })
app.register(portcullis, { schemaValidate: { openapi: './openapi.yaml', rejectUnknownProperties: 'all' } })
// @ts-expect-error the plugin's own options only
app.register(portcullis, { schemaValidate: { strict: true } })
app.register(portcullis, { ipRateLimit: { limits: [{ name: 'ip', limit: 300, window: '1m' }] }, rateLimit: { plans: { pro: [] } } })
// @ts-expect-error plans need a principal, which the ip stage does not have
app.register(portcullis, { ipRateLimit: { plans: {} } })
// @ts-expect-error authn needs its methods
app.register(portcullis, { authn: {} })

const config: GatewayConfig = { server: { port: 8080 }, upstreams: [{ prefix: '/api', url: 'http://127.0.0.1:4000', timeout: 500 }] }
// @ts-expect-error an upstream needs a url
const missingUrl: GatewayConfig = { upstreams: [{ prefix: '/api' }] }
const gateway: Promise<import('fastify').FastifyInstance> = buildGateway(config)

export { missingUrl, gateway }

// The audit log is a part of the meta-plugin like the others.
app.register(portcullis, { audit: { sinks: [{ type: 'file', path: 'audit.log' }], chain: true } })
// @ts-expect-error audit sinks are of known types
app.register(portcullis, { audit: { sinks: [{ type: 'syslog' }] } })
