import { hostname } from 'node:os'
import { pathToFileURL } from 'node:url'
import { installShutdown, startPolicyGateway, type PolicyGateway, type ShutdownHost } from '@portcullis/gateway'

/** One gateway instance of the cluster. */
export interface InstanceOptions {
  /** Its name, in `portcullis policy status` and before each of its output lines. */
  id: string
  host: string
  port: number
  /** The policy document it starts from while Redis holds no published version. */
  policyFile: string
  /** The Redis every instance shares. */
  redisUrl: string
  /** Prepended to every key: `<prefix>rl:` for the counts, `<prefix>policy:` for the policy version. */
  prefix: string
  /** Where the document's `env:` references are read from (the orders service's address). */
  env: NodeJS.ProcessEnv
  /** Where its log lines go, as JSON. */
  log: { write: (line: string) => unknown }
}

/**
 * Starts one instance: the policy file first, then whatever version is published in Redis (and
 * every one published later); rate-limit counts in the same Redis. The file is not watched: in a
 * cluster, a new version reaches every instance through Redis, or none.
 */
export async function startInstance ({ id, host, port, policyFile, redisUrl, prefix, env, log }: InstanceOptions): Promise<PolicyGateway> {
  return await startPolicyGateway({
    file: policyFile,
    watch: false,
    env,
    host,
    port,
    rateLimitStore: { redis: { url: redisUrl, prefix: `${prefix}rl:` } },
    redis: { url: redisUrl, prefix: `${prefix}policy:`, instanceId: `${id}@${hostname()}`, heartbeatMs: 2000 },
    serverOptions: { logger: { stream: log } }
  })
}

/** What the start script hands each instance, in its environment. */
export function optionsFromEnv (env: NodeJS.ProcessEnv): Omit<InstanceOptions, 'env' | 'log'> {
  const { INSTANCE_ID: id, HOST: host = '127.0.0.1', PORT: text = '', POLICY_FILE: policyFile, REDIS_URL: redisUrl, CLUSTER_PREFIX: prefix } = env
  if (!/^\d+$/.test(text) || Number(text) > 65535) throw new Error(`PORT must be an integer from 0 to 65535 (got "${text}")`)
  for (const [name, value] of Object.entries({ INSTANCE_ID: id, POLICY_FILE: policyFile, REDIS_URL: redisUrl, CLUSTER_PREFIX: prefix })) {
    if (value === undefined || value === '') throw new Error(`${name} is not set`)
  }
  return { id: id as string, host, port: Number(text), policyFile: policyFile as string, redisUrl: redisUrl as string, prefix: prefix as string }
}

/** What a run as a program uses of `process`. */
export interface InstanceHost extends ShutdownHost {
  stdout: { write: (text: string) => unknown }
  stderr: { write: (text: string) => unknown }
  exitCode?: number | string | undefined
  /** The channel to the start script, when it started this instance. */
  send?: ((message: unknown) => boolean) | undefined
  disconnect?: (() => void) | undefined
  once: (event: 'disconnect', listener: () => void) => unknown
  kill: (pid: number, signal: 'SIGTERM') => unknown
  pid: number
}

/** Runs one instance as a program, as the start script does for each. */
export async function run (env: NodeJS.ProcessEnv, host: InstanceHost): Promise<void> {
  // The start script is gone (or closes the channel to stop the cluster): stop as on SIGTERM,
  // rather than serve on unsupervised.
  if (host.send !== undefined) host.once('disconnect', () => { host.kill(host.pid, 'SIGTERM') })
  let gateway: PolicyGateway
  let url: string
  try {
    const options = optionsFromEnv(env)
    gateway = await startInstance({ ...options, env, log: host.stdout })
    url = await gateway.listen().catch(async (err: unknown) => {
      await gateway.close()
      throw err
    })
  } catch (err) {
    host.stderr.write(`${env.INSTANCE_ID ?? 'instance'}: ${(err as Error).message}\n`)
    host.exitCode = 1
    // An open channel would keep this process alive.
    host.disconnect?.()
    return
  }
  host.stdout.write(`${String(env.INSTANCE_ID)} listening on ${url}, policy version ${String(gateway.policy.active?.version)}\n`)
  installShutdown(gateway.app, host)
  host.send?.({ url })
}

if (import.meta.url === pathToFileURL(String(process.argv[1])).href) await run(process.env, process)
