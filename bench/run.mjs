// Benchmarks each Portcullis scenario against bare Fastify serving the same request.
// Run from the repository root after `pnpm build`: node bench/run.mjs (or simply `pnpm bench`).
import { execFileSync, fork } from 'node:child_process'
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isDeepStrictEqual } from 'node:util'
import autocannon from 'autocannon'
import { createSigner } from 'fast-jwt'

// The only address ever loaded: the servers are children of this process on loopback.
const HOST = '127.0.0.1'
const SERVER_SCRIPT = fileURLToPath(new URL('./server.mjs', import.meta.url))
const RESULTS_FILE = fileURLToPath(new URL('./results/latest.json', import.meta.url))
const WARMUP_SECONDS = 2
const SERVER_START_TIMEOUT_MS = 15_000
const VERIFY_TIMEOUT_MS = 5_000
const CPU_QUERY_TIMEOUT_MS = 5_000
// Must match what server.mjs configures for the JWT scenarios.
const JWT_ISSUER = 'https://idp.bench.local/'
const JWT_AUDIENCE = 'orders-api'
const JWT_LIFETIME_SECONDS = 3600
// Instruction counting (BENCH_INSTRUCTIONS=1): requests sent before counting starts, so that the
// JIT has settled, then requests counted. Under valgrind a server runs some 50 times slower.
const COUNT_WARMUP_REQUESTS = 10_000
const COUNTED_REQUESTS = 4_000
const VALGRIND_START_TIMEOUT_MS = 180_000
// The order the schema-validate scenario posts: what server.mjs's document describes.
const ORDER_BODY = JSON.stringify({
  item: 'standing desk lamp, brushed steel',
  qty: 2,
  customer: { name: 'Alice Martin', email: 'alice.martin@example.com' },
  shipping: { street: '12 rue de la Republique', city: 'Lyon', postalCode: '69002', country: 'FR' },
  notes: 'leave with the concierge if nobody answers',
  tags: ['gift', 'fragile']
})
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
  const token = signToken(privateKey.export({ type: 'pkcs8', format: 'pem' }), 'ES256', settings)
  return jwtScenario(token, { publicKey: publicKey.export({ type: 'spki', format: 'pem' }) })
}

function prepareHs256 (settings) {
  const secret = randomBytes(32)
  return jwtScenario(signToken(secret, 'HS256', settings), { secret: secret.toString('base64url') })
}

function jwtScenario (token, serverOptions) {
  return { headers: { authorization: `Bearer ${token}` }, serverOptions, requiresCredentials: true }
}

// The token must outlive the scenario, or the last runs would measure refusals.
function signToken (key, algorithm, settings) {
  const planned = settings.rounds * 2 * (settings.warmup + settings.duration)
  const lifetime = Math.max(JWT_LIFETIME_SECONDS, planned + 600)
  const sign = createSigner({ key, algorithm, kid: 'k1' })
  return sign({
    iss: JWT_ISSUER,
    aud: JWT_AUDIENCE,
    sub: 'alice',
    scope: 'orders:read',
    roles: ['user'],
    exp: Math.floor(Date.now() / 1000) + lifetime
  })
}

const children = new Set()
// The CPU the servers are pinned to, when pinning is on; null otherwise.
let serverCpuSet = null

// Pins a process, all its threads included, to the given CPUs (a taskset list such as "1").
function pin (pid, cpus) {
  execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' })
}

