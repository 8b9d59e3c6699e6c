// Benchmarks each Portcullis scenario against bare Fastify serving the same request.
// Run from the repository root after `pnpm build`: node bench/run.mjs (or simply `pnpm bench`).
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isDeepStrictEqual } from 'node:util'
import autocannon from 'autocannon'
import {
  COUNT_WARMUP_REQUESTS, COUNTED_REQUESTS, VALGRIND_START_TIMEOUT_MS, WARMUP_SECONDS,
  countInstructions as countServerInstructions, fetchOnce as fetchUrl, fixed, flagSetting, instructionsSetting, integerSetting,
  killChildrenOnExit, median, pin, pinSetting, printRows, serverCpu, signed, signToken, startServer as startBenchServer, stopServer
} from './common.mjs'
import { ORDER_BODY } from './orders.mjs'

const SERVER_SCRIPT = fileURLToPath(new URL('./server.mjs', import.meta.url))
const RESULTS_FILE = fileURLToPath(new URL('./results/latest.json', import.meta.url))
// Must match the spin of the reference-3us server in server.mjs.
const REFERENCE_MICROS = 3

// Each target scenario (a name known to server.mjs, or the one its `server` names) is compared
// with a baseline server (bare Fastify unless `baseline` names another) on exactly the same
// request. prepare() runs just before the scenario and returns the request headers, the settings
// the target server needs (keys), and whether the target must refuse the request without its
// credentials.
const SCENARIOS = [
  // The forwarded header comes from a trusted proxy (the loopback client), so core walks the chain.
  { name: 'core', path: '/orders/42', prepare: () => ({ headers: { 'x-forwarded-for': '198.51.100.7' } }) },
  // One token on every request: what is measured is a token the plugin has already verified.
  { name: 'jwt-es256', path: '/orders/42', prepare: prepareEs256 },
  { name: 'jwt-hs256', path: '/orders/42', prepare: prepareHs256 },
  // Authorization alone: the baseline is the jwt-es256 server, the same chain without authz, so
  // the difference is the cost of a role and a scope check on the matched route.
  { name: 'authz', path: '/orders/42', prepare: prepareEs256, baseline: 'jwt-es256' },
  // The same with one CEL condition on the route, which must refuse /orders/0 (so it is really
  // evaluated). Its budget: role + scope + one CEL condition cost at most 3 µs of server CPU per
  // request over the same route without authz.
  {
    name: 'authz-cel',
    path: '/orders/42',
    prepare: prepareEs256,
    baseline: 'jwt-es256',
    refused: { path: '/orders/0', status: 403 },
    budget: { maxAddedCpu: 3, what: 'role + scope + one CEL condition' }
  },
  // A limit by client IP on the core server, checked in memory, sending no header fields. Its
  // budget: the memory-store check costs at most 3 µs of server CPU per request.
  {
    name: 'rate-limit-memory',
    path: '/orders/42',
    prepare: () => ({ headers: { 'x-forwarded-for': '198.51.100.7' } }),
    baseline: 'core',
    budget: { maxAddedCpu: 3, what: 'memory-store check' }
  },
  // The same check with the IETF RateLimit and RateLimit-Policy fields on every response (the
  // default): what the two fields add to the check.
  {
    name: 'rate-limit-headers',
    path: '/orders/42',
    prepare: () => ({ headers: { 'x-forwarded-for': '198.51.100.7' } }),
    baseline: 'rate-limit-memory',
    addsFields: ['ratelimit', 'ratelimit-policy']
  },
  // The check counted in Redis, against the memory store: at least 0.6 of its throughput.
  {
    name: 'rate-limit-redis',
    path: '/orders/42',
    prepare: () => ({ headers: { 'x-forwarded-for': '198.51.100.7' }, serverOptions: { redisPrefix: `portcullis:bench:${process.pid}:${Date.now()}:` } }),
    baseline: 'rate-limit-memory',
    budget: { minRatio: 0.6, what: 'Redis store throughput, of the memory store\'s' }
  },
  // A typical order (about 300 bytes of JSON) posted to a route of an OpenAPI document, against
  // the same route on the core server without validation. It must refuse an order with qty 0.
  {
    name: 'schema-validate',
    method: 'POST',
    path: '/orders',
    body: ORDER_BODY,
    prepare: () => ({ headers: { 'x-forwarded-for': '198.51.100.7', 'content-type': 'application/json' } }),
    baseline: 'core',
    refused: { method: 'POST', path: '/orders', body: JSON.stringify({ ...JSON.parse(ORDER_BODY), qty: 0 }), status: 400 },
    budget: { maxAddedCpu: 2, what: 'validating a 300-byte order body' }
  },
  // The core server writing one audit record per request (default options: no chain) to a file,
  // against the same route without it. Its budget: writing the record costs at most 5 µs of
  // server CPU per request.
  {
    name: 'audit-log',
    path: '/orders/42',
    prepare: prepareAudit,
    baseline: 'core',
    budget: { maxAddedCpu: 5, what: 'writing the audit record' }
  },
  // The same with the hash chain on: what hashing each record's canonical form adds.
  { name: 'audit-log-chain', path: '/orders/42', prepare: prepareAudit, baseline: 'audit-log' },
  // For comparison: one plain pino line per request, to a file, from an onResponse hook.
  { name: 'pino-line', path: '/orders/42', prepare: prepareAudit, baseline: 'core' },
  // A yardstick: the core server plus a hook that spins for exactly REFERENCE_MICROS µs of CPU on
  // every request. What the run measures for it tells how a known amount of work shows up in this
  // run's numbers, so that the budgets can be read in µs of work (see calibrate()).
  { name: 'reference-3us', path: '/orders/42', prepare: () => ({ headers: { 'x-forwarded-for': '198.51.100.7' } }), baseline: 'core', reference: REFERENCE_MICROS },
  // The jwt-es256 server against itself: whatever it reports is the noise of the measurement on
  // this machine, the smallest difference the other scenarios can show.
  { name: 'noise', server: 'jwt-es256', path: '/orders/42', prepare: prepareEs256, baseline: 'jwt-es256' }
]
const SCENARIO_NAMES = SCENARIOS.map((scenario) => scenario.name)

