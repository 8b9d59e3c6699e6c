// Benchmarks each Portcullis scenario against bare Fastify serving the same request.
// Run from the repository root after `pnpm build`: node bench/run.mjs (or simply `pnpm bench`).
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { mkdir, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isDeepStrictEqual } from 'node:util'
import autocannon from 'autocannon'

// The only address ever loaded: the servers are children of this process on loopback.
const HOST = '127.0.0.1'
const SERVER_SCRIPT = fileURLToPath(new URL('./server.mjs', import.meta.url))
const RESULTS_FILE = fileURLToPath(new URL('./results/latest.json', import.meta.url))
const WARMUP_SECONDS = 2
const SERVER_START_TIMEOUT_MS = 15_000
const VERIFY_TIMEOUT_MS = 5_000

// Each target scenario (a name known to server.mjs) is compared with the bare-Fastify baseline
// on exactly the same request.
const SCENARIOS = [
  // The forwarded header comes from a trusted proxy (the loopback client), so core walks the chain.
  { name: 'core', path: '/orders/42', headers: { 'x-forwarded-for': '198.51.100.7' } }
]

const children = new Set()

function readSettings (env) {
  return {
    duration: integerSetting(env, 'BENCH_DURATION', 10, 1, 600),
    rounds: integerSetting(env, 'BENCH_ROUNDS', 2, 1, 20),
    connections: integerSetting(env, 'BENCH_CONNECTIONS', 50, 1, 1000),
    pipelining: 1,
    warmup: WARMUP_SECONDS,
    minRatio: ratioSetting(env, 'BENCH_MIN_RATIO')
  }
}

function integerSetting (env, name, fallback, min, max) {
  const text = env[name]
  if (text === undefined || text === '') return fallback
  const value = Number(text)
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(`${name} must be an integer from ${min} to ${max}, got "${text}"`)
  }
  return value
}

// No threshold unless asked for: absolute speed depends on the machine.
function ratioSetting (env, name) {
  const text = env[name]
  if (text === undefined || text === '') return null
  const value = Number(text)
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number, got "${text}"`)
  return value
}

async function startServer (scenario) {
  const child = fork(SERVER_SCRIPT, [scenario], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  children.add(child)
  child.once('exit', () => children.delete(child))
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server "${scenario}" did not start within ${SERVER_START_TIMEOUT_MS} ms`)), SERVER_START_TIMEOUT_MS)
    child.once('message', (message) => { clearTimeout(timer); resolve(message?.port) })
    child.once('exit', (code, signal) => { clearTimeout(timer); reject(new Error(`server "${scenario}" exited (${signal ?? code}) before listening`)) })
    child.once('error', (err) => { clearTimeout(timer); reject(err) })
  })
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`server "${scenario}" reported an invalid port: ${port}`)
  return { scenario, child, url: `http://${HOST}:${port}` }
}

async function stopServer (server) {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return
  const exited = once(server.child, 'exit')
  server.child.kill()
  await exited
}

async function fetchOnce (server, scenario) {
  const response = await fetch(server.url + scenario.path, { headers: scenario.headers, signal: AbortSignal.timeout(VERIFY_TIMEOUT_MS) })
  const text = await response.text()
  let body
  try { body = JSON.parse(text) } catch { body = text }
  return { status: response.status, body }
}

// A benchmark of a broken server is worthless: both must answer 200 with the same JSON.
async function verifySameResponse (baseline, target, scenario) {
  const expected = await fetchOnce(baseline, scenario)
  const actual = await fetchOnce(target, scenario)
  if (expected.status !== 200 || actual.status !== 200 || !isDeepStrictEqual(expected.body, actual.body)) {
    throw new Error(`${scenario.name}: responses differ for GET ${scenario.path}\n` +
      `  baseline: ${expected.status} ${JSON.stringify(expected.body)}\n` +
      `  target:   ${actual.status} ${JSON.stringify(actual.body)}`)
  }
}

async function load (server, scenario, connections, duration) {
  const result = await autocannon({
    url: server.url + scenario.path,
    headers: scenario.headers,
    connections,
    pipelining: 1,
    duration
  })
  if (result.non2xx > 0 || result.errors > 0 || result.timeouts > 0) {
    throw new Error(`${scenario.name}/${server.scenario}: ${result.non2xx} non-2xx responses, ` +
      `${result.errors} errors, ${result.timeouts} timeouts during the run`)
  }
  return {
    requestsPerSecond: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    // The histogram above keeps whole milliseconds; the mean keeps the fraction.
    meanLatency: result.latency.average,
    requests: result.requests.total
  }
}

