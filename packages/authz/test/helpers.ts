import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { createPrincipal, portcullisCore, setPrincipal } from '@portcullis/core'
import { portcullisAuthz, type AuthzOptions, type AuthzRule } from '../src/index.js'

/**
 * An app with core and authz. Tests name the principal in an `x-test-principal` header
 * (`id;role,role;scope scope`), set by a hook in the place authn takes.
 */
export async function build (options: AuthzOptions, routes: Record<string, AuthzRule | false | undefined>, server: FastifyServerOptions = {}): Promise<FastifyInstance & { reached: string[] }> {
  const app = Object.assign(Fastify(server), { reached: [] as string[] }) as unknown as FastifyInstance & { reached: string[] }
  await app.register(portcullisCore)
  app.addHook('onRequest', async (request) => {
    const spec = request.headers['x-test-principal']
    if (typeof spec !== 'string') return
    const [id, roles = '', scopes = ''] = spec.split(';')
    const claims = request.headers['x-test-claims']
    setPrincipal(request, createPrincipal({
      id: id as string,
      type: 'user',
      method: 'test',
      roles: roles.split(',').filter(Boolean),
      scopes: scopes.split(' ').filter(Boolean),
      ...(typeof claims === 'string' ? { claims: JSON.parse(claims) } : {})
    }))
  })
  // Bodies that are not JSON reach the hooks as buffers, as uploads do.
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_request, body, done) => { done(null, body) })
  await app.register(portcullisAuthz, options)
  for (const [route, authz] of Object.entries(routes)) {
    const [method, url] = route.split(' ') as [string, string]
    app.route({
      method: method as 'GET',
      url,
      ...(authz === undefined ? {} : { config: { authz } }),
      handler: async (request) => {
        app.reached.push(`${request.method} ${request.url}`)
        return { ok: true, decisions: request.decisions, headers: request.headers, body: request.body ?? null }
      }
    })
  }
  return app
}

export const as = (spec: string, claims?: Record<string, unknown>) => ({ 'x-test-principal': spec, ...(claims === undefined ? {} : { 'x-test-claims': JSON.stringify(claims) }) })
