import { fork, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { installShutdown, type ShutdownHost } from '@portcullis/gateway'
import { buildOrdersService } from './orders.js'

export const DEFAULT_POLICY_FILE = fileURLToPath(new URL('../policy.yaml', import.meta.url))
const INSTANCE = fileURLToPath(new URL('./instance.ts', import.meta.url))

export const DEFAULTS = {
  host: '127.0.0.1',
  /** The three instances' ports. */
  ports: [8081, 8082, 8083],
  upstreamPort: 4000,
  redisUrl: 'redis://127.0.0.1:6379',
  prefix: 'portcullis-cluster:'
} as const

export interface ClusterOptions {
  host?: string
  /** One port per instance: as many instances as ports. @default [8081, 8082, 8083] */
  ports?: readonly number[]
  /** Where the orders service listens, on loopback. @default 4000 */
  upstreamPort?: number
  /** The Redis the instances share. @default 'redis://127.0.0.1:6379' */
  redisUrl?: string
  /** Prepended to every Redis key of this cluster. @default 'portcullis-cluster:' */
  prefix?: string
  /** The policy document every instance starts from. */
  policyFile?: string
  /** Where the instances' output goes (their logs and audit records), each line after its instance's name. @default nowhere */
  output?: { write: (text: string) => unknown } | null
}

export interface ClusterInstance {
  /** `gw-1`, `gw-2`, … */
  id: string
  url: string
  /** Its process: `kill <pid>` stops it as Ctrl-C would, in-flight requests first. */
  pid: number
}

export interface Cluster {
  instances: ClusterInstance[]
  upstreamUrl: string
  redisUrl: string
  /** Where the policy version is published: `portcullis policy publish … --prefix <policyPrefix>`. */
  policyPrefix: string
  /** Where the rate-limit counts are kept. */
  rateLimitPrefix: string
  /** Stops every instance and the orders service. */
  close: () => Promise<void>
}

/**
 * Starts the orders service, then one gateway process per port, all on the same Redis and prefix.
 * Each instance is `src/instance.ts` in a process of its own, run as this one is (by tsx under
 * `pnpm start`); it leaves when this process does.
 */
export async function startCluster (options: ClusterOptions = {}): Promise<Cluster> {
  const { host = DEFAULTS.host, ports = DEFAULTS.ports, upstreamPort = DEFAULTS.upstreamPort, redisUrl = DEFAULTS.redisUrl, prefix = DEFAULTS.prefix, policyFile = DEFAULT_POLICY_FILE, output = null } = options
  const upstream = buildOrdersService()
  const upstreamUrl = await upstream.listen({ host: '127.0.0.1', port: upstreamPort })
  const children: ChildProcess[] = []
  const env = { ...process.env, HOST: host, POLICY_FILE: policyFile, REDIS_URL: redisUrl, CLUSTER_PREFIX: prefix, ORDERS_URL: upstreamUrl }
  let closing = false
  const close = async (): Promise<void> => {
    closing = true
    // Closing the channel is what this process's exit does: each instance stops as on SIGTERM.
    await Promise.all(children.filter(isRunning).map(async (child) => {
      const exited = once(child, 'exit')
      child.disconnect()
      await exited
    }))
    await upstream.close()
  }
  try {
    const instances = await Promise.all(ports.map(async (port, i) => {
      const id = `gw-${i + 1}`
      const child = fork(INSTANCE, [], { env: { ...env, INSTANCE_ID: id, PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] })
      children.push(child)
      let errors = ''
      for (const stream of [child.stdout, child.stderr]) {
        createInterface({ input: stream as NodeJS.ReadableStream }).on('line', (line) => {
          if (stream === child.stderr) errors += `${line}\n`
          output?.write(`[${id}] ${line}\n`)
        })
      }
      const [message] = await Promise.race([
        once(child, 'message') as Promise<[{ url: string }]>,
        once(child, 'exit').then(() => { throw new Error(`${id} did not start: ${errors.trim()}`) })
      ])
      // Once it served, an instance that stops is said so; the others go on.
      child.once('exit', (code, signal) => {
        output?.write(`[${id}] stopped (${[`exit code ${String(code)}`, signal].filter(Boolean).join(', ')})${closing ? '' : '; the other instances serve on'}\n`)
      })
      const instance: ClusterInstance = { id, url: message.url, pid: child.pid as number }
      return instance
    }))
    return { instances, upstreamUrl, redisUrl, policyPrefix: `${prefix}policy:`, rateLimitPrefix: `${prefix}rl:`, close }
  } catch (err) {
    await close()
    throw err
  }
}

function isRunning (child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null
}

/**
 * HOST, PORTS (comma-separated, default 8081,8082,8083), UPSTREAM_PORT (default 4000), REDIS_URL
 * (default redis://127.0.0.1:6379), CLUSTER_PREFIX (default portcullis-cluster:) and POLICY_FILE.
 */
export function optionsFromEnv (env: NodeJS.ProcessEnv): ClusterOptions {
  const port = (name: string, text: string): number => {
    if (!/^\d+$/.test(text) || Number(text) > 65535) throw new Error(`${name} must be an integer from 0 to 65535 (got "${text}")`)
    return Number(text)
  }
  const { HOST: host = DEFAULTS.host, PORTS: ports = DEFAULTS.ports.join(','), UPSTREAM_PORT: upstreamPort = String(DEFAULTS.upstreamPort), REDIS_URL: redisUrl, CLUSTER_PREFIX: prefix, POLICY_FILE: policyFile } = env
  return {
    host,
    ports: ports.split(',').map((text) => port('PORTS', text.trim())),
    upstreamPort: port('UPSTREAM_PORT', upstreamPort),
    redisUrl: redisUrl === undefined || redisUrl === '' ? DEFAULTS.redisUrl : redisUrl,
    prefix: prefix === undefined || prefix === '' ? DEFAULTS.prefix : prefix,
    ...(policyFile === undefined || policyFile === '' ? {} : { policyFile })
  }
}

/** What a run as a program uses of `process`. */
export interface ProgramHost extends ShutdownHost {
  stdout: { write: (text: string) => unknown }
  stderr: { write: (text: string) => unknown }
  exitCode?: number | string | undefined
}

/** Runs the cluster as a program: starts it, prints where everything is, stops it on SIGINT or SIGTERM. */
export async function run (env: NodeJS.ProcessEnv, host: ProgramHost): Promise<void> {
  let cluster: Cluster
  let options: ClusterOptions
  try {
    options = optionsFromEnv(env)
    cluster = await startCluster({ ...options, output: host.stdout })
  } catch (err) {
    host.stderr.write(`cluster: ${(err as Error).message}\n`)
    host.exitCode = 1
    return
  }
  const redis = `--redis ${cluster.redisUrl} --prefix ${cluster.policyPrefix}`
  const first = cluster.instances[0] as ClusterInstance
  host.stdout.write(`Portcullis cluster: ${cluster.instances.length} gateways sharing ${cluster.redisUrl}, in front of the orders service on ${cluster.upstreamUrl}
${cluster.instances.map((instance) => `  ${instance.id} (pid ${instance.pid}) listening on ${instance.url}`).join('\n')}
  try: for i in $(seq 4); do for url in ${cluster.instances.map((instance) => instance.url).join(' ')}; do curl -s -o /dev/null -w '%{http_code} ' $url/api/orders -H 'x-api-key: demo-alice-key-cluster-000000001'; done; done; echo
       (alice may send 10 requests a minute in all, whichever gateways they reach)
  publish a new policy to every instance: pnpm -s portcullis policy publish ${String(options.policyFile ?? DEFAULT_POLICY_FILE)} ${redis}
  which version each runs:               pnpm -s portcullis policy status ${redis}
  stop one instance, the others serve:   kill ${first.pid}
`)
  installShutdown(cluster, host)
}

if (import.meta.url === pathToFileURL(String(process.argv[1])).href) await run(process.env, process)