// Baseline and target take turns, so drift on the machine weighs on both alike.
async function runScenario (scenario, settings) {
  const [baseline, target] = await Promise.all([startServer('baseline'), startServer(scenario.name)])
  try {
    await verifySameResponse(baseline, target, scenario)
    const runs = { baseline: [], target: [] }
    for (let round = 1; round <= settings.rounds; round++) {
      for (const [role, server] of [['baseline', baseline], ['target', target]]) {
        console.error(`${scenario.name}: round ${round}/${settings.rounds}, ${role} (${settings.warmup} s warm-up, ${settings.duration} s measured)`)
        await load(server, scenario, settings.connections, settings.warmup)
        runs[role].push(await load(server, scenario, settings.connections, settings.duration))
      }
    }
    return summarize(scenario.name, runs)
  } finally {
    await Promise.all([stopServer(baseline), stopServer(target)])
  }
}

function summarize (name, runs) {
  const baseline = medians(runs.baseline)
  const target = medians(runs.target)
  return {
    scenario: name,
    baseline: { ...baseline, runs: runs.baseline },
    target: { ...target, runs: runs.target },
    ratio: {
      requestsPerSecond: target.requestsPerSecond / baseline.requestsPerSecond,
      p99: baseline.p99 > 0 ? target.p99 / baseline.p99 : null
    }
  }
}

function medians (runs) {
  return {
    requestsPerSecond: median(runs.map((run) => run.requestsPerSecond)),
    p50: median(runs.map((run) => run.p50)),
    p99: median(runs.map((run) => run.p99))
  }
}

function median (values) {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

function printTable (results, settings) {
  const rows = [['scenario', 'server', 'req/s', 'p50 ms', 'p99 ms']]
  for (const result of results) {
    rows.push([result.scenario, 'baseline', fixed(result.baseline.requestsPerSecond, 0), fixed(result.baseline.p50, 2), fixed(result.baseline.p99, 2)])
    rows.push([result.scenario, 'target', fixed(result.target.requestsPerSecond, 0), fixed(result.target.p50, 2), fixed(result.target.p99, 2)])
    rows.push([result.scenario, 'ratio', fixed(result.ratio.requestsPerSecond, 3), '', fixed(result.ratio.p99, 3)])
  }
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)))
  console.log(`\n${settings.connections} connections, pipelining ${settings.pipelining}, ` +
    `${settings.duration} s x ${settings.rounds} rounds (medians), node ${process.version}\n`)
  for (const row of rows) {
    console.log(row.map((cell, column) => column < 2 ? cell.padEnd(widths[column]) : cell.padStart(widths[column])).join('  '))
  }
  console.log('\nratio = target / baseline: req/s below 1 is throughput lost to the plugins, p99 above 1 is added tail latency.')
}

function fixed (value, digits) {
  return value === null ? 'n/a' : value.toFixed(digits)
}

async function writeResults (results, settings) {
  const report = {
    date: new Date().toISOString(),
    node: process.version,
    platform: `${os.platform()} ${os.arch()}`,
    cpus: os.cpus().length,
    settings,
    scenarios: results
  }
  await mkdir(dirname(RESULTS_FILE), { recursive: true })
  await writeFile(RESULTS_FILE, JSON.stringify(report, null, 2) + '\n')
  console.log(`results written to ${RESULTS_FILE}`)
}

function killChildren () {
  for (const child of children) child.kill()
}

async function main () {
  const settings = readSettings(process.env)
  const results = []
  for (const scenario of SCENARIOS) results.push(await runScenario(scenario, settings))
  printTable(results, settings)
  await writeResults(results, settings)
  if (settings.minRatio !== null) {
    const slow = results.filter((result) => result.ratio.requestsPerSecond < settings.minRatio)
    for (const result of slow) {
      console.error(`FAIL ${result.scenario}: req/s ratio ${fixed(result.ratio.requestsPerSecond, 3)} is below BENCH_MIN_RATIO=${settings.minRatio}`)
    }
    if (slow.length > 0) process.exitCode = 1
  }
}

// Servers must never outlive the run, whichever way it ends.
process.on('exit', killChildren)
process.on('SIGINT', () => process.exit(130))
process.on('SIGTERM', () => process.exit(143))

main().catch((err) => {
  console.error(`bench failed: ${err.message}`)
  process.exit(1)
})
