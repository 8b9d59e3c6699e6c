import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import { portcullisCore, type Principal } from '@portcullis/core'
import { mtlsServerOptions, portcullisMtls } from '@portcullis/mtls'

/** The gateway's identity, from its client certificate: the only caller the inventory API serves. */
export const GATEWAY_ID = 'spiffe://demo.example/ns/edge/sa/gateway'

/**
 * The demo inventory API, behind the gateway: it listens with mutual TLS and answers only the
 * gateway's certificate, so nothing reaches it around the gateway.
 */
export async function buildInventoryApi (certs: string): Promise<FastifyInstance> {
  const pem = async (name: string): Promise<Buffer> => await readFile(join(certs, name))
  const ca = await pem('ca.crt')
  const app = Fastify({ https: mtlsServerOptions({ key: await pem('server.key'), cert: await pem('server.crt'), ca }) }) as unknown as FastifyInstance
  await app.register(portcullisCore)
  await app.register(portcullisMtls, { ca: ca.toString('latin1'), crl: [join(certs, 'ca.crl')], principal: { from: ['uri'] } })
  // mtls has refused every request without a valid certificate by now: each has a principal.
  app.addHook('onRequest', async (request, reply) => {
    if ((request.principal as Principal).id !== GATEWAY_ID) return await reply.code(403).send({ error: 'only the gateway may call the inventory API' })
  })
  app.get('/inventory', async () => ({ items: [{ sku: 'lamp', stock: 12 }, { sku: 'chair', stock: 4 }] }))
  app.get('/inventory/whoami', async (request) => ({ caller: request.principal?.id }))
  return app
}