// Each audit scenario writes into a file of its own in a fresh directory.
function prepareAudit () {
  const dir = mkdtempSync(join(os.tmpdir(), 'portcullis-bench-audit-'))
  return { headers: { 'x-forwarded-for': '198.51.100.7' }, serverOptions: { auditFile: join(dir, 'audit.log') } }
}

function prepareEs256 (settings) {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const token = signScenarioToken(privateKey.export({ type: 'pkcs8', format: 'pem' }), 'ES256', settings)
  return jwtScenario(token, { publicKey: publicKey.export({ type: 'spki', format: 'pem' }) })
}

function prepareHs256 (settings) {
  const secret = randomBytes(32)
  return jwtScenario(signScenarioToken(secret, 'HS256', settings), { secret: secret.toString('base64url') })
}

function jwtScenario (token, serverOptions) {
  return { headers: { authorization: `Bearer ${token}` }, serverOptions, requiresCredentials: true }
}

// The token must outlive the scenario, or the last runs would measure refusals.
function signScenarioToken (key, algorithm, settings) {
  return signToken(key, algorithm, settings.rounds * 2 * (settings.warmup + settings.duration))
}

// The CPU the servers are pinned to, when pinning is on; null otherwise.
let serverCpuSet = null

function readSettings (env) {
  return {
    duration: integerSetting(env, 'BENCH_DURATION', 10, 1, 600),
    rounds: integerSetting(env, 'BENCH_ROUNDS', 2, 1, 20),
    connections: integerSetting(env, 'BENCH_CONNECTIONS', 50, 1, 1000),
    pipelining: 1,
    warmup: WARMUP_SECONDS,
    scenarios: scenarioSetting(env, 'BENCH_SCENARIOS'),
    minRatio: ratioSetting(env, 'BENCH_MIN_RATIO'),
    maxAddedCpu: microsecondsSetting(env, 'BENCH_MAX_ADDED_CPU_US'),
    checkBudgets: flagSetting(env, 'BENCH_CHECK_BUDGETS'),
    pin: pinSetting(env, 'BENCH_PIN'),
    instructions: instructionsSetting(env, 'BENCH_INSTRUCTIONS')
  }
}

function scenarioSetting (env, name) {
  const text = env[name]
  if (text === undefined || text.trim() === '') return SCENARIO_NAMES
  const names = text.split(',').map((part) => part.trim())
  for (const scenario of names) {
    if (!SCENARIO_NAMES.includes(scenario)) {
      throw new Error(`${name}: unknown scenario "${scenario}"; known: ${SCENARIO_NAMES.join(', ')}`)
    }
  }
  if (new Set(names).size !== names.length) throw new Error(`${name} names a scenario twice: "${text}"`)
  return names
}

