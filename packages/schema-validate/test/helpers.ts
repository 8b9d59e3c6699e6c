import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { decisionsOf, portcullisCore } from '@portcullis/core'
import { portcullisSchemaValidate, type SchemaValidateOptions } from '../src/index.js'

export const ORDERS_30 = fileURLToPath(new URL('./fixtures/orders-3.0.yaml', import.meta.url))
export const ORDERS_31 = fileURLToPath(new URL('./fixtures/orders-3.1.json', import.meta.url))

/**
 * An app with core and the plugin, serving the orders API the fixtures describe: every handler
 * answers with what it was given, so a test can see what reached it.
 */
export async function ordersApp (options: SchemaValidateOptions, server: FastifyServerOptions = {}): Promise<FastifyInstance> {
  const app = Fastify(server)
  await app.register(portcullisCore)
  await app.register(portcullisSchemaValidate, options)
  const echo = async (request: { body?: unknown, query?: unknown, params?: unknown }): Promise<unknown> => ({ body: request.body ?? null, query: request.query, params: request.params })
  app.get('/orders', echo)
  app.post('/orders', async (request, reply) => reply.code(201).send({ id: 1, ...(request.body as object) }))
  app.get('/orders/:orderId', echo)
  app.patch('/orders/:orderId', echo)
  app.addContentTypeParser('application/merge-patch+json', { parseAs: 'string' }, (_request, body, done) => {
    try {
      done(null, JSON.parse(body as string))
    } catch {
      done(Object.assign(new Error('the body is not JSON'), { statusCode: 400 }))
    }
  })
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-decisions', JSON.stringify(decisionsOf(request).map((d) => `${d.plugin.split('/')[1]}:${d.outcome}:${d.reason}`)))
  })
  return app
}

export const json = (body: unknown, headers: Record<string, string> = {}) => ({
  payload: JSON.stringify(body),
  headers: { 'content-type': 'application/json', ...headers }
})
