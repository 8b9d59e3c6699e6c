import { test, type Test } from 'tap'
import { createServer, type Server } from 'node:http'
import { once } from 'node:events'
import { open, readFile, symlink, unlink, writeFile } from 'node:fs/promises'
import { execFileSync, spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { PassThrough, Writable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify, { type FastifyInstance } from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { portcullisAuditLog, verifyAuditLines, type AuditLogOptions } from '../src/index.js'
import { FileSink } from '../src/file-sink.js'

async function app (t: Test, options: AuditLogOptions): Promise<FastifyInstance> {
  const server = Fastify()
  await server.register(portcullisCore)
  await server.register(portcullisAuditLog, options)
  server.get('/', async () => 'ok')
  t.teardown(async () => { await server.close() })
  return server
}

async function until (condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 10_000
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

const linesOf = (text: string): any[] => text.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line))

/** A real collector on a fixed port that can go down and come back, keeping what it received. */
class Collector {
  readonly received: any[] = []
  readonly contentTypes: string[] = []
  readonly authorizations: string[] = []
  status = 200
  headers: Record<string, string> = {}
  port = 0
  #server: Server | null = null

  async start (): Promise<void> {
    this.#server = createServer((req, res) => {
      let body = ''
      req.setEncoding('utf8')
      req.on('data', (chunk: string) => { body += chunk })
      req.on('end', () => {
        this.contentTypes.push(String(req.headers['content-type']))
        this.authorizations.push(String(req.headers.authorization))
        if (this.status < 300) this.received.push(...linesOf(body))
        res.writeHead(this.status, this.headers).end()
      })
    })
    this.#server.listen(this.port, '127.0.0.1')
    await once(this.#server, 'listening')
    this.port = (this.#server.address() as { port: number }).port
  }

  async stop (): Promise<void> {
    const server = this.#server as Server
    server.closeAllConnections()
    server.close()
    await once(server, 'close')
  }
}

test('the HTTP sink: batches to a real collector, keeps records while it is down, delivers them and reports nothing lost', async (t) => {
  const collector = new Collector()
  await collector.start()
  t.teardown(async () => { await collector.stop().catch(() => {}) })
  const server = await app(t, { sinks: [{ type: 'http', url: `http://127.0.0.1:${collector.port}/ingest?token=query-secret`, headers: { authorization: 'Bearer collector-secret' }, batchSize: 5, flushInterval: 50, retry: { minDelay: 20, maxDelay: 100 } }] })
  for (let i = 0; i < 12; i++) await server.inject('/')
  await until(() => collector.received.length === 12, 'the first 12 records')
  t.same(collector.contentTypes.slice(0, 1), ['application/x-ndjson'])
  t.equal(collector.authorizations[0], 'Bearer collector-secret')
  t.ok(collector.contentTypes.length >= 3, 'in batches of at most five')

  await collector.stop()
  for (let i = 0; i < 8; i++) await server.inject('/')
  await until(() => server.audit.stats().sinks[0]?.healthy === false, 'the sink to notice')
  t.match(server.audit.stats().sinks[0], { name: `http:http://127.0.0.1:${collector.port}/ingest`, healthy: false, buffered: 8, lastError: /^(ECONNREFUSED|UND_ERR_SOCKET|ECONNRESET)$/ })
  await collector.start()
  await until(() => collector.received.length === 20, 'the records kept while it was down')
  // The collector holds a batch before its answer reaches the sink: a record counts as written once answered.
  await until(() => server.audit.stats().sinks[0]?.written === 20, 'the collector\'s answer')
  t.same(collector.received.map((r) => r.event.sequence), Array.from({ length: 20 }, (_, i) => i + 1), 'in order, none twice')
  t.match(server.audit.stats(), { records: 20, dropped: 0, sinks: [{ healthy: true, written: 20, dropped: 0, buffered: 0 }] })
  t.notOk(JSON.stringify(server.audit.stats()).includes('secret'), 'stats name the sink without its credentials')
})

test('the HTTP sink: a full buffer drops and counts; once the collector is back a record says how many were lost', async (t) => {
  const collector = new Collector()
  collector.status = 503
  collector.headers = { 'retry-after': '1' }
  await collector.start()
  t.teardown(async () => { await collector.stop() })
  const server = await app(t, { sinks: [{ type: 'http', url: `http://127.0.0.1:${collector.port}/`, batchSize: 2, flushInterval: 10, maxBufferRecords: 3, retry: { minDelay: 10, maxDelay: 5000 } }] })
  for (let i = 0; i < 5; i++) await server.inject('/')
  await until(() => collector.contentTypes.length >= 1, 'a refused delivery')
  await until(() => server.audit.stats().sinks[0]?.lastError === 'HTTP 503', 'the refusal to reach the sink')
  t.match(server.audit.stats(), { dropped: 2, sinks: [{ healthy: false, buffered: 3, lastError: 'HTTP 503' }] })
  collector.status = 200
  // Retry-After: 1 — the next attempt is a second away.
  await until(() => collector.received.length === 4, 'the kept records and the drop report')
  const report = collector.received[3]
  t.match(report, { event: { action: 'audit-records-dropped', outcome: 'failure', reason: 'sink-unavailable' }, portcullis: { audit: { dropped: 2, sink: /^http:/, since: /Z$/ } } })
  t.same(collector.received.map((r) => r.event.sequence), [1, 2, 3, 6], 'records 4 and 5 are the two lost')
})

test('the HTTP sink: a batch refused as such is dropped, counted and reported; close makes a last attempt', async (t) => {
  const collector = new Collector()
  collector.status = 400
  await collector.start()
  t.teardown(async () => { await collector.stop() })
  const server = Fastify()
  await server.register(portcullisCore)
  await server.register(portcullisAuditLog, { sinks: [{ type: 'http', url: `http://127.0.0.1:${collector.port}/`, batchSize: 10, flushInterval: 10, timeout: 1000 }] })
  server.get('/', async () => 'ok')
  await server.inject('/')
  await server.audit.flush()
  t.match(server.audit.stats(), { dropped: 1, sinks: [{ lastError: 'HTTP 400', healthy: true }] })
  collector.status = 200
  await server.inject('/')
  await server.close()
  t.match(collector.received.map((r) => r.event.action), ['http-request', 'audit-records-dropped'], 'the first delivery, then the report of the refused record, both by close')
})

test('the HTTP sink: what a collector never takes is dropped at close, and a slow one times out', async (t) => {
  const collector = new Collector()
  collector.status = 500
  await collector.start()
  t.teardown(async () => { await collector.stop() })
  const server = Fastify()
  await server.register(portcullisCore)
  await server.register(portcullisAuditLog, { sinks: [{ type: 'http', url: `http://127.0.0.1:${collector.port}/`, flushInterval: 10, retry: { minDelay: 60_000, maxDelay: 60_000 } }] })
  server.get('/', async () => 'ok')
  await server.inject('/')
  await until(() => collector.contentTypes.length === 1, 'the first attempt')
  await server.inject('/')
  await server.close()
  t.match(server.audit.stats(), { dropped: 2, sinks: [{ written: 0, dropped: 2, buffered: 0 }] })
  t.equal(collector.contentTypes.length, 2, 'one more attempt at close, not a wait for the retry')

  const silent = createServer(() => {})
  silent.listen(0, '127.0.0.1')
  await once(silent, 'listening')
  t.teardown(() => { silent.closeAllConnections(); silent.close() })
  const slow = await app(t, { sinks: [{ type: 'http', url: `http://127.0.0.1:${(silent.address() as { port: number }).port}/`, batchSize: 1, timeout: 100 }] })
  await slow.inject('/')
  await until(() => slow.audit.stats().sinks[0]?.lastError === 'TimeoutError', 'the delivery to time out')
})

test('the file sink: a device that fails (ENOSPC) keeps the records; once writable again they are written, with a drop report', async (t) => {
  const dir = t.testdir()
  const link = join(dir, 'audit.log')
  await symlink('/dev/full', link)
  const server = await app(t, { sinks: [{ type: 'file', path: link, maxBufferBytes: 2048, retry: { minDelay: 20, maxDelay: 40 } }], chain: true })
  await server.inject('/')
  await until(() => server.audit.stats().sinks[0]?.lastError === 'ENOSPC', 'the failed write')
  t.match(server.audit.stats().sinks[0], { healthy: false, written: 0 })
  for (let i = 0; i < 10; i++) await server.inject('/')
  const dropped = server.audit.stats().dropped
  t.ok(dropped > 0, `past 2 KiB the records are dropped (${dropped})`)
  await unlink(link)
  await symlink(join(dir, 'real.log'), link)
  await until(async () => (await readFile(join(dir, 'real.log'), 'utf8').catch(() => '')).includes('audit-records-dropped'), 'the records and the drop report')
  const records = linesOf(await readFile(join(dir, 'real.log'), 'utf8'))
  t.equal(records.length, 11 - dropped + 1)
  t.match(records.at(-1), { event: { action: 'audit-records-dropped' }, portcullis: { audit: { dropped, sink: `file:${link}` } } })
  t.match(server.audit.stats().sinks[0], { healthy: true, written: 11 - dropped + 1, buffered: 0 })
  const kept = records.length - 1
  t.match(verifyAuditLines((await readFile(join(dir, 'real.log'), 'utf8')).split('\n')), { ok: false, records: kept, problem: { line: kept + 1, message: `records missing before it: sequence ${12} follows ${kept}` } }, 'the chain shows the gap the drop report explains')
})

test('the file sink writes all that waits in one write, however much came in while the last one was under way', async (t) => {
  const path = join(t.testdir(), 'audit.log')
  // Every file handle's writev, watched: the lines each write carries, and the first one held
  // until the test lets it finish, so that records pile up behind it however fast the disk is.
  const probe = await open(path, 'a')
  const handles = Object.getPrototypeOf(probe) as { writev: (buffers: Buffer[], position?: number) => Promise<{ bytesWritten: number }> }
  await probe.close()
  const writev = handles.writev
  t.teardown(() => { handles.writev = writev })
  const linesPerWrite: number[] = []
  let release = (): void => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  handles.writev = async function (this: unknown, buffers: Buffer[], position?: number) {
    let lines = 0
    for (const buffer of buffers) for (const byte of buffer) if (byte === 0x0a) lines++
    linesPerWrite.push(lines)
    if (linesPerWrite.length === 1) await held
    return await writev.call(this, buffers, position)
  }
  const { sink } = await FileSink.open({ type: 'file', path, maxBufferBytes: 4 * 1024 * 1024 }, () => {})
  // About 256 KiB of records a turn: the first turn's go in the held write, the next eight turns'
  // (2 MiB, more than a 64 KiB chunk or any fixed share) wait behind it.
  const TURNS = 9
  const PER_TURN = 256
  for (let turn = 0; turn < TURNS; turn++) {
    for (let i = 0; i < PER_TURN; i++) sink.write(JSON.stringify({ i: turn * PER_TURN + i, pad: 'x'.repeat(1010) }))
    await new Promise((resolve) => setImmediate(resolve))
  }
  t.same(linesPerWrite, [PER_TURN], 'one write under way, with the first turn\'s records')
  release()
  await sink.close()
  t.same(linesPerWrite, [PER_TURN, (TURNS - 1) * PER_TURN], 'the next write takes all that waited')
  t.match(sink.stats(), { written: TURNS * PER_TURN, dropped: 0, buffered: 0 })
  const numbers = linesOf(await readFile(path, 'utf8')).map((record) => record.i)
  t.same(numbers, Array.from({ length: TURNS * PER_TURN }, (_, i) => i), 'every record, once, in order')
})

test('the file sink: a write cut short (a file size limit) goes on where it stopped, with no record lost or written twice', async (t) => {
  const path = join(t.testdir(), 'audit.log')
  const fixture = fileURLToPath(new URL('./fixtures/size-limited-sink.ts', import.meta.url))
  const child = spawn(process.execPath, [...process.execArgv, fixture, path], { stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]()
  // The soft limit only: lifting it again needs no privilege.
  const limit = (soft: string): void => { execFileSync('prlimit', ['--pid', String(child.pid), `--fsize=${soft}:unlimited`]) }
  t.equal((await lines.next()).value, 'ready')
  // 4 KiB at most: the six records (6 KiB) are cut short at 4 KiB, and the rest refused.
  limit('4096')
  child.stdin.write('go\n')
  t.equal((await lines.next()).value, 'failing')
  t.equal((await readFile(path)).length, 4096, 'the file holds what fitted, ending within a record')
  limit('unlimited')
  const stats = JSON.parse((await lines.next()).value as string)
  t.match(stats, { written: 6, dropped: 0, buffered: 0, lastError: 'EFBIG' })
  t.same(linesOf(await readFile(path, 'utf8')).map((record) => record.i), [1, 2, 3, 4, 5, 6], 'each record once, whole, in order')
  await once(child, 'exit')
})

test('the file sink: records still unwritten at close are counted as dropped', async (t) => {
  const dir = t.testdir()
  const server = Fastify()
  await server.register(portcullisCore)
  await server.register(portcullisAuditLog, { sinks: [{ type: 'file', path: '/dev/full', retry: { minDelay: 60_000 } }] })
  server.get('/', async () => 'ok')
  await server.inject('/')
  await server.audit.flush()
  await server.inject('/')
  await server.close()
  t.match(server.audit.stats(), { dropped: 2 })
  t.ok(dir)
})

test('the file sink: reopen() follows an external rotation (logrotate\'s rename)', async (t) => {
  const dir = t.testdir()
  const file = join(dir, 'audit.log')
  const server = await app(t, { sinks: [{ type: 'file', path: join(dir, 'nested', 'audit.log') }, { type: 'file', path: file }] })
  await server.inject('/')
  await server.audit.flush()
  const { rename } = await import('node:fs/promises')
  await rename(file, `${file}.old`)
  await server.audit.reopen()
  await server.inject('/')
  await server.audit.flush()
  t.equal(linesOf(await readFile(`${file}.old`, 'utf8')).length, 1)
  t.match(linesOf(await readFile(file, 'utf8')), [{ event: { sequence: 2 } }])
  t.equal(linesOf(await readFile(join(dir, 'nested', 'audit.log'), 'utf8')).length, 2, 'its directory was made')
})

test('stream sinks: a slow reader is never waited for; past the bound records are dropped, then reported', async (t) => {
  let release: (() => void) | null = null
  const stuck = new Writable({
    highWaterMark: 64,
    write (_chunk, _encoding, callback) { release = callback }
  })
  const server = await app(t, { sinks: [{ type: 'stream', stream: stuck, maxBufferBytes: 1000, flushInterval: 1, name: 'pipe' }] })
  for (let i = 0; i < 6; i++) {
    await server.inject('/')
    await sleep(10)
  }
  const { dropped } = server.audit.stats()
  t.ok(dropped >= 3, `dropped, not waited for (${dropped})`)
  t.match(server.audit.stats().sinks[0], { name: 'pipe', healthy: false })
  const received: string[] = []
  const flowing = new Writable({ write (chunk, _encoding, callback) { received.push(String(chunk)); callback() } })
  stuck._write = (chunk, encoding, callback) => { flowing.write(chunk, encoding, callback) }
  ;(release as unknown as () => void)()
  await until(() => received.join('').includes('audit-records-dropped'), 'the drop report')
  t.match(server.audit.stats().sinks[0], { healthy: true, dropped })
})

test('stream sinks: flush waits for a stream that writes asynchronously', async (t) => {
  const received: string[] = []
  const slow = new Writable({ write (chunk, _encoding, callback) { setTimeout(() => { received.push(String(chunk)); callback() }, 5) } })
  const server = await app(t, { sinks: [{ type: 'stream', stream: slow }] })
  for (let i = 0; i < 3; i++) await server.inject('/')
  await server.audit.flush()
  t.equal(received.join('').split('\n').filter((line) => line !== '').length, 3)
})

test('stream sinks: records wait for the interval, unless 64 KiB of them wait', async (t) => {
  const received: string[] = []
  const stream = new Writable({ write (chunk, _encoding, callback) { received.push(String(chunk)); callback() } })
  const server = await app(t, { sinks: [{ type: 'stream', stream, flushInterval: 60_000 }] })
  await server.inject('/')
  await sleep(20)
  t.same(received, [], 'one small record waits')
  server.audit.policyChange({ action: 'reject', version: null, previousVersion: 'v1', reason: 'x'.repeat(70_000) })
  t.equal(received.join('').split('\n').filter((line) => line !== '').length, 2, 'past 64 KiB, both are handed over at once')
})

test('stream sinks: a stream that fails is marked unhealthy and drops from then on; stdout works', async (t) => {
  const failing = new PassThrough()
  const server = await app(t, { sinks: [{ type: 'stream', stream: failing }, { type: 'stdout' }] })
  await server.inject('/')
  failing.destroy(Object.assign(new Error('broken pipe'), { code: 'EPIPE' }))
  await sleep(10)
  await server.inject('/')
  await server.audit.flush()
  t.match(server.audit.stats().sinks, [{ name: 'stream', healthy: false, written: 0, dropped: 2, lastError: 'EPIPE' }, { name: 'stdout', written: 2 }], 'the one waiting and the one after')
  const noCode = new PassThrough()
  const other = await app(t, { sinks: [{ type: 'stream', stream: noCode }] })
  noCode.destroy(new Error('gone'))
  await sleep(10)
  await other.audit.flush()
  t.match(other.audit.stats().sinks, [{ lastError: 'ERROR' }])
})

test('a pino transport in a worker thread (pino/file): the logging ecosystem plugs in', async (t) => {
  const dir = t.testdir()
  const destination = join(dir, 'pino.log')
  const server = Fastify()
  await server.register(portcullisCore)
  await server.register(portcullisAuditLog, { sinks: [{ type: 'pino', target: 'pino/file', options: { destination } }], chain: true })
  server.get('/', async () => 'ok')
  for (let i = 0; i < 3; i++) await server.inject('/')
  await server.audit.flush()
  await server.close()
  const lines = (await readFile(destination, 'utf8')).trimEnd().split('\n')
  t.equal(lines.length, 3)
  t.match(verifyAuditLines(lines), { ok: true, records: 3 }, 'lines reach the transport as written')
  t.match(server.audit.stats().sinks, [{ name: 'pino:pino/file', written: 3, healthy: true }])

  const bad = Fastify()
  await bad.register(portcullisCore)
  bad.register(portcullisAuditLog, { sinks: [{ type: 'pino', target: 'no-such-transport-module' }] })
  await t.rejects(async () => await bad.ready(), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: /audit\.sinks\[0\]\.target could not start as a pino transport/ })
})

test('a pino transport that stalls: past its buffer records are dropped, and reported once it drains', async (t) => {
  const dir = t.testdir()
  const release = join(dir, 'release')
  const destination = join(dir, 'held.log')
  const target = fileURLToPath(new URL('./fixtures/held-transport.mjs', import.meta.url))
  const server = await app(t, { sinks: [{ type: 'pino', target, options: { release, destination } }] })
  // 25 records of 200 kB: more than the 4 MiB a transport's shared buffer holds.
  for (let i = 0; i < 25; i++) server.audit.policyChange({ action: 'reject', version: null, previousVersion: 'v1', reason: 'x'.repeat(200_000) })
  const { dropped } = server.audit.stats()
  t.ok(dropped > 0 && dropped < 25, `dropped, not waited for (${dropped})`)
  t.match(server.audit.stats().sinks[0], { healthy: false })
  await writeFile(release, '')
  await until(async () => (await readFile(destination, 'utf8').catch(() => '')).includes('audit-records-dropped'), 'the drop report')
  t.match(server.audit.stats().sinks[0], { healthy: true, written: 25 - dropped + 1 })
})

test('a pino transport whose destination fails is marked unhealthy; records are dropped from then on', async (t) => {
  const target = fileURLToPath(new URL('./fixtures/failing-transport.mjs', import.meta.url))
  const server = await app(t, { sinks: [{ type: 'pino', target }] })
  await server.inject('/')
  await until(() => server.audit.stats().sinks[0]?.healthy === false, 'the transport to fail')
  await server.inject('/')
  await server.audit.flush()
  t.match(server.audit.stats(), { dropped: 1, sinks: [{ lastError: /\S/ }] })
})

test('compliance mode: while a sink cannot take records, requests are refused with 503', async (t) => {
  const collector = new Collector()
  await collector.start()
  t.teardown(async () => { await collector.stop().catch(() => {}) })
  const server = await app(t, { onSinkFailure: 'refuse', sinks: [{ type: 'http', url: `http://127.0.0.1:${collector.port}/`, flushInterval: 10, retry: { minDelay: 20, maxDelay: 20 } }] })
  t.equal((await server.inject('/')).statusCode, 200)
  await collector.stop()
  await server.inject('/')
  await until(() => !server.audit.stats().sinks[0]?.healthy, 'the sink to fail')
  const refused = await server.inject('/')
  t.equal(refused.statusCode, 503)
  t.equal(refused.headers['retry-after'], '5')
  t.match(refused.json(), { code: 'PORTCULLIS_AUDIT_UNAVAILABLE', status: 503 })
  await collector.start()
  await until(() => server.audit.stats().sinks[0]?.healthy === true, 'the sink to recover')
  t.equal((await server.inject('/')).statusCode, 200)
})

test('sinks that cannot open fail startup, naming the option', async (t) => {
  const dir = t.testdir({ 'not-a-dir': 'x' })
  const server = Fastify()
  await server.register(portcullisCore)
  server.register(portcullisAuditLog, { sinks: [{ type: 'stdout' }, { type: 'file', path: join(dir, 'not-a-dir', 'audit.log') }] })
  await t.rejects(async () => await server.ready(), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: /audit\.sinks\[1\]\.path cannot be opened for appending \(E/ })
})