// No threshold unless asked for: absolute speed depends on the machine.
function ratioSetting (env, name) {
  const text = env[name]
  if (text === undefined || text === '') return null
  const value = Number(text)
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number, got "${text}"`)
  return value
}

function microsecondsSetting (env, name) {
  const text = env[name]
  if (text === undefined || text === '') return null
  const value = Number(text)
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a number of microseconds, 0 or more, got "${text}"`)
  return value
}

// With `counter` (a callgrind output file), the server runs under valgrind's callgrind, which
// counts the instructions it runs once told to (see countInstructions).
async function startServer (scenario, serverOptions = {}, counter = null) {
  return await startBenchServer({ script: SERVER_SCRIPT, name: scenario, options: serverOptions, cpus: counter === null ? serverCpuSet : null, counter })
}

// What a scenario sends: GET of its path, unless it names a method and a body.
function requestOf ({ path, method = 'GET', body }) {
  return { path, method, body, text: `${method} ${path}` }
}

async function fetchOnce (server, request, headers) {
  const { path, method, body } = requestOf(request)
  return await fetchUrl(server.url + path, { method, body, headers })
}

// A benchmark of a broken server is worthless: both must answer 200 with the same JSON.
async function verifySameResponse (baseline, target, scenario, headers) {
  const expected = await fetchOnce(baseline, scenario, headers)
  const actual = await fetchOnce(target, scenario, headers)
  if (expected.status !== 200 || actual.status !== 200 || !isDeepStrictEqual(expected.body, actual.body)) {
    throw new Error(`${scenario.name}: responses differ for ${requestOf(scenario).text}\n` +
      `  baseline: ${expected.status} ${JSON.stringify(expected.body)}\n` +
      `  target:   ${actual.status} ${JSON.stringify(actual.body)}`)
  }
  // A scenario that measures header fields must see the target send them, and the baseline not.
  for (const field of scenario.addsFields ?? []) {
    if (!actual.headers.has(field) || expected.headers.has(field)) {
      throw new Error(`${scenario.name}: the target must send ${field} and the baseline must not ` +
        `(target: ${actual.headers.get(field)}, baseline: ${expected.headers.get(field)})`)
    }
  }
}

// A 200 from a target that lets anyone in would measure nothing: without its credentials the
// request must be refused.
async function verifyRefusedWithout (target, scenario, headers) {
  const { authorization, ...rest } = headers
  const refused = await fetchOnce(target, scenario, rest)
  if (refused.status !== 401) {
    throw new Error(`${scenario.name}: ${requestOf(scenario).text} without credentials answered ` +
      `${refused.status} ${JSON.stringify(refused.body)}, expected 401`)
  }
}

// A target that never evaluates its rule would measure nothing: the request it must refuse is.
async function verifyRefused (target, scenario, headers) {
  const { status } = scenario.refused
  const refused = await fetchOnce(target, scenario.refused, headers)
  if (refused.status !== status) {
    throw new Error(`${scenario.name}: ${requestOf(scenario.refused).text} answered ${refused.status} ${JSON.stringify(refused.body)}, expected ${status}`)
  }
}

