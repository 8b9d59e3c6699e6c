// The whole chain: what authentication, a role check, a limit by principal, body validation and an
// audit record cost together, in process and in the standalone gateway, each against what a user
// would otherwise run, in the same run, on the same requests. Run from the repository root after
// `pnpm build`: node bench/chain.mjs (or `pnpm bench:chain`). See bench/README.md.
import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isDeepStrictEqual } from 'node:util'
import autocannon from 'autocannon'
import { Pool } from 'undici'
import {
  COUNT_WARMUP_REQUESTS, COUNTED_REQUESTS, VALGRIND_START_TIMEOUT_MS, WARMUP_SECONDS,
  countInstructions, fetchOnce, fixed, flagSetting, instructionsSetting, integerSetting, killChildrenOnExit, median, pin, pinSetting,
  printRows, serverCpu, signToken, startServer, stopServer
} from './common.mjs'
import { INVALID_ORDER_BODY, ORDER_BODY } from './orders.mjs'

const SERVER_SCRIPT = fileURLToPath(new URL('./chain-server.mjs', import.meta.url))
const RESULTS_FILE = fileURLToPath(new URL('./results/chain.json', import.meta.url))

// The requests. The proxies serve the upstream's paths under /api.
const GET = { method: 'GET', path: '/orders/42' }
const POST = { method: 'POST', path: '/orders', body: ORDER_BODY }
const INVALID_POST = { method: 'POST', path: '/orders', body: INVALID_ORDER_BODY }
const EXPECTED = { GET: { id: '42', item: 'lamp', quantity: 1 }, POST: { id: '43', item: JSON.parse(ORDER_BODY).item, qty: JSON.parse(ORDER_BODY).qty } }
const UNDER_API = (request) => ({ ...request, path: `/api${request.path}` })
const PAUSE_PROBE_SECONDS = 5

// The targets. Each is a ratio of two servers measured in the same round, with a bound it must
// meet (`min` for throughput, `max` for latency), or none.
const TARGETS = [
  { key: 'chain', what: 'in-process chain / bare Fastify, GET req/s', min: 0.5 },
  { key: 'composed', what: 'composed by hand / bare Fastify, GET req/s', min: null },
  { key: 'gateway', what: 'gateway with the chain / plain @fastify/http-proxy, GET req/s', min: 1.0 },
  { key: 'latency', what: 'in-process chain / bare Fastify, GET p99 at the same offered load (median of each second\'s)', max: 1.5 }
]

function readSettings (env) {
  const share = (name, fallback, { off = false } = {}) => {
    const value = Number(env[name] ?? fallback)
    if ((off && value === 0) || (value >= 0.1 && value <= 0.9)) return value
    throw new Error(`${name} must be a number from 0.1 to 0.9${off ? ', or 0 to leave it out' : ''}, got "${env[name]}"`)
  }
  return {
    duration: integerSetting(env, 'BENCH_DURATION', 5, 1, 600),
    rounds: integerSetting(env, 'BENCH_ROUNDS', 3, 1, 20),
    connections: integerSetting(env, 'BENCH_CONNECTIONS', 50, 1, 1000),
    latencyLoad: share('BENCH_LATENCY_LOAD', '0.3'),
    heavyLoad: share('BENCH_HEAVY_LOAD', '0.6', { off: true }),
    latencyConnections: integerSetting(env, 'BENCH_LATENCY_CONNECTIONS', 10, 1, 1000),
    latencyDuration: integerSetting(env, 'BENCH_LATENCY_DURATION', 10, 2, 600),
    warmup: WARMUP_SECONDS,
    checkBudgets: flagSetting(env, 'BENCH_CHECK_BUDGETS'),
    pin: pinSetting(env, 'BENCH_PIN'),
    instructions: instructionsSetting(env, 'BENCH_INSTRUCTIONS')
  }
}

// Where each process runs, when pinned. The servers measured have CPU 1 to themselves, one loaded
// at a time; the load generator has CPU 0, and the proxies' upstream shares it, so that the
// upstream's work never takes time from the proxy being measured (see bench/README.md).
const CPUS = { load: '0', server: '1', upstream: '0' }

