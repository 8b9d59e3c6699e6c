import { execFile } from 'node:child_process'
import { access } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import type { FastifyInstance } from 'fastify'
import { buildGateway, installShutdown, type GatewayConfig } from '@portcullis/gateway'
import { buildInventoryApi } from './inventory.js'

export const DEFAULT_CERTS = fileURLToPath(new URL('../certs', import.meta.url))
const CERTS_SCRIPT = fileURLToPath(new URL('../certs.sh', import.meta.url))

export interface MtlsExampleOptions {
  port?: number
  /** Where the demo certificates are, made by `certs.sh` when missing. */
  certs?: string
  logger?: boolean
}

export interface MtlsExample {
  gateway: FastifyInstance
  /** Such as `https://localhost:8443`. */
  url: string
  /** The inventory API's own address, which answers the gateway's certificate only. */
  inventoryUrl: string
  close: () => Promise<void>
}

/** Roles by certificate identity: orders may read the inventory, reports may not. */
export const ROLES = {
  'spiffe://demo.example/ns/shop/sa/orders': ['inventory-reader']
}

/** The gateway's configuration: what `gateway.yaml` would hold, with the upstream's address filled in. */
export function gatewayConfig (certs: string, upstream: string, port: number): GatewayConfig {
  const file = (name: string): string => join(certs, name)
  return {
    server: { host: '127.0.0.1', port, tls: { key: file('server.key'), cert: file('server.crt'), clientCa: file('ca.crt') } },
    // Every route asks for a certificate; the CA's CRL is read again whenever it changes.
    mtls: { crl: [file('ca.crl')], watchCrl: true, principal: { from: ['uri'], roles: ROLES } },
    authz: {},
    upstreams: [{
      prefix: '/api',
      url: upstream,
      // The gateway's own certificate, for the inventory API that accepts no one else.
      tls: { ca: file('ca.crt'), cert: file('gateway.crt'), key: file('gateway.key') },
      routes: [
        { method: 'GET', path: '/inventory', authz: { anyRole: ['inventory-reader'] } },
        // Any caller with a valid certificate: mtls still asks for one, authz asks for nothing more.
        { method: 'GET', path: '/inventory/whoami', authz: false }
      ]
    }]
  }
}

/** Makes the demo certificates unless they are there, then starts the inventory API and the gateway. */
export async function startMtlsExample ({ port = 8443, certs = DEFAULT_CERTS, logger = false }: MtlsExampleOptions = {}): Promise<MtlsExample> {
  await access(join(certs, 'ca.crt')).catch(async () => await promisify(execFile)('bash', [CERTS_SCRIPT, certs]))
  const inventory = await buildInventoryApi(certs)
  const upstream = await inventory.listen({ host: '127.0.0.1', port: 0 })
  try {
    // The demo server certificate names localhost: the gateway reaches the inventory API by it.
    const gateway = await buildGateway(gatewayConfig(certs, upstream.replace('127.0.0.1', 'localhost'), port), { logger })
    const address = await gateway.listen({ host: '127.0.0.1', port })
    return {
      gateway,
      url: address.replace('127.0.0.1', 'localhost'),
      inventoryUrl: upstream.replace('127.0.0.1', 'localhost'),
      close: async () => {
        await gateway.close()
        await inventory.close()
      }
    }
  } catch (err) {
    await inventory.close()
    throw err
  }
}

/** PORT (default 8443) and CERTS (default `examples/mtls/certs`) from the environment. */
export function optionsFromEnv (env: NodeJS.ProcessEnv): MtlsExampleOptions {
  const { PORT: text = '8443', CERTS: certs = DEFAULT_CERTS } = env
  const port = Number(text)
  if (!/^\d+$/.test(text) || port > 65535) throw new Error(`PORT must be an integer from 0 to 65535 (got "${text}")`)
  return { port, certs }
}

async function run (): Promise<void> {
  const options = optionsFromEnv(process.env)
  const example = await startMtlsExample({ ...options, logger: true })
  const c = options.certs as string
  process.stdout.write(`Portcullis mTLS gateway listening on ${example.url}
  try: curl --cacert ${c}/ca.crt --cert ${c}/orders.crt --key ${c}/orders.key ${example.url}/api/inventory
       curl --cacert ${c}/ca.crt ${example.url}/api/inventory          (401: no client certificate)
  the requests that fail, and why: examples/mtls/README.md
`)
  installShutdown(example, process)
}

if (import.meta.url === pathToFileURL(String(process.argv[1])).href) {
  run().catch((err: unknown) => {
    process.stderr.write(`mtls example: ${(err as Error).message}\n`)
    process.exitCode = 1
  })
}