async function load (server, scenario, headers, connections, duration) {
  const { path, method, body } = requestOf(scenario)
  const result = await autocannon({
    url: server.url + path,
    method,
    body,
    headers,
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

// One measured run, with the server's CPU time read just before and just after it.
async function measure (server, scenario, headers, settings) {
  const before = await serverCpu(server)
  const run = await load(server, scenario, headers, settings.connections, settings.duration)
  const after = await serverCpu(server)
  if (run.requests === 0) throw new Error(`${scenario.name}/${server.scenario}: no request completed during the run`)
  const userMicros = after.user - before.user
  const systemMicros = after.system - before.system
  return {
    ...run,
    cpuMicros: userMicros + systemMicros,
    userMicros,
    systemMicros,
    cpuPerRequest: (userMicros + systemMicros) / run.requests,
    userCpuPerRequest: userMicros / run.requests
  }
}

// Baseline and target take turns, and which goes first alternates from round to round, so that
// drift on the machine weighs on both alike. Each round starts a fresh pair of servers: two
// processes running the same code differ by a few percent for as long as they live (where the
// JIT and the heap happened to put things), so a single pair would carry that difference into
// every round.
async function runScenario (scenario, settings) {
  const prepared = scenario.prepare(settings)
  const runs = { baseline: [], target: [] }
  // The reference is not counted: under valgrind, time spun is not the work it stands for.
  const counts = settings.instructions && scenario.reference === undefined ? await countScenario(scenario, prepared) : null
  for (let round = 1; round <= settings.rounds; round++) {
    const { baseline, target } = await startPair(scenario, prepared)
    try {
      const turns = [['baseline', baseline], ['target', target]]
      if (round % 2 === 0) turns.reverse()
      for (const [role, server] of turns) {
        console.error(`${scenario.name}: round ${round}/${settings.rounds}, ${role} (${settings.warmup} s warm-up, ${settings.duration} s measured)`)
        await load(server, scenario, prepared.headers, settings.connections, settings.warmup)
        runs[role].push(await measure(server, scenario, prepared.headers, settings))
      }
    } finally {
      await Promise.all([stopServer(baseline), stopServer(target)])
    }
  }
  return summarize(scenario, runs, counts)
}

// Instructions per request, counted by callgrind: unlike time, the count does not depend on what
// else the machine is doing, and the same server counts within about 0.1% from run to run.
async function countScenario (scenario, prepared) {
  const directory = await mkdtemp(join(os.tmpdir(), 'portcullis-bench-'))
  try {
    const counts = {}
    for (const [role, name] of Object.entries(serversOf(scenario))) {
      console.error(`${scenario.name}: counting the ${role}'s instructions under callgrind (${COUNT_WARMUP_REQUESTS} requests, then ${COUNTED_REQUESTS} counted)`)
      counts[role] = await countInstructions(scenario, prepared, name, join(directory, `${role}.out`))
    }
    return counts
  } finally {
    await rm(directory, { recursive: true, force: true })
  }
}

async function countInstructions (scenario, { headers, serverOptions }, name, file) {
  const server = await startServer(name, serverOptions, file)
  // One request at a time, on one kept-alive connection.
  return await countServerInstructions(server, file, async () => {
    const { path, method, body, text } = requestOf(scenario)
    const response = await fetch(server.url + path, { method, body, headers, signal: AbortSignal.timeout(VALGRIND_START_TIMEOUT_MS) })
    await response.arrayBuffer()
    if (response.status !== 200) throw new Error(`${scenario.name}/${name}: ${text} answered ${response.status} under callgrind`)
  })
}

// The server.mjs scenarios a scenario compares.
function serversOf (scenario) {
  return { baseline: scenario.baseline ?? 'baseline', target: scenario.server ?? scenario.name }
}

// Starts the two servers and checks that they answer as they must before anything is measured.
async function startPair (scenario, { headers, serverOptions, requiresCredentials = false }) {
  const servers = serversOf(scenario)
  const [baseline, target] = await Promise.all([startServer(servers.baseline, serverOptions), startServer(servers.target, serverOptions)])
  try {
    await verifySameResponse(baseline, target, scenario, headers)
    if (requiresCredentials) await verifyRefusedWithout(target, scenario, headers)
    if (scenario.refused !== undefined) await verifyRefused(target, scenario, headers)
  } catch (err) {
    await Promise.all([stopServer(baseline), stopServer(target)])
    throw err
  }
  return { baseline, target }
}

function summarize (scenario, runs, counts) {
  const baseline = medians(runs.baseline)
  const target = medians(runs.target)
  const addedCpuPerRequest = target.cpuPerRequest - baseline.cpuPerRequest
  const instructions = counts === null ? null : countedCost(counts, baseline)
  const ratio = {
    requestsPerSecond: target.requestsPerSecond / baseline.requestsPerSecond,
    p99: baseline.p99 > 0 ? target.p99 / baseline.p99 : null
  }
  return {
    scenario: scenario.name,
    baseline: { ...baseline, runs: runs.baseline },
    target: { ...target, runs: runs.target },
    ratio,
    // What the plugins cost the server per request, in CPU microseconds (user + system), and
    // the part of it spent in user space.
    addedCpuPerRequest,
    addedUserCpuPerRequest: target.userCpuPerRequest - baseline.userCpuPerRequest,
    instructions,
    // The scenario's own budget, when it has one, and whether this run met it.
    ...(scenario.reference === undefined ? {} : { referenceMicros: scenario.reference }),
    budget: scenario.budget === undefined ? null : budgetOf(scenario.budget, instructions, addedCpuPerRequest, ratio.requestsPerSecond)
  }
}

// A budget is a most added CPU per request (maxAddedCpu, µs), or a least throughput against the
// baseline (minRatio). A CPU budget is held to each estimate the run makes: the counted one when
// instructions were counted, the calibrated one when the reference ran (added by calibrate()),
// and the raw timed difference only when there is neither. It is met when every one is within it.
function budgetOf (budget, instructions, timed, ratio) {
  if (budget.minRatio !== undefined) return { ...budget, measured: 'throughput', ratio, met: ratio >= budget.minRatio }
  const estimates = instructions === null ? { timed } : { counted: instructions.estimatedAddedCpu }
  return { ...budget, estimates, met: Object.values(estimates).every((value) => value <= budget.maxAddedCpu) }
}

// With the reference in the run, each timed difference is also read against it: the reference's
// timed difference is what REFERENCE_MICROS µs of work cost in this run, load, kernel and all,
// so a target's is worth (its difference / the reference's) x REFERENCE_MICROS µs of work. On a
// machine where the timed differences run above the work done (on the one these numbers come
// from, 3 µs of spinning shows as about 6), this reads them at their worth.
function calibrate (results) {
  const reference = results.find((result) => result.referenceMicros !== undefined)
  if (reference === undefined || !(reference.addedCpuPerRequest > 0)) return
  for (const result of results) {
    const budget = result.budget
    if (budget === null || budget.maxAddedCpu === undefined) continue
    const calibrated = result.addedCpuPerRequest / reference.addedCpuPerRequest * reference.referenceMicros
    // The raw timed difference gives way to the calibrated one.
    const { timed, ...others } = budget.estimates
    budget.estimates = { ...others, calibrated }
    budget.met = Object.values(budget.estimates).every((value) => value <= budget.maxAddedCpu)
  }
}

function describeBudget (budget) {
  if (budget.minRatio !== undefined) return [`${budget.what}: at least ${budget.minRatio}`, fixed(budget.ratio, 3)]
  const shown = Object.entries(budget.estimates).map(([how, value]) => `${signed(value)} µs (${how})`)
  return [`${budget.what}: at most ${budget.maxAddedCpu} µs`, shown.join(', ')]
}

// The target's extra cycles, as a share of the baseline's, times the CPU time the baseline was
// measured to take per request in this run: what the extra work costs at this machine's speed.
function countedCost ({ baseline, target }, measured) {
  const addedShare = (target.estimatedCycles - baseline.estimatedCycles) / baseline.estimatedCycles
  return {
    baseline,
    target,
    addedInstructions: target.instructions - baseline.instructions,
    addedEstimatedCycles: target.estimatedCycles - baseline.estimatedCycles,
    addedShare,
    estimatedAddedCpu: addedShare * measured.cpuPerRequest
  }
}

function medians (runs) {
  return {
    requestsPerSecond: median(runs.map((run) => run.requestsPerSecond)),
    p50: median(runs.map((run) => run.p50)),
    p99: median(runs.map((run) => run.p99)),
    cpuPerRequest: median(runs.map((run) => run.cpuPerRequest)),
    userCpuPerRequest: median(runs.map((run) => run.userCpuPerRequest))
  }
}

function printTable (results, settings) {
  const rows = [['scenario', 'server', 'req/s', 'p50 ms', 'p99 ms', 'CPU µs/req', 'user µs/req']]
  for (const result of results) {
    for (const side of ['baseline', 'target']) {
      const { requestsPerSecond, p50, p99, cpuPerRequest, userCpuPerRequest } = result[side]
      rows.push([result.scenario, side, fixed(requestsPerSecond, 0), fixed(p50, 2), fixed(p99, 2), fixed(cpuPerRequest, 2), fixed(userCpuPerRequest, 2)])
    }
    rows.push([result.scenario, 'ratio', fixed(result.ratio.requestsPerSecond, 3), '', fixed(result.ratio.p99, 3), '', ''])
  }
  console.log(`\n${settings.connections} connections, pipelining ${settings.pipelining}, ` +
    `${settings.duration} s x ${settings.rounds} rounds (medians), node ${process.version}, ` +
    `${settings.pin ? 'servers pinned to CPU 1 and load to CPU 0' : 'not pinned'}\n`)
  printRows(rows)
  console.log('\nratio = target / baseline: req/s below 1 is throughput lost to the plugins, p99 above 1 is added tail latency.')
  console.log('CPU µs/req = server process CPU time (user + system) during the run / responses in the run;')
  console.log('user µs/req = the part spent running JavaScript and Node.js itself, outside the kernel.')

  const limit = settings.maxAddedCpu === null ? '' : `, limit ${settings.maxAddedCpu} µs`
  console.log(`\nadded server CPU per request (target - baseline${limit}):\n`)
  printRows(results.map((result) => [
    result.scenario,
    `${signed(result.addedCpuPerRequest)} µs`,
    `(user ${signed(result.addedUserCpuPerRequest)} µs)`,
    settings.maxAddedCpu === null ? '' : (exceedsCpuLimit(result, settings) ? 'FAIL' : 'ok')
  ]), 1)
  console.log('')

  const counted = results.filter((result) => result.instructions !== null)
  if (counted.length > 0) {
    console.log('counted by callgrind, per request: instructions, and estimated cycles = instructions + 10 x')
    console.log('(mispredicted branches + first-level cache misses) + 100 x last-level cache misses, all simulated.')
    console.log('The added share of the baseline\'s estimated cycles, times the baseline\'s CPU µs/req above,')
    console.log('estimates the added CPU:\n')
    printRows([
      ['scenario', 'baseline instr', 'target instr', 'added instr', 'added est. cycles', 'added share', 'est. added CPU'],
      ...counted.map(({ scenario, instructions: i }) => [
        scenario, fixed(i.baseline.instructions, 0), fixed(i.target.instructions, 0), signed(i.addedInstructions, 0),
        signed(i.addedEstimatedCycles, 0), `${signed(100 * i.addedShare)} %`, `${signed(i.estimatedAddedCpu)} µs`
      ])
    ], 1)
    console.log('')
  }

  const budgeted = results.filter((result) => result.budget !== null)
  if (budgeted.length === 0) return
  console.log('budgets (added server CPU per request: counted, calibrated against the reference, or timed; or req/s ratio):\n')
  printRows(budgeted.map(({ scenario, budget }) => [scenario, ...describeBudget(budget), budget.met ? 'met' : 'exceeded']), 2)
  console.log('')
}

function exceedsCpuLimit (result, settings) {
  return settings.maxAddedCpu !== null && result.addedCpuPerRequest > settings.maxAddedCpu
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

async function main () {
  const settings = readSettings(process.env)
  // The load generator (this process) on CPU 0, the servers on CPU 1: they never compete for a core.
  if (settings.pin) {
    pin(process.pid, '0')
    serverCpuSet = '1'
  }
  const results = []
  for (const name of settings.scenarios) {
    results.push(await runScenario(SCENARIOS.find((scenario) => scenario.name === name), settings))
  }
  calibrate(results)
  printTable(results, settings)
  await writeResults(results, settings)
  if (settings.minRatio !== null) {
    const slow = results.filter((result) => result.ratio.requestsPerSecond < settings.minRatio)
    for (const result of slow) {
      console.error(`FAIL ${result.scenario}: req/s ratio ${fixed(result.ratio.requestsPerSecond, 3)} is below BENCH_MIN_RATIO=${settings.minRatio}`)
    }
    if (slow.length > 0) process.exitCode = 1
  }
  const costly = results.filter((result) => exceedsCpuLimit(result, settings))
  for (const result of costly) {
    console.error(`FAIL ${result.scenario}: added CPU per request ${signed(result.addedCpuPerRequest)} µs ` +
      `is above BENCH_MAX_ADDED_CPU_US=${settings.maxAddedCpu}`)
  }
  if (costly.length > 0) process.exitCode = 1
  // Budgets are always reported; they decide the exit code only when asked to.
  const overBudget = settings.checkBudgets ? results.filter((result) => result.budget?.met === false) : []
  for (const { scenario, budget } of overBudget) {
    const [limit, measured] = describeBudget(budget)
    console.error(`FAIL ${scenario}: ${measured} is outside its budget (${limit})`)
  }
  if (overBudget.length > 0) process.exitCode = 1
}

// Servers must never outlive the run, whichever way it ends.
killChildrenOnExit()

main().catch((err) => {
  console.error(`bench failed: ${err.message}`)
  process.exit(1)
})