function serverCpus (settings, kind) {
  if (!settings.pin) return null
  return kind === 'upstream' ? CPUS.upstream : CPUS.server
}

async function start (settings, kind, options) {
  return await startServer({ script: SERVER_SCRIPT, name: kind, options, cpus: serverCpus(settings, kind) })
}

// A key pair and a token for the run: every request carries the same token, so the chain answers
// it from its cache of verified tokens, the common case of a client that reuses its token.
function prepare (settings) {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const perRound = 8 * (settings.warmup + settings.duration) + 4 * (settings.warmup + settings.latencyDuration) + 11 * settings.duration
  const token = signToken(privateKey.export({ type: 'pkcs8', format: 'pem' }), 'ES256', settings.rounds * perRound)
  return { publicKey: publicKey.export({ type: 'spki', format: 'pem' }), headers: { authorization: `Bearer ${token}` } }
}

function requestHeaders (headers, request) {
  return request.method === 'POST' ? { ...headers, 'content-type': 'application/json' } : headers
}

// A benchmark of a broken server is worthless: each must answer what bare Fastify answers, and
// the guarded ones must refuse a request without its token and an invalid order.
async function verify (server, request, headers, { guarded, path = (r) => r }) {
  const sent = path(request)
  const answer = await fetchOnce(server.url + sent.path, { method: sent.method, body: sent.body, headers: requestHeaders(headers, sent) })
  if (answer.status !== 200 || !isDeepStrictEqual(answer.body, EXPECTED[request.method])) {
    throw new Error(`${server.scenario}: ${sent.method} ${sent.path} answered ${answer.status} ${JSON.stringify(answer.body)}, expected 200 ${JSON.stringify(EXPECTED[request.method])}`)
  }
  if (!guarded) return
  const anonymous = await fetchOnce(server.url + sent.path, { method: sent.method, body: sent.body, headers: requestHeaders({}, sent) })
  if (anonymous.status !== 401) throw new Error(`${server.scenario}: ${sent.method} ${sent.path} without a token answered ${anonymous.status}, expected 401`)
  if (request.method !== 'POST') return
  const invalid = path(INVALID_POST)
  const refused = await fetchOnce(server.url + invalid.path, { method: 'POST', body: invalid.body, headers: requestHeaders(headers, invalid) })
  if (refused.status !== 400) throw new Error(`${server.scenario}: an order with qty 0 answered ${refused.status}, expected 400`)
}

/** One autocannon run: as many requests as `connections` keep going for `duration` seconds. */
async function load (server, request, headers, { connections, duration }) {
  const result = await autocannon({
    url: server.url + request.path,
    method: request.method,
    body: request.body,
    headers: requestHeaders(headers, request),
    connections,
    pipelining: 1,
    duration
  })
  if (result.non2xx > 0 || result.errors > 0 || result.timeouts > 0) {
    throw new Error(`${server.scenario}: ${result.non2xx} non-2xx responses, ${result.errors} errors, ${result.timeouts} timeouts during the run`)
  }
  if (result.requests.total === 0) throw new Error(`${server.scenario}: no request completed during the run`)
  return { requestsPerSecond: result.requests.total / duration, p50: result.latency.p50, p99: result.latency.p99, requests: result.requests.total }
}

/**
 * A steady load: `rate` requests a second for `duration` seconds, each sent when it is due, evenly
 * spaced, whether or not earlier ones are answered (an open loop, as independent clients send).
 * Each response time counts from when its request was due, so a server that falls behind is
 * charged for the wait (no coordinated omission). Requests go over a pool of `connections`.
 */
