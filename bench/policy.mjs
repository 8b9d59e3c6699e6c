// Policy updates: how long a large document takes to compile and activate, and what one update a
// second costs the requests served meanwhile, against the same gateway with no update, in one run.
// From the repository root, after `pnpm build`: node bench/policy.mjs (or `pnpm bench:policy`).
import { execFileSync, fork } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import { hashApiKey } from '@portcullis/authn'

const ROUTES = 1000
const API_KEY = 'bench-policy-key-000000000000000000001'
const COMPILE_RUNS = number('BENCH_COMPILE_RUNS', 20, 1, 1000)
const DURATION = number('BENCH_DURATION', 10, 1, 600)
const ROUNDS = number('BENCH_ROUNDS', 3, 0, 20)
const CONNECTIONS = number('BENCH_CONNECTIONS', 50, 1, 1000)
const COMPILE_BUDGET_MS = 200
const MIN_UPDATE_RATIO = 0.9

function number (name, fallback, min, max) {
  const text = process.env[name]
  if (text === undefined || text === '') return fallback
  const value = Number(text)
  if (!Number.isInteger(value) || value < min || value > max) throw new Error(`${name} must be an integer from ${min} to ${max} (got "${text}")`)
  return value
}

/**
 * A policy with `routes` declared routes under one upstream, each with its own authorization
 * rule and limit; `variant` changes one limit, so that each variant is a new version.
 */
export function policyDocument (upstream, routes, variant) {
  const declared = []
  for (let i = 0; i < routes; i++) {
    declared.push({
      method: i % 4 === 0 ? ['GET', 'POST'] : 'GET',
      path: `/resource-${i}/:id`,
      authz: i % 3 === 0 ? { anyRole: ['admin'] } : { anyScope: [`resource-${i}:read`], anyRole: ['user', 'admin'] },
      rateLimit: [{ name: `route-${i}`, limit: 1_000_000 + (i === 0 ? variant : 0), window: '1m' }]
    })
  }
  return {
    version: 1,
    ipRateLimit: { limits: [{ name: 'ip', limit: 100_000_000, window: '1m' }] },
    authn: {
      methods: {
        keys: {
          type: 'api-key',
          keys: [{ id: 'bench', hash: hashApiKey(API_KEY), owner: { id: 'bench', type: 'service', roles: ['admin'], scopes: [] } }]
        }
      }
    },
    rateLimit: { limits: [{ name: 'principal', limit: 100_000_000 + variant, window: '1m' }] },
    authz: { roles: { user: {}, admin: { inherits: ['user'] } } },
    upstreams: [{ prefix: '/api', url: upstream, routes: declared }]
  }
}

// Under load the servers share CPU 1 and the load generator has CPU 0, where Linux and taskset
// allow: the gateway then competes with nothing but its upstream, alike in both kinds of round.
// The compile is timed unpinned, as a gateway runs, its collector's threads free to use any CPU.
const PIN = os.platform() === 'linux' && os.cpus().length >= 2 && (() => {
  try {
    execFileSync('taskset', ['-p', String(process.pid)], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
})()

function pin (pid, cpus) {
  if (PIN) execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' })
}

function startChild (args, cpus) {
  const child = fork(fileURLToPath(new URL('./policy-server.mjs', import.meta.url)), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  if (cpus !== undefined) pin(child.pid, cpus)
  return new Promise((resolve, reject) => {
    child.once('message', (message) => resolve({ child, ...message }))
    child.once('exit', (code) => reject(new Error(`${args[0]} exited with ${code} before it was ready`)))
  })
}

async function ask (child, message) {
  child.send(message)
  const [answer] = await once(child, 'message')
  return answer
}

async function load (url, seconds) {
  const result = await autocannon({ url, connections: CONNECTIONS, duration: seconds, headers: { 'x-api-key': API_KEY } })
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${url}: ${result.non2xx} answers other than 2xx and ${result.errors} errors`)
  return result.requests.average
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]

async function main () {
  const dir = await mkdtemp(join(os.tmpdir(), 'portcullis-bench-policy-'))
  const upstream = await startChild(['upstream'], '1')
  const large = [0, 1].map((variant) => JSON.stringify(policyDocument(upstream.url, ROUTES, variant)))
  const small = [0, 1].map((variant) => JSON.stringify(policyDocument(upstream.url, 20, variant)))
  await writeFile(join(dir, 'large.json'), large[0])
  await writeFile(join(dir, 'small.json'), small[0])
  console.log(`Policy updates on ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? 'unknown'}), Node ${process.version}${PIN ? ' (under load: servers pinned to CPU 1, load to CPU 0)' : ''}`)

  // 1. A 1,000-route document: parse, schema, secrets, lint, compile (every plugin, route and
  // rule built into a ready chain) and activate, timed inside the gateway's process.
  const compiler = await startChild(['gateway', join(dir, 'large.json')])
  const times = []
  for (let i = 1; i <= COMPILE_RUNS; i++) {
    const { ms } = await ask(compiler.child, { apply: large[i % 2] })
    times.push(ms)
  }
  compiler.child.kill()
  const compileMedian = median(times)
  console.log(`\ncompile and activate, ${ROUTES} routes: median ${compileMedian.toFixed(1)} ms, max ${Math.max(...times).toFixed(1)} ms over ${COMPILE_RUNS} updates (budget ${COMPILE_BUDGET_MS} ms)`)

  if (ROUNDS === 0) {
    upstream.child.kill()
    console.log(compileMedian < COMPILE_BUDGET_MS ? 'compile budget met' : 'compile budget NOT met')
    return
  }

  // 2. Requests per second with one update a second, against the same gateway with none, in
  // alternating rounds so that drift affects both alike.
  const gateway = await startChild(['gateway', join(dir, 'small.json')], '1')
  pin(process.pid, '0')
  const url = `${gateway.url}/api/resource-3/7`
  await load(url, 2)
  const steady = []
  const updating = []
  for (let round = 0; round < ROUNDS; round++) {
    steady.push(await load(url, DURATION))
    await ask(gateway.child, { every: 1000, documents: small })
    updating.push(await load(url, DURATION))
    const { updates } = await ask(gateway.child, { every: 0 })
    console.log(`  round ${round + 1}: ${steady.at(-1).toFixed(0)} req/s steady, ${updating.at(-1).toFixed(0)} req/s with ${updates} updates`)
  }
  gateway.child.kill()
  upstream.child.kill()
  const ratio = median(updating) / median(steady)
  console.log(`throughput during one update a second: ${ratio.toFixed(3)}x steady state (median of ${ROUNDS} rounds; at least ${MIN_UPDATE_RATIO} required)`)
  const ok = compileMedian < COMPILE_BUDGET_MS && ratio >= MIN_UPDATE_RATIO
  console.log(ok ? 'policy budgets met' : 'policy budgets NOT met')
  if (process.env.BENCH_CHECK_BUDGETS === '1' && !ok) process.exitCode = 1
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err) => {
    console.error(err)
    process.exit(1)
  })
}
