import Fastify, { type FastifyInstance } from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { portcullisAuthn, type AuthnOptions, type RouteAuthn } from '../src/index.js'

/** An app with core and authn, and routes that echo the principal. */
export async function build (options: AuthnOptions, routes: Record<string, RouteAuthn | undefined> = { '/me': undefined }): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisAuthn, options)
  for (const [url, authn] of Object.entries(routes)) {
    app.get(url, authn === undefined ? {} : { config: { authn } }, async (request) => ({ principal: request.principal, decisions: request.decisions }))
  }
  return app
}

export function basic (username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`
}
