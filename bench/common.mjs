// What the bench scripts share: settings from the environment, CPU pinning, server processes that
// report their port and CPU time over IPC, the token the JWT servers accept, instruction counting
// under callgrind, and the printing of tables.
import { execFileSync, fork } from 'node:child_process'
import { once } from 'node:events'
import { readdirSync, readFileSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { createSigner } from 'fast-jwt'

// The only address ever loaded: the servers are children of the bench process on loopback.
export const HOST = '127.0.0.1'
export const WARMUP_SECONDS = 2
export const VERIFY_TIMEOUT_MS = 5_000
const SERVER_START_TIMEOUT_MS = 15_000
const CPU_QUERY_TIMEOUT_MS = 5_000
// Must match what the servers configure for their JWT methods.
export const JWT_ISSUER = 'https://idp.bench.local/'
export const JWT_AUDIENCE = 'orders-api'
const JWT_LIFETIME_SECONDS = 3600
// Instruction counting: requests sent before counting starts, so that the JIT has settled, then
// requests counted. Under valgrind a server runs some 50 times slower.
export const COUNT_WARMUP_REQUESTS = 10_000
export const COUNTED_REQUESTS = 4_000
export const VALGRIND_START_TIMEOUT_MS = 180_000

// ---------------------------------------------------------------------------------------------
// Settings

export function integerSetting (env, name, fallback, min, max) {
  const text = env[name]
  if (text === undefined || text === '') return fallback
  const value = Number(text)
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(`${name} must be an integer from ${min} to ${max}, got "${text}"`)
  }
  return value
}

export function flagSetting (env, name) {
  const text = env[name]
  if (text === undefined || text === '' || text === '0') return false
  if (text === '1') return true
  throw new Error(`${name} must be 1 or 0, got "${text}"`)
}

export function instructionsSetting (env, name) {
  if (!flagSetting(env, name)) return false
  try {
    execFileSync('valgrind', ['--version'], { stdio: 'ignore' })
    execFileSync('callgrind_control', ['--version'], { stdio: 'ignore' })
  } catch {
    throw new Error(`${name}=1 needs valgrind (with callgrind_control) on the PATH`)
  }
  return true
}

// ---------------------------------------------------------------------------------------------
// Pinning

// Pins a process, all its threads included, to the given CPUs (a taskset list such as "1").
export function pin (pid, cpus) {
  execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' })
}