async function steady (server, request, headers, { connections, duration, rate }) {
  const pool = new Pool(server.url, { connections, pipelining: 1 })
  const options = { path: request.path, method: request.method, body: request.body, headers: requestHeaders(headers, request) }
  const total = Math.round(rate * duration)
  const times = new Float64Array(total)
  let sent = 0
  let answered = 0
  let failed = 0
  const start = performance.now()
  try {
    await new Promise((resolve) => {
      const send = (i) => {
        const due = start + (i * 1000) / rate
        pool.request(options).then(async (response) => {
          await response.body.dump()
          if (response.statusCode !== 200) failed++
          times[i] = performance.now() - due
        }, () => { failed++ }).finally(() => { if (++answered === total) resolve() })
      }
      // Sends what is due at each turn of the event loop: a few requests at a time, never a second's worth.
      const tick = () => {
        const due = Math.min(total, Math.floor(((performance.now() - start) * rate) / 1000) + 1)
        while (sent < due) send(sent++)
        if (sent < total) setImmediate(tick)
      }
      tick()
    })
  } finally {
    await pool.close()
  }
  if (failed > 0) throw new Error(`${server.scenario}: ${failed} of ${total} requests failed or were not answered 200 at ${rate} req/s`)
  const elapsed = (performance.now() - start) / 1000
  return { requestsPerSecond: total / elapsed, ...percentiles(times, rate), requests: total }
}

/**
 * The median and the 99th percentile of the whole run, and the 99th percentile of each second of
 * it (by when each request was due), of which the median is the latency the target reads: a pause
 * of the machine itself, which stops any process now and then (see `machinePauses`), queues every
 * request due in it and lands in one second rather than in the p99 of the whole run.
 */
function percentiles (times, rate) {
  const seconds = []
  for (let from = 0; from + rate <= times.length; from += rate) seconds.push(quantile(times.subarray(from, from + rate), 0.99))
  return { p50: quantile(times, 0.5), p99: quantile(times, 0.99), p99Second: median(seconds) }
}

function quantile (times, share) {
  const sorted = Float64Array.from(times).sort()
  return sorted[Math.min(sorted.length - 1, Math.floor(share * sorted.length))]
}

/**
 * How the machine pauses a process that does nothing but read the clock, for `seconds`: the gaps
 * between two readings longer than 1 ms. On a shared virtual machine these are the host's doing,
 * and every server measured meets them alike.
 */
function machinePauses (seconds) {
  const gaps = []
  const end = performance.now() + seconds * 1000
  let last = performance.now()
  for (let now = last; now < end; now = performance.now()) {
    if (now - last > 1) gaps.push(now - last)
    last = now
  }
  return { seconds, count: gaps.length, longest: gaps.length === 0 ? 0 : Math.max(...gaps), over10: gaps.filter((gap) => gap > 10).length }
}

// One measured run after a warm-up, with the server's CPU time read around it.
async function measure (server, request, headers, settings, rate = null) {
  const run = rate === null
    ? (options) => load(server, request, headers, { connections: settings.connections, ...options })
    : (options) => steady(server, request, headers, { connections: settings.latencyConnections, rate, ...options })
  const duration = rate === null ? settings.duration : settings.latencyDuration
  await run({ duration: settings.warmup })
  const before = await serverCpu(server)
  const measured = await run({ duration })
  const after = await serverCpu(server)
  const cpuMicros = after.user + after.system - before.user - before.system
  return { ...measured, cpuPerRequest: cpuMicros / measured.requests, cpuShare: cpuMicros / (duration * 1e6) }
}

// Runs `sides` one after the other, in an order that turns from round to round, so that none
// always meets the machine in the same state.
async function inTurns (round, sides, run) {
  const order = sides.map((_, i) => sides[(i + round) % sides.length])
  const results = {}
  for (const side of order) results[side] = await run(side)
  return results
}

