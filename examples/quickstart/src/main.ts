import { pathToFileURL } from 'node:url'
import type { FastifyInstance } from 'fastify'
import { buildGateway, installShutdown } from '@portcullis/gateway'
import { buildOrdersApi } from './orders.js'

export interface Quickstart {
  gateway: FastifyInstance
  /** The gateway's address, such as `http://127.0.0.1:3000`. */
  url: string
  close: () => Promise<void>
}

/**
 * Starts the demo orders API on a free loopback port, and the gateway in front of it: requests
 * to `/api/*` on the gateway go to the orders API with the `/api` prefix removed.
 */
export async function startQuickstart (options: { host?: string, port?: number, logger?: boolean } = {}): Promise<Quickstart> {
  const orders = buildOrdersApi()
  const upstream = await orders.listen({ host: '127.0.0.1', port: 0 })
  const gateway = await buildGateway({
    upstreams: [{ prefix: '/api', url: upstream }]
  }, { logger: options.logger ?? false })
  try {
    const url = await gateway.listen({ host: options.host ?? '127.0.0.1', port: options.port ?? 3000 })
    return {
      gateway,
      url,
      close: async () => {
        await gateway.close()
        await orders.close()
      }
    }
  } catch (err) {
    await orders.close()
    throw err
  }
}

function portFromEnv (value: string | undefined): number {
  if (value === undefined || value === '') return 3000
  const port = Number(value)
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`PORT must be an integer from 0 to 65535 (got "${value}")`)
  return port
}

async function run (): Promise<void> {
  const quickstart = await startQuickstart({ host: process.env.HOST ?? '127.0.0.1', port: portFromEnv(process.env.PORT), logger: true })
  process.stdout.write(`Portcullis quickstart gateway listening on ${quickstart.url}
  try: curl -i ${quickstart.url}/healthz
       curl -i ${quickstart.url}/api/orders
       curl -i ${quickstart.url}/nope
`)
  installShutdown(quickstart, process)
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  run().catch((err: unknown) => {
    process.stderr.write(`quickstart: ${(err as Error).message}\n`)
    process.exitCode = 1
  })
}