function canPin () {
  if (os.platform() !== 'linux' || os.cpus().length < 2) return false
  try {
    execFileSync('taskset', ['-p', String(process.pid)], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

// auto (the default) pins where it can: Linux, two CPUs or more, and taskset installed.
function pinSetting (env, name) {
  const text = env[name] ?? 'auto'
  if (text === '0') return false
  if (text === '1') {
    if (!canPin()) throw new Error(`${name}=1 needs Linux, two CPUs or more and taskset (util-linux)`)
    return true
  }
  if (text === 'auto' || text === '') return canPin()
  throw new Error(`${name} must be auto, 1 or 0, got "${text}"`)
}

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

function instructionsSetting (env, name) {
  if (!flagSetting(env, name)) return false
  try {
    execFileSync('valgrind', ['--version'], { stdio: 'ignore' })
    execFileSync('callgrind_control', ['--version'], { stdio: 'ignore' })
  } catch {
    throw new Error(`${name}=1 needs valgrind (with callgrind_control) on the PATH`)
  }
  return true
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

function flagSetting (env, name) {
  const text = env[name]
  if (text === undefined || text === '' || text === '0') return false
  if (text === '1') return true
  throw new Error(`${name} must be 1 or 0, got "${text}"`)
}

function microsecondsSetting (env, name) {
  const text = env[name]
  if (text === undefined || text === '') return null
  const value = Number(text)
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a number of microseconds, 0 or more, got "${text}"`)
  return value
}

// The caches callgrind simulates: this machine's, as Linux describes them. callgrind reads them
// from CPUID itself, which some virtual machines answer wrongly (one here reports a 256 MiB
// direct-mapped last level for a 32 MiB 16-way one). Where Linux says nothing, callgrind decides.
const CACHE_DIRECTORY = '/sys/devices/system/cpu/cpu0/cache'
let cacheOptions = null
function simulatedCaches () {
  if (cacheOptions !== null) return cacheOptions
  cacheOptions = []
  let entries
  try {
    entries = readdirSync(CACHE_DIRECTORY).filter((name) => /^index\d+$/.test(name))
  } catch {
    return cacheOptions
  }
  const read = (index, file) => readFileSync(join(CACHE_DIRECTORY, index, file), 'utf8').trim()
  const caches = {}
  let lastLevel = 0
  for (const index of entries) {
    try {
      const level = Number(read(index, 'level'))
      const type = read(index, 'type')
      const size = /^(\d+)K$/.exec(read(index, 'size'))
      const ways = Number(read(index, 'ways_of_associativity'))
      const line = Number(read(index, 'coherency_line_size'))
      if (size === null || !(ways > 0) || !(line > 0)) continue
      // valgrind simulates only caches whose set count is a power of two: one that is not (a
      // 480 MiB 16-way last level has 491,520 sets) is simulated as the largest that is, with the
      // same ways and lines, a smaller cache than the machine's.
      const sets = Number(size[1]) * 1024 / (ways * line)
      const geometry = `${2 ** Math.floor(Math.log2(sets)) * ways * line},${ways},${line}`
      if (level === 1 && type === 'Data') caches.D1 = geometry
      else if (level === 1 && type === 'Instruction') caches.I1 = geometry
      else if (type === 'Unified' && level > lastLevel) {
        caches.LL = geometry
        lastLevel = level
      }
    } catch {}
  }
  for (const name of ['I1', 'D1', 'LL']) if (caches[name] !== undefined) cacheOptions.push(`--${name}=${caches[name]}`)
  return cacheOptions
}

// With `counter` (a callgrind output file), the server runs under valgrind's callgrind, which
// counts the instructions it runs once told to (see countInstructions).
async function startServer (scenario, serverOptions = {}, counter = null) {
  const child = fork(SERVER_SCRIPT, [scenario], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, BENCH_SERVER_OPTIONS: JSON.stringify(serverOptions) },
    ...(counter === null
      ? {}
      : {
          execPath: 'valgrind',
          // Code that V8 generates lives in anonymous memory: --smc-check makes valgrind notice
          // when it changes. --single-threaded keeps compilation and GC on the counted thread.
          execArgv: ['--quiet', '--tool=callgrind', '--smc-check=all-non-file', '--instr-atstart=no', '--cache-sim=yes', '--branch-sim=yes',
            ...simulatedCaches(), `--callgrind-out-file=${counter}`, process.execPath, '--single-threaded']
        })
  })
  children.add(child)
  child.once('exit', () => children.delete(child))
  if (serverCpuSet !== null) pin(child.pid, serverCpuSet)
  const startTimeout = counter === null ? SERVER_START_TIMEOUT_MS : VALGRIND_START_TIMEOUT_MS
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server "${scenario}" did not start within ${startTimeout} ms`)), startTimeout)
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

// The server's CPU time so far, { user, system }, in microseconds.
async function serverCpu (server) {
  const reply = once(server.child, 'message', { signal: AbortSignal.timeout(CPU_QUERY_TIMEOUT_MS) })
  server.child.send('cpu?')
  let message
  try {
    [message] = await reply
  } catch (err) {
    throw new Error(`server "${server.scenario}" did not report its CPU time: ${err.message}`)
  }
  const { user, system } = message?.cpu ?? {}
  if (!Number.isFinite(user) || !Number.isFinite(system)) throw new Error(`server "${server.scenario}" sent an invalid CPU report: ${JSON.stringify(message)}`)
  return { user, system }
}

// What a scenario sends: GET of its path, unless it names a method and a body.
function requestOf ({ path, method = 'GET', body }) {
  return { path, method, body, text: `${method} ${path}` }
}

async function fetchOnce (server, request, headers) {
  const { path, method, body: sent } = requestOf(request)
  const response = await fetch(server.url + path, { method, body: sent, headers, signal: AbortSignal.timeout(VERIFY_TIMEOUT_MS) })
  const text = await response.text()
  let body
  try { body = JSON.parse(text) } catch { body = text }
  return { status: response.status, body, headers: response.headers }
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
  try {
    const send = async () => {
      const { path, method, body, text } = requestOf(scenario)
      const response = await fetch(server.url + path, { method, body, headers, signal: AbortSignal.timeout(VALGRIND_START_TIMEOUT_MS) })
      await response.arrayBuffer()
      if (response.status !== 200) throw new Error(`${scenario.name}/${name}: ${text} answered ${response.status} under callgrind`)
    }
    // One request at a time, on one kept-alive connection.
    for (let i = 0; i < COUNT_WARMUP_REQUESTS; i++) await send()
    execFileSync('callgrind_control', ['--instr=on', String(server.child.pid)], { stdio: 'ignore' })
    for (let i = 0; i < COUNTED_REQUESTS; i++) await send()
    execFileSync('callgrind_control', ['--instr=off', String(server.child.pid)], { stdio: 'ignore' })
  } finally {
    // Disconnecting makes the server exit normally, which is when callgrind writes its counts.
    const exited = once(server.child, 'exit')
    server.child.disconnect()
    await exited
  }
  return perRequest(await readFile(file, 'utf8'), COUNTED_REQUESTS)
}

// callgrind's totals per request. Estimated cycles weigh the simulated misses as KCachegrind's
// cycle estimate does: 10 cycles for a mispredicted branch or a first-level cache miss, 100 for a
// last-level one.
function perRequest (text, requests) {
  const events = /^events: (.+)$/m.exec(text)?.[1].trim().split(/\s+/)
  const totals = /^totals: (.+)$/m.exec(text)?.[1].trim().split(/\s+/).map(Number)
  if (events === undefined || totals === undefined) throw new Error('callgrind wrote no totals')
  const total = (event) => totals[events.indexOf(event)] ?? 0
  const firstLevelMisses = total('I1mr') + total('D1mr') + total('D1mw')
  const lastLevelMisses = total('ILmr') + total('DLmr') + total('DLmw')
  const mispredictions = total('Bcm') + total('Bim')
  return {
    instructions: total('Ir') / requests,
    estimatedCycles: (total('Ir') + 10 * (mispredictions + firstLevelMisses) + 100 * lastLevelMisses) / requests
  }
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

function median (values) {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
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

// Text columns (the first `leftColumns`) are aligned left, numbers right.
function printRows (rows, leftColumns = 2) {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)))
  for (const row of rows) {
    console.log(row.map((cell, column) => column < leftColumns ? cell.padEnd(widths[column]) : cell.padStart(widths[column])).join('  ').trimEnd())
  }
}

function signed (value, digits = 2) {
  return (value >= 0 ? '+' : '') + value.toFixed(digits)
}

function exceedsCpuLimit (result, settings) {
  return settings.maxAddedCpu !== null && result.addedCpuPerRequest > settings.maxAddedCpu
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
process.on('exit', killChildren)
process.on('SIGINT', () => process.exit(130))
process.on('SIGTERM', () => process.exit(143))

main().catch((err) => {
  console.error(`bench failed: ${err.message}`)
  process.exit(1)
})
