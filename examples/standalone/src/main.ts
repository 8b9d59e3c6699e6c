import { createPublicKey } from 'node:crypto'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { FastifyInstance } from 'fastify'
import { loadOrCreateDevIdentity } from '@portcullis/authn'
import { installShutdown, startPolicyGateway, type PolicyGateway, type ShutdownHost } from '@portcullis/gateway'
import { buildCatalogService } from './catalog.js'
import { DEFAULT_IDENTITY_FILE, IDENTITY_DEFAULTS } from './identities.js'
import { buildOrdersService } from './orders.js'

/** The policy document, watched while the gateway runs. */
export const DEFAULT_POLICY_FILE = fileURLToPath(new URL('../policy.yaml', import.meta.url))

export const DEFAULTS = { host: '127.0.0.1', port: 8080, ordersPort: 4001, catalogPort: 4002 } as const

export interface StandaloneOptions {
  /** Where the gateway listens, in place of the document's `server`. @default 127.0.0.1:8080 */
  host?: string
  port?: number
  /** Where the two upstream services listen, on loopback. @default 4001 and 4002 */
  ordersPort?: number
  catalogPort?: number
  /** The policy document; its relative paths (the contract, the audit log) are read from its directory. */
  policyFile?: string
  /** Where the development identity (the token signing key) is kept. */
  identityFile?: string
  /** Log requests as JSON lines on stdout. */
  logger?: boolean
}

export interface Standalone {
  /** The gateway's address, such as `http://127.0.0.1:8080`. */
  url: string
  /** The upstream services' own addresses. */
  ordersUrl: string
  catalogUrl: string
  gateway: FastifyInstance
  /** The policy's versions: the active one, its history, rollback. */
  policy: PolicyGateway['policy']
  policyFile: string
  identityFile: string
  auditFile: string
  close: () => Promise<void>
}

/**
 * Starts the orders and catalog services, then the gateway in front of them on the policy
 * document, handing it the services' addresses and the token key in `env:` references.
 */
export async function startStandalone (options: StandaloneOptions = {}): Promise<Standalone> {
  const { host = DEFAULTS.host, port = DEFAULTS.port, ordersPort = DEFAULTS.ordersPort, catalogPort = DEFAULTS.catalogPort, policyFile = DEFAULT_POLICY_FILE, identityFile = DEFAULT_IDENTITY_FILE, logger = false } = options
  const identity = await loadOrCreateDevIdentity(identityFile, IDENTITY_DEFAULTS)
  const tokenKey = createPublicKey({ key: identity.key, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString()
  const services = [buildOrdersService(), buildCatalogService()]
  const close = async (gateway?: PolicyGateway): Promise<void> => {
    await gateway?.close()
    await Promise.all(services.map(async (service) => { await service.close() }))
  }
  let gateway: PolicyGateway | undefined
  try {
    const ordersUrl = await (services[0] as FastifyInstance).listen({ host: '127.0.0.1', port: ordersPort })
    const catalogUrl = await (services[1] as FastifyInstance).listen({ host: '127.0.0.1', port: catalogPort })
    gateway = await startPolicyGateway({
      file: policyFile,
      host,
      port,
      env: { ...process.env, ORDERS_URL: ordersUrl, CATALOG_URL: catalogUrl, SHOP_TOKEN_KID: identity.key.kid, SHOP_TOKEN_KEY: tokenKey },
      serverOptions: { logger }
    })
    const url = await gateway.listen()
    const running = gateway
    return {
      url,
      ordersUrl,
      catalogUrl,
      gateway: running.app,
      policy: running.policy,
      policyFile,
      identityFile,
      auditFile: join(dirname(policyFile), '.portcullis', 'audit.log'),
      close: async () => { await close(running) }
    }
  } catch (err) {
    await close(gateway)
    throw err
  }
}

/**
 * HOST and PORT (the gateway, default 127.0.0.1:8080), ORDERS_PORT and CATALOG_PORT (the
 * services, default 4001 and 4002), POLICY_FILE and IDENTITY_FILE from the environment.
 */
export function optionsFromEnv (env: NodeJS.ProcessEnv): StandaloneOptions {
  const port = (name: string, fallback: number): number => {
    const text = env[name] ?? String(fallback)
    if (!/^\d+$/.test(text) || Number(text) > 65535) throw new Error(`${name} must be an integer from 0 to 65535 (got "${text}")`)
    return Number(text)
  }
  const { POLICY_FILE: policyFile, IDENTITY_FILE: identityFile } = env
  return {
    host: env.HOST ?? DEFAULTS.host,
    port: port('PORT', DEFAULTS.port),
    ordersPort: port('ORDERS_PORT', DEFAULTS.ordersPort),
    catalogPort: port('CATALOG_PORT', DEFAULTS.catalogPort),
    ...(policyFile === undefined || policyFile === '' ? {} : { policyFile }),
    ...(identityFile === undefined || identityFile === '' ? {} : { identityFile })
  }
}

/** What a run as a program uses of `process`. */
export interface ProgramHost extends ShutdownHost {
  stdout: { write: (text: string) => unknown }
  stderr: { write: (text: string) => unknown }
  exitCode?: number | string | undefined
}

/** Runs the example as a program: reads the environment, starts, prints what to try, stops on SIGINT or SIGTERM. */
export async function run (env: NodeJS.ProcessEnv, host: ProgramHost): Promise<void> {
  let example: Standalone
  try {
    example = await startStandalone({ ...optionsFromEnv(env), logger: true })
  } catch (err) {
    host.stderr.write(`standalone: ${(err as Error).message}\n`)
    host.exitCode = 1
    return
  }
  const { url } = example
  host.stdout.write(`Portcullis standalone gateway listening on ${url}
  upstreams: orders ${example.ordersUrl} under /api, catalog ${example.catalogUrl} under /catalog
  policy: ${example.policyFile}, version ${String(example.policy.active?.version)} (watched: save a change, no restart)
  try: curl -i ${url}/catalog/items                                   (public)
       curl -i ${url}/api/orders                                      (401: credentials needed)
       curl -i ${url}/api/orders -H 'x-api-key: demo-acme-key-000000000000000001'
       TOKEN=$(pnpm -s portcullis token alice --identity ${example.identityFile})
       curl -i ${url}/api/orders -H "authorization: Bearer $TOKEN"
       curl -i ${url}/catalog/items -H 'x-forwarded-for: 203.0.113.9'   (403: a denied address)
  audit log: ${example.auditFile}
`)
  installShutdown(example, host)
}

if (import.meta.url === pathToFileURL(String(process.argv[1])).href) await run(process.env, process)
