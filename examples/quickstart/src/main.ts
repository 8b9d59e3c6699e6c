import { createPublicKey, generateKeyPairSync } from 'node:crypto'
import { access, mkdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { FastifyInstance } from 'fastify'
import { loadOrCreateDevIdentity, type DevIdentity } from '@portcullis/authn'
import { installShutdown, startPolicyGateway, type PolicyGateway, type RateLimitStoreConfig } from '@portcullis/gateway'
import { DEFAULT_IDENTITY_FILE, IDENTITY_DEFAULTS } from './identities.js'
import { buildOrdersApi } from './orders.js'

export const DEFAULT_HOST = '127.0.0.1'
export const DEFAULT_PORT = 3000

/** The quickstart's policy document, watched while the gateway runs. */
export const DEFAULT_POLICY_FILE = fileURLToPath(new URL('../policy.yaml', import.meta.url))

export interface QuickstartOptions {
  host?: string
  port?: number
  /** Log requests as JSON lines on stdout. */
  logger?: boolean
  /** Where the development identity (the token signing key) is kept. */
  identityFile?: string
  /**
   * The policy document. Its relative paths (the contract, the audit log and its signing key,
   * under `.portcullis/`) are read from its directory.
   * @default examples/quickstart/policy.yaml
   */
  policyFile?: string
  /** How long the policy file must be quiet before a change is read, in ms. @default 200 */
  debounceMs?: number
  /** Count the limits in Redis, shared by every quickstart gateway that uses it; in memory without it. */
  rateLimitStore?: RateLimitStoreConfig
}

export interface Quickstart {
  /** The gateway's listener. */
  gateway: FastifyInstance
  /** The policy's versions: the active one, its history, rollback. */
  policy: PolicyGateway['policy']
  /** The gateway's address, such as `http://127.0.0.1:3000`. */
  url: string
  policyFile: string
  /** The audit log, and the public key that checks its signed checkpoints. */
  auditFile: string
  auditPublicKey: string
  close: () => Promise<void>
}

/**
 * Starts the demo orders API on a free loopback port, and the gateway in front of it, enforcing
 * `policy.yaml` and applying every valid change to it: requests to `/api/*` on the gateway need
 * alice's or bob's API key or token, and go to the orders API with the `/api` prefix removed.
 * `/healthz` is public.
 */
export async function startQuickstart ({ host = DEFAULT_HOST, port = DEFAULT_PORT, logger = false, identityFile = DEFAULT_IDENTITY_FILE, policyFile = DEFAULT_POLICY_FILE, debounceMs, rateLimitStore }: QuickstartOptions = {}): Promise<Quickstart> {
  const identity = await loadOrCreateDevIdentity(identityFile, IDENTITY_DEFAULTS)
  const stateDir = join(dirname(policyFile), '.portcullis')
  const { publicKey } = await auditKeys(stateDir)
  const orders = buildOrdersApi()
  const upstream = await orders.listen({ host: '127.0.0.1', port: 0 })
  let gateway: PolicyGateway | undefined
  try {
    gateway = await startPolicyGateway({
      file: policyFile,
      host,
      port,
      // What the document takes from its environment: where the orders API listens, and the
      // public key of the development identity that signs tokens.
      env: { ...process.env, ORDERS_URL: upstream, QUICKSTART_TOKEN_KEY: tokenPublicKey(identity), QUICKSTART_TOKEN_KID: identity.key.kid },
      ...(debounceMs === undefined ? {} : { debounceMs }),
      ...(rateLimitStore === undefined ? {} : { rateLimitStore }),
      serverOptions: { logger }
    })
    const url = await gateway.listen()
    const running = gateway
    return {
      gateway: running.app,
      policy: running.policy,
      url,
      policyFile,
      auditFile: join(stateDir, 'audit.log'),
      auditPublicKey: publicKey,
      close: async () => {
        await running.close()
        await orders.close()
      }
    }
  } catch (err) {
    await gateway?.close()
    await orders.close()
    throw err
  }
}

/** The development identity's public key, PEM. */
function tokenPublicKey (identity: DevIdentity): string {
  return createPublicKey({ key: identity.key, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString()
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

/**
 * Reads HOST and PORT from the environment, with the defaults 127.0.0.1 and 3000;
 * RATE_LIMIT_REDIS_URL: when set, the limits are counted in that Redis (keys under `quickstart:rl:`);
 * POLICY_FILE: the policy document instead of `policy.yaml` (its audit log goes beside it).
 */
export function optionsFromEnv (env: NodeJS.ProcessEnv): QuickstartOptions {
  const { HOST: host = DEFAULT_HOST, PORT: text = String(DEFAULT_PORT), RATE_LIMIT_REDIS_URL: redis, POLICY_FILE: policyFile } = env
  const port = Number(text)
  if (!/^\d+$/.test(text) || port > 65535) throw new Error(`PORT must be an integer from 0 to 65535 (got "${text}")`)
  return {
    host,
    port,
    ...(redis === undefined || redis === '' ? {} : { rateLimitStore: { redis: { url: redis, prefix: 'quickstart:rl:' } } }),
    ...(policyFile === undefined || policyFile === '' ? {} : { policyFile })
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
  policy: ${quickstart.policyFile}, version ${String(quickstart.policy.active?.version)}
       edit and save it: the change is in force within a second, no restart (a mistake is logged and changes nothing)
       check it first: pnpm -s portcullis policy validate ${quickstart.policyFile}
  limits: 60 requests a minute each for alice and bob, 300 a minute per address (see the RateLimit headers)
  contract: orders.openapi.yaml, enforced on /api (POST /api/orders takes item and qty, nothing else)
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
