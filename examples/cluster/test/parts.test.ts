import { test } from 'tap'
import { once } from 'node:events'
import { readFile, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { optionsFromEnv, run, type InstanceHost } from '../src/instance.js'
import { DEFAULT_POLICY_FILE, optionsFromEnv as clusterOptionsFromEnv, run as runCluster, startCluster } from '../src/start.js'
import { deleteKeys, REDIS_URL, uniquePrefix } from './helpers.js'

interface FakeHost {
  stdout: string
  stderr: string
  sent: unknown[]
  exit: Promise<number>
  /** Runs the handler the instance installed for a signal or event. */
  signal: (name: string) => void
  process: InstanceHost
}

// A stand-in for `process`: what the instance writes and sends, its exit code, and its handlers.
function fakeHost (channel = false): FakeHost {
  const handlers = new Map<string, () => void>()
  let exited: (code: number) => void = () => {}
  const host: FakeHost = {
    stdout: '',
    stderr: '',
    sent: [],
    exit: new Promise<number>((resolve) => { exited = resolve }),
    signal: (name) => { handlers.get(name)?.() },
    process: {
      stdout: { write: (text: string) => { host.stdout += text } },
      stderr: { write: (text: string) => { host.stderr += text } },
      exitCode: undefined,
      on: (signal, listener) => { handlers.set(signal, listener) },
      once: (event, listener) => { handlers.set(event, listener) },
      exit: (code) => { exited(code) },
      kill: (_pid, signal) => { handlers.get(signal)?.() },
      pid: 1,
      ...(channel ? { send: (message: unknown) => host.sent.push(message) > 0 } : {})
    }
  }
  return host
}

// The cluster's policy without its audit section, whose records would go to this test's stdout.
async function quietPolicy (dir: string): Promise<string> {
  const file = join(dir, 'policy.yaml')
  await writeFile(file, (await readFile(DEFAULT_POLICY_FILE, 'utf8')).replace(/\naudit:[\s\S]*$/, '\n'))
  return file
}

test('an instance started by the start script: reports its address on the channel, and stops when the channel closes', async (t) => {
  const prefix = uniquePrefix('instance')
  t.teardown(async () => { await deleteKeys(prefix) })
  const host = fakeHost(true)
  await run({ INSTANCE_ID: 'gw-7', PORT: '0', POLICY_FILE: await quietPolicy(t.testdir()), REDIS_URL, CLUSTER_PREFIX: prefix, ORDERS_URL: 'http://127.0.0.1:9' }, host.process)
  t.equal(host.stderr, '')
  const url = (host.sent[0] as { url: string }).url
  t.match(host.stdout, `gw-7 listening on ${url}, policy version `)
  t.match(host.stdout, '"msg":"policy activated: null → ', 'its log lines, as JSON')
  t.equal((await fetch(`${url}/healthz`)).status, 200)
  host.signal('disconnect')
  t.equal(await host.exit, 0, 'as on SIGTERM')
})

test('an instance that cannot start: one line on stderr and exit code 1', async (t) => {
  const blocker = createServer().listen(0, '127.0.0.1')
  await once(blocker, 'listening')
  t.teardown(() => blocker.close())
  const prefix = uniquePrefix('instance-failed')
  t.teardown(async () => { await deleteKeys(prefix) })
  const env = { INSTANCE_ID: 'gw-8', PORT: String((blocker.address() as { port: number }).port), POLICY_FILE: await quietPolicy(t.testdir()), REDIS_URL, CLUSTER_PREFIX: prefix, ORDERS_URL: 'http://127.0.0.1:9' }
  const busy = fakeHost()
  await run(env, busy.process)
  t.equal(busy.process.exitCode, 1)
  t.match(busy.stderr, /^gw-8: listen EADDRINUSE/)
  const unnamed = fakeHost()
  await run({ PORT: 'x' }, unnamed.process)
  t.equal(unnamed.stderr, 'instance: PORT must be an integer from 0 to 65535 (got "x")\n')
})

test('what the start script hands each instance', async (t) => {
  const env = { INSTANCE_ID: 'gw-1', PORT: '8081', POLICY_FILE: '/p.yaml', REDIS_URL: 'redis://r:6379', CLUSTER_PREFIX: 'c:' }
  t.same(optionsFromEnv(env), { id: 'gw-1', host: '127.0.0.1', port: 8081, policyFile: '/p.yaml', redisUrl: 'redis://r:6379', prefix: 'c:' })
  t.equal(optionsFromEnv({ ...env, HOST: '::1' }).host, '::1')
  t.throws(() => optionsFromEnv({ ...env, PORT: undefined }), /PORT must be an integer from 0 to 65535 \(got ""\)/)
  t.throws(() => optionsFromEnv({ ...env, REDIS_URL: '' }), /REDIS_URL is not set/)
  t.throws(() => optionsFromEnv({ ...env, INSTANCE_ID: undefined }), /INSTANCE_ID is not set/)
})

test('an instance that cannot start fails the start, naming why, and leaves nothing running', async (t) => {
  await t.rejects(startCluster({ ports: [0], upstreamPort: 0, redisUrl: REDIS_URL, prefix: uniquePrefix('failed'), policyFile: '/nonexistent/policy.yaml' }), /^gw-1 did not start: gw-1: .*ENOENT/)
})

test('run as a program: a bad setting is one line on stderr and exit code 1', async (t) => {
  let stderr = ''
  const host = { stdout: { write: () => true }, stderr: { write: (text: string) => { stderr += text } }, exitCode: undefined as number | string | undefined, on: () => {}, exit: () => {} }
  await runCluster({ PORTS: '8081,http' }, host)
  t.equal(host.exitCode, 1)
  t.equal(stderr, 'cluster: PORTS must be an integer from 0 to 65535 (got "http")\n')
})

test('the environment: ports, Redis, the key prefix and the policy', async (t) => {
  const defaults = { host: '127.0.0.1', ports: [8081, 8082, 8083], upstreamPort: 4000, redisUrl: 'redis://127.0.0.1:6379', prefix: 'portcullis-cluster:' }
  t.same(clusterOptionsFromEnv({}), defaults)
  t.same(clusterOptionsFromEnv({ REDIS_URL: '', CLUSTER_PREFIX: '', POLICY_FILE: '' }), defaults)
  t.same(clusterOptionsFromEnv({ HOST: '0.0.0.0', PORTS: '9001, 9002', UPSTREAM_PORT: '9000', REDIS_URL: 'redis://cache:6379/2', CLUSTER_PREFIX: 'shop:', POLICY_FILE: '/etc/gw/policy.yaml' }),
    { host: '0.0.0.0', ports: [9001, 9002], upstreamPort: 9000, redisUrl: 'redis://cache:6379/2', prefix: 'shop:', policyFile: '/etc/gw/policy.yaml' })
  t.throws(() => clusterOptionsFromEnv({ UPSTREAM_PORT: '-1' }), /UPSTREAM_PORT must be an integer/)
})