async function runRound (round, settings, prepared, runs) {
  const dir = await mkdtemp(join(os.tmpdir(), 'portcullis-bench-chain-'))
  const options = (name) => ({ publicKey: prepared.publicKey, auditFile: join(dir, `${name}.log`) })
  const log = (text) => console.error(`round ${round + 1}/${settings.rounds}: ${text}`)
  try {
    // In process: bare Fastify, the chain, the same composed by hand.
    const inProcess = {}
    try {
      for (const kind of ['bare', 'chain', 'composed']) inProcess[kind] = await start(settings, kind, options(kind))
      for (const request of [GET, POST]) {
        for (const kind of ['bare', 'chain', 'composed']) await verify(inProcess[kind], request, prepared.headers, { guarded: kind !== 'bare' })
      }
      for (const request of [GET, POST]) {
        const measured = await inTurns(round, ['bare', 'chain', 'composed'], async (kind) => {
          log(`${kind}, ${request.method} (${settings.warmup} s warm-up, ${settings.duration} s measured)`)
          return await measure(inProcess[kind], request, prepared.headers, settings)
        })
        for (const [kind, run] of Object.entries(measured)) runs[`${kind} ${request.method}`].push(run)
      }
      // The same offered load for both: a share of what the chain served at most in this round,
      // moderate for the target, heavy (if asked for) to show how each holds up near its limit.
      for (const [runName, share] of [['at rate', settings.latencyLoad], ['at heavy rate', settings.heavyLoad]]) {
        if (share === 0) continue
        const rate = Math.max(1, Math.round(share * runs['chain GET'].at(-1).requestsPerSecond))
        const measured = await inTurns(round, ['bare', 'chain'], async (kind) => {
          log(`${kind}, GET at a steady ${rate} req/s over up to ${settings.latencyConnections} connections (${settings.warmup} s warm-up, ${settings.latencyDuration} s measured)`)
          return await measure(inProcess[kind], GET, prepared.headers, settings, rate)
        })
        for (const [kind, run] of Object.entries(measured)) runs[`${kind} GET ${runName}`].push({ ...run, rate })
      }
    } finally {
      await Promise.all(Object.values(inProcess).map(stopServer))
    }

    // Proxies: plain @fastify/http-proxy and the gateway, in front of the same upstream.
    const proxies = {}
    try {
      proxies.upstream = await start(settings, 'upstream', {})
      for (const kind of ['proxy', 'gateway']) proxies[kind] = await start(settings, kind, { ...options(kind), upstream: proxies.upstream.url })
      for (const request of [GET, POST]) {
        for (const kind of ['proxy', 'gateway']) await verify(proxies[kind], request, prepared.headers, { guarded: kind === 'gateway', path: UNDER_API })
      }
      for (const request of [GET, POST]) {
        const measured = await inTurns(round, ['proxy', 'gateway'], async (kind) => {
          log(`${kind}, ${request.method} (${settings.warmup} s warm-up, ${settings.duration} s measured)`)
          return await measure(proxies[kind], UNDER_API(request), prepared.headers, settings)
        })
        for (const [kind, run] of Object.entries(measured)) runs[`${kind} ${request.method}`].push(run)
      }
    } finally {
      await Promise.all(Object.values(proxies).map(stopServer))
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

// Instructions per GET, counted under callgrind for each server (the proxies' upstream runs
// normally): unlike time, a count does not depend on what else the machine is doing.
async function countAll (settings, prepared) {
  const dir = await mkdtemp(join(os.tmpdir(), 'portcullis-bench-chain-count-'))
  const counts = {}
  let upstream = null
  try {
    upstream = await start(settings, 'upstream', {})
    for (const kind of ['bare', 'chain', 'composed', 'proxy', 'gateway']) {
      console.error(`counting the ${kind} server's instructions under callgrind (${COUNT_WARMUP_REQUESTS} GETs, then ${COUNTED_REQUESTS} counted)`)
      const file = join(dir, `${kind}.out`)
      const server = await startServer({
        script: SERVER_SCRIPT,
        name: kind,
        options: { publicKey: prepared.publicKey, auditFile: join(dir, `${kind}.log`), upstream: upstream.url },
        counter: file
      })
      const path = kind === 'proxy' || kind === 'gateway' ? `/api${GET.path}` : GET.path
      counts[kind] = await countInstructions(server, file, async () => {
        const response = await fetch(server.url + path, { headers: prepared.headers, signal: AbortSignal.timeout(VALGRIND_START_TIMEOUT_MS) })
        await response.arrayBuffer()
        if (response.status !== 200) throw new Error(`${kind}: GET ${path} answered ${response.status} under callgrind`)
      })
    }
  } finally {
    if (upstream !== null) await stopServer(upstream)
    await rm(dir, { recursive: true, force: true })
  }
  return counts
}

function summarize (runs) {
  const sides = {}
  for (const [name, list] of Object.entries(runs)) {
    if (list.length === 0) continue
    sides[name] = {
      requestsPerSecond: median(list.map((run) => run.requestsPerSecond)),
      p50: median(list.map((run) => run.p50)),
      p99: median(list.map((run) => run.p99)),
      p99Second: median(list.map((run) => run.p99Second ?? NaN)),
      cpuPerRequest: median(list.map((run) => run.cpuPerRequest)),
      cpuShare: median(list.map((run) => run.cpuShare)),
      runs: list
    }
  }
  const pair = (target, baseline, field) => ({
    value: sides[target][field] / sides[baseline][field],
    rounds: sides[target].runs.map((run, i) => run[field] / sides[baseline].runs[i][field])
  })
  const ratios = {
    chain: pair('chain GET', 'bare GET', 'requestsPerSecond'),
    composed: pair('composed GET', 'bare GET', 'requestsPerSecond'),
    gateway: pair('gateway GET', 'proxy GET', 'requestsPerSecond'),
    latency: pair('chain GET at rate', 'bare GET at rate', 'p99Second'),
    // Reported beside the targets, without a bound of their own.
    latencyRun: pair('chain GET at rate', 'bare GET at rate', 'p99'),
    ...(sides['chain GET at heavy rate'] === undefined
      ? {}
      : { heavy: pair('chain GET at heavy rate', 'bare GET at heavy rate', 'p99Second'), heavyRun: pair('chain GET at heavy rate', 'bare GET at heavy rate', 'p99') }),
    chainPost: pair('chain POST', 'bare POST', 'requestsPerSecond'),
    composedPost: pair('composed POST', 'bare POST', 'requestsPerSecond'),
    gatewayPost: pair('gateway POST', 'proxy POST', 'requestsPerSecond')
  }
  const verdicts = TARGETS.map((target) => {
    const { value, rounds } = ratios[target.key]
    const met = target.min !== undefined ? (target.min === null ? null : value >= target.min) : value <= target.max
    return { ...target, value, rounds, met }
  })
  return { sides, ratios, verdicts }
}

// A ratio as the report shows it: its value, then each round's own.
function ratioCells ({ value, rounds }) {
  return [fixed(value, 3), roundsText(rounds)]
}

function roundsText (rounds) {
  return rounds.map((r) => fixed(r, 2)).join(' ')
}

function printReport ({ sides, ratios, verdicts }, counts, pauses, settings) {
  console.log(`\n${settings.connections} connections (up to ${settings.latencyConnections} at a steady rate), ${settings.duration} s x ${settings.rounds} rounds (medians), ` +
    `node ${process.version}, ${settings.pin ? `servers on CPU ${CPUS.server}, load generator and upstream on CPU ${CPUS.load}` : 'not pinned'}\n`)
  const rows = [['server', 'request', 'req/s', 'p50 ms', 'p99 ms', 'p99/s ms', 'CPU µs/req', 'CPU busy']]
  for (const [name, side] of Object.entries(sides)) {
    const [kind, ...request] = name.split(' ')
    // Each round's rate is a share of that round's chain throughput: the median is shown.
    const label = name.endsWith(' rate') ? `${request.join(' ')} ~${fixed(median(side.runs.map((run) => run.rate)), 0)}/s` : request.join(' ')
    rows.push([kind, label, fixed(side.requestsPerSecond, 0), fixed(side.p50, 3), fixed(side.p99, 3), Number.isNaN(side.p99Second) ? '' : fixed(side.p99Second, 3), fixed(side.cpuPerRequest, 2), `${fixed(100 * side.cpuShare, 0)} %`])
  }
  printRows(rows)
  console.log('\nCPU busy = server CPU time / run time: a throughput ratio compares servers only where both are near 100 %.')
  console.log('p99/s = the median of the p99 of each second of the steady run (the latency target reads it).')
  console.log(`\nthe machine paused a process that only reads the clock ${pauses.count} times for over 1 ms in ${pauses.seconds} s ` +
    `(${pauses.over10} of them over 10 ms, the longest ${fixed(pauses.longest, 1)} ms): pauses like these set the p99 of a whole run.`)
  console.log('\nalso measured, without a target:\n')
  printRows([
    ['', 'ratio', 'rounds'],
    ['POST req/s, in-process chain / bare Fastify', ...ratioCells(ratios.chainPost)],
    ['POST req/s, composed by hand / bare Fastify', ...ratioCells(ratios.composedPost)],
    ['POST req/s, gateway / plain @fastify/http-proxy', ...ratioCells(ratios.gatewayPost)],
    ['GET p99 of the whole steady run, chain / bare', ...ratioCells(ratios.latencyRun)],
    ...(ratios.heavy === undefined
      ? []
      : [
          [`GET p99/s at the heavy load (${settings.heavyLoad} of the chain's), chain / bare`, ...ratioCells(ratios.heavy)],
          ['GET p99 of the whole heavy run, chain / bare', ...ratioCells(ratios.heavyRun)]
        ])
  ], 1)
  if (counts !== null) {
    console.log('\ncounted by callgrind, instructions per GET (one request at a time):\n')
    const ratio = (a, b) => fixed(counts[a].instructions / counts[b].instructions, 3)
    printRows([
      ['server', 'instructions', 'est. cycles', 'ratio'],
      ['bare', fixed(counts.bare.instructions, 0), fixed(counts.bare.estimatedCycles, 0), ''],
      ['chain', fixed(counts.chain.instructions, 0), fixed(counts.chain.estimatedCycles, 0), `${ratio('chain', 'bare')} of bare`],
      ['composed', fixed(counts.composed.instructions, 0), fixed(counts.composed.estimatedCycles, 0), `${ratio('composed', 'bare')} of bare`],
      ['proxy', fixed(counts.proxy.instructions, 0), fixed(counts.proxy.estimatedCycles, 0), ''],
      ['gateway', fixed(counts.gateway.instructions, 0), fixed(counts.gateway.estimatedCycles, 0), `${ratio('gateway', 'proxy')} of proxy`]
    ], 1)
  }
  console.log('\ntargets (ratio of the medians; each round\'s own ratio after it):\n')
  printRows([['', 'ratio', 'target', 'result', 'rounds'], ...verdicts.map((v) => [
    v.what,
    fixed(v.value, 3),
    v.min !== undefined ? (v.min === null ? 'none' : `>= ${v.min}`) : `<= ${v.max}`,
    v.met === null ? '-' : v.met ? 'PASS' : 'FAIL',
    roundsText(v.rounds)
  ])], 1)
  console.log('')
}

async function main () {
  const settings = readSettings(process.env)
  if (settings.pin) pin(process.pid, CPUS.load)
  const prepared = prepare(settings)
  const pauses = machinePauses(PAUSE_PROBE_SECONDS)
  const counts = settings.instructions ? await countAll(settings, prepared) : null
  const runs = {}
  for (const kind of ['bare', 'chain', 'composed', 'proxy', 'gateway']) for (const method of ['GET', 'POST']) runs[`${kind} ${method}`] = []
  for (const kind of ['bare', 'chain']) for (const rate of ['at rate', 'at heavy rate']) runs[`${kind} GET ${rate}`] = []
  for (let round = 0; round < settings.rounds; round++) await runRound(round, settings, prepared, runs)
  const summary = summarize(runs)
  printReport(summary, counts, pauses, settings)
  await mkdir(join(RESULTS_FILE, '..'), { recursive: true })
  await writeFile(RESULTS_FILE, JSON.stringify({ date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, settings, pauses, counts, ...summary }, null, 2) + '\n')
  console.log(`results written to ${RESULTS_FILE}`)
  const missed = summary.verdicts.filter((verdict) => verdict.met === false)
  if (settings.checkBudgets && missed.length > 0) {
    for (const verdict of missed) console.error(`FAIL ${verdict.what}: ${fixed(verdict.value, 3)}`)
    process.exitCode = 1
  }
}

killChildrenOnExit()

main().catch((err) => {
  console.error(`bench failed: ${err.message}`)
  process.exit(1)
})