export function canPin () {
  if (os.platform() !== 'linux' || os.cpus().length < 2) return false
  try {
    execFileSync('taskset', ['-p', String(process.pid)], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

// auto (the default) pins where it can: Linux, two CPUs or more, and taskset installed.
export function pinSetting (env, name) {
  const text = env[name] ?? 'auto'
  if (text === '0') return false
  if (text === '1') {
    if (!canPin()) throw new Error(`${name}=1 needs Linux, two CPUs or more and taskset (util-linux)`)
    return true
  }
  if (text === 'auto' || text === '') return canPin()
  throw new Error(`${name} must be auto, 1 or 0, got "${text}"`)
}

// ---------------------------------------------------------------------------------------------
// Server processes

const children = new Set()

// Servers must never outlive the run, whichever way it ends.
export function killChildrenOnExit () {
  process.on('exit', () => { for (const child of children) child.kill() })
  process.on('SIGINT', () => process.exit(130))
  process.on('SIGTERM', () => process.exit(143))
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

/**
 * Starts `script` with `args` as a child process, which reports `{ port }` over IPC once it
 * listens and answers each 'cpu?' message with its CPU time. `options` reach it as JSON in
 * BENCH_SERVER_OPTIONS. With `cpus`, it is pinned there. With `counter` (a callgrind output file),
 * it runs under valgrind's callgrind, which counts the instructions it runs once told to.
 */
export async function startServer ({ script, name, args = [name], options = {}, cpus = null, counter = null }) {
  const child = fork(script, args, {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, BENCH_SERVER_OPTIONS: JSON.stringify(options) },
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
  if (cpus !== null) pin(child.pid, cpus)
  const startTimeout = counter === null ? SERVER_START_TIMEOUT_MS : VALGRIND_START_TIMEOUT_MS
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server "${name}" did not start within ${startTimeout} ms`)), startTimeout)
    child.once('message', (message) => { clearTimeout(timer); resolve(message?.port) })
    child.once('exit', (code, signal) => { clearTimeout(timer); reject(new Error(`server "${name}" exited (${signal ?? code}) before listening`)) })
    child.once('error', (err) => { clearTimeout(timer); reject(err) })
  })
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`server "${name}" reported an invalid port: ${port}`)
  return { scenario: name, child, port, url: `http://${HOST}:${port}` }
}

export async function stopServer (server) {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return
  const exited = once(server.child, 'exit')
  server.child.kill()
  await exited
}

// The server's CPU time so far, { user, system }, in microseconds.
export async function serverCpu (server) {
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

/**
 * The server side of the protocol above: reports the port over IPC, answers 'cpu?', and exits
 * when the parent goes away, even if it dies without killing the server.
 */
export function reportToParent (port) {
  if (typeof process.send !== 'function') throw new Error('a bench server must be started by a bench script (needs an IPC channel)')
  process.on('disconnect', () => process.exit(0))
  process.on('message', (message) => {
    if (message !== 'cpu?') return
    const { user, system } = process.cpuUsage()
    process.send({ cpu: { user, system } })
  })
  process.send({ port })
}

export function readServerOptions (text = process.env.BENCH_SERVER_OPTIONS) {
  if (text === undefined || text === '') return {}
  const options = JSON.parse(text)
  if (typeof options !== 'object' || options === null) throw new Error('BENCH_SERVER_OPTIONS must be a JSON object')
  return options
}

export function requireOption (options, name) {
  const value = options[name]
  if (typeof value !== 'string' || value === '') throw new Error(`BENCH_SERVER_OPTIONS has no ${name}`)
  return value
}

// ---------------------------------------------------------------------------------------------
// Requests

/** One request to a server, with the body parsed as JSON where it is JSON. */
export async function fetchOnce (url, { method = 'GET', body, headers = {} } = {}, timeout = VERIFY_TIMEOUT_MS) {
  const response = await fetch(url, { method, body, headers, signal: AbortSignal.timeout(timeout) })
  const text = await response.text()
  let parsed
  try { parsed = JSON.parse(text) } catch { parsed = text }
  return { status: response.status, body: parsed, headers: response.headers }
}

// The token must outlive the run, or the last runs would measure refusals.
export function signToken (key, algorithm, plannedSeconds) {
  const lifetime = Math.max(JWT_LIFETIME_SECONDS, plannedSeconds + 600)
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

// ---------------------------------------------------------------------------------------------
// Instruction counting

/**
 * Counts what a server started under callgrind (`server.child`, writing to `file`) runs per
 * request: `send()` (one request, awaited) COUNT_WARMUP_REQUESTS times uncounted, then
 * COUNTED_REQUESTS times counted. One request at a time, so nothing is batched.
 */
export async function countInstructions (server, file, send) {
  try {
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
  return perRequest(readFileSync(file, 'utf8'), COUNTED_REQUESTS)
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

// ---------------------------------------------------------------------------------------------
// Numbers and tables

export function median (values) {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

// Text columns (the first `leftColumns`) are aligned left, numbers right.
export function printRows (rows, leftColumns = 2) {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)))
  for (const row of rows) {
    console.log(row.map((cell, column) => column < leftColumns ? cell.padEnd(widths[column]) : cell.padStart(widths[column])).join('  ').trimEnd())
  }
}

export function signed (value, digits = 2) {
  return (value >= 0 ? '+' : '') + value.toFixed(digits)
}

export function fixed (value, digits) {
  return value === null ? 'n/a' : value.toFixed(digits)
}
