import { generateKeyPairSync } from 'node:crypto'
import { access, mkdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { FastifyInstance } from 'fastify'
import { devJwtMethod, loadOrCreateDevIdentity } from '@portcullis/authn'
import { buildGateway, installShutdown, type RateLimitStoreConfig, type UpstreamRoute } from '@portcullis/gateway'
import { DEFAULT_IDENTITY_FILE, demoKeyRecords, IDENTITY_DEFAULTS } from './identities.js'
import { buildOrdersApi } from './orders.js'

export const DEFAULT_HOST = '127.0.0.1'
export const DEFAULT_PORT = 3000

export interface QuickstartOptions {
  host?: string
  port?: number
  /** Log requests as JSON lines on stdout. */
  logger?: boolean
  /** Where the development identity (the token signing key) is kept. */
  identityFile?: string
  /** Count the limits in Redis, shared by every quickstart gateway that uses it; in memory without it. */
  rateLimitStore?: RateLimitStoreConfig
  /**
   * Where the audit log is written, hash-chained, with checkpoints signed by a key kept beside it.
   * @default audit.log in the development identity's directory
   */
  auditFile?: string
}

export interface Quickstart {
  gateway: FastifyInstance
  /** The gateway's address, such as `http://127.0.0.1:3000`. */
  url: string
  /** The audit log, and the public key that checks its signed checkpoints. */
  auditFile: string
  auditPublicKey: string
  close: () => Promise<void>
}

/**
 * Starts the demo orders API on a free loopback port, and the gateway in front of it: requests
 * to `/api/*` on the gateway need alice's or bob's API key or token, and go to the orders API
 * with the `/api` prefix removed. `/healthz` is public.
 */
export async function startQuickstart ({ host = DEFAULT_HOST, port = DEFAULT_PORT, logger = false, identityFile = DEFAULT_IDENTITY_FILE, rateLimitStore, auditFile = join(dirname(identityFile), 'audit.log') }: QuickstartOptions = {}): Promise<Quickstart> {
  const identity = await loadOrCreateDevIdentity(identityFile, IDENTITY_DEFAULTS)
  const { signingKey, publicKey } = await auditKeys(dirname(auditFile))
  const orders = buildOrdersApi()
  const upstream = await orders.listen({ host: '127.0.0.1', port: 0 })
  const gateway = await buildGateway({
    // Every address: 300 requests a minute, counted before credentials are checked, so that
    // guessing keys is counted too.
    ipRateLimit: { limits: IP_LIMITS },
    authn: {
      realm: 'quickstart',
      methods: {
        keys: { type: 'api-key', keys: demoKeyRecords() },
        tokens: devJwtMethod(identity)
      }
    },
    // alice and bob: 60 requests a minute each (requests without credentials: by address).
    rateLimit: { limits: PRINCIPAL_LIMITS },
    ...(rateLimitStore === undefined ? {} : { rateLimitStore }),
    authz: { realm: 'quickstart', roles: ROLES },
    // The orders API's contract: its operations, and nothing else, with bodies of at most 1 KiB.
    upstreams: [{ prefix: '/api', url: upstream, routes: ORDER_ROUTES, openapi: ORDERS_OPENAPI, validation: ORDERS_VALIDATION }],
    // One record per request and per policy change, chained; a signed checkpoint every 100 records and at shutdown.
    audit: { sinks: [{ type: 'file', path: auditFile }], chain: { signingKey, keyId: 'quickstart', checkpointEvery: 100 } }
  }, { logger })
  try {
    const url = await gateway.listen({ host, port })
    return {
      gateway,
      url,
      auditFile,
      auditPublicKey: publicKey,
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

/**
 * The key pair that signs the audit log's checkpoints, made on first start beside the log and
 * kept (the private key readable by its owner only): its files' paths.
 */
export async function auditKeys (dir: string): Promise<{ signingKey: string, publicKey: string }> {
  const signingKey = join(dir, 'audit-signing-key.pem')
  const publicKey = join(dir, 'audit-public-key.pem')
  const exists = await access(signingKey).then(() => true, () => false)
  if (!exists) {
    const pair = generateKeyPairSync('ed25519')
    await mkdir(dir, { recursive: true })
    await writeFile(signingKey, pair.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
    await writeFile(publicKey, pair.publicKey.export({ type: 'spki', format: 'pem' }))
  }
  return { signingKey, publicKey }
}

/** The coarse limit per client address (IPv6: per /64). */
export const IP_LIMITS = [{ name: 'ip', limit: 300, window: '1m' }]
/** The limit per principal: a burst of up to 60, refilled at one a second. */
export const PRINCIPAL_LIMITS = [{ name: 'user', limit: 60, window: '1m' }]

/** The OpenAPI document of the orders API: `POST /orders` takes `item` (1 to 64 characters) and `qty` (1 to 100), nothing else. */
export const ORDERS_OPENAPI = fileURLToPath(new URL('./orders.openapi.yaml', import.meta.url))
/** Request bodies of at most 1 KiB; responses checked against the document in report mode (the default). */
export const ORDERS_VALIDATION = { bodyLimit: 1024 }

/** bob is an admin, and an admin may do all a user may. */
export const ROLES = { user: {}, admin: { inherits: ['user'] } }

/**
 * Who may do what with orders. Any other path under /api is refused (403): a route the gateway
 * does not know has no rule, and no rule means deny.
 */
export const ORDER_ROUTES: UpstreamRoute[] = [
  { method: 'GET', path: '/orders', authz: { anyScope: ['orders:read'] } },
  {
    method: 'POST',
    path: '/orders',
    // Clients say what they order, never whose order it is (admins inherit the user's rule).
    authz: { allScopes: ['orders:write'], properties: { user: { write: ['item', 'qty'] } } }
  },
  // Only the owner reads an order. The gateway asks the orders API whose it is before it lets
  // the read through; another's order and a missing one are both 403: nothing tells them apart.
  { method: 'GET', path: '/orders/:id', resource: { path: '/orders/:id' }, authz: { anyScope: ['orders:read'], owner: { resource: 'owner' } } },
  { method: 'DELETE', path: '/orders/:id', authz: { anyRole: ['admin'] } }
]

/**
 * Reads HOST and PORT from the environment, with the defaults 127.0.0.1 and 3000;
 * RATE_LIMIT_REDIS_URL: when set, the limits are counted in that Redis (keys under `quickstart:rl:`);
 * AUDIT_FILE: where the audit log goes instead of `.portcullis/audit.log`.
 */
export function optionsFromEnv (env: NodeJS.ProcessEnv): QuickstartOptions {
  const { HOST: host = DEFAULT_HOST, PORT: text = String(DEFAULT_PORT), RATE_LIMIT_REDIS_URL: redis, AUDIT_FILE: auditFile } = env
  const port = Number(text)
  if (!/^\d+$/.test(text) || port > 65535) throw new Error(`PORT must be an integer from 0 to 65535 (got "${text}")`)
  return {
    host,
    port,
    ...(redis === undefined || redis === '' ? {} : { rateLimitStore: { redis: { url: redis, prefix: 'quickstart:rl:' } } }),
    ...(auditFile === undefined || auditFile === '' ? {} : { auditFile })
  }
}

async function run (): Promise<void> {
  const quickstart = await startQuickstart({ ...optionsFromEnv(process.env), logger: true })
  process.stdout.write(`Portcullis quickstart gateway listening on ${quickstart.url}
  try: curl -i ${quickstart.url}/healthz
       curl -i ${quickstart.url}/api/orders                  (401: credentials needed)
       curl -i ${quickstart.url}/api/orders -H 'x-api-key: demo-alice-key-0000000000000001'
       curl -i ${quickstart.url}/api/orders -H "authorization: Bearer $(pnpm -s portcullis token alice)"
       curl -i -X DELETE ${quickstart.url}/api/orders/1 -H 'x-api-key: demo-alice-key-0000000000000001'   (403: admins only)
       curl -i -X DELETE ${quickstart.url}/api/orders/1 -H 'x-api-key: demo-bob-key-0000000000000002'     (204: bob is an admin)
  limits: 60 requests a minute each for alice and bob, 300 a minute per address (see the RateLimit headers)
  contract: src/orders.openapi.yaml, enforced on /api (POST /api/orders takes item and qty, nothing else)
  audit log: ${quickstart.auditFile}
       check it: pnpm -s portcullis audit verify ${quickstart.auditFile} --key ${quickstart.auditPublicKey}
`)
  installShutdown(quickstart, process)
}

if (import.meta.url === pathToFileURL(String(process.argv[1])).href) {
  run().catch((err: unknown) => {
    process.stderr.write(`quickstart: ${(err as Error).message}\n`)
    process.exitCode = 1
  })
}
