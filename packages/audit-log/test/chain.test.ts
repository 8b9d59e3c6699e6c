import { test } from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import Fastify from 'fastify'
import { portcullisCore, recordDecision } from '@portcullis/core'
import { portcullisAuditLog, verifyAuditFiles, verifyAuditLines } from '../src/index.js'
import { stateAfter } from '../src/chain.js'
import { alice, audited } from './helpers.js'

const ed25519 = generateKeyPairSync('ed25519')
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
const pem = (key: import('node:crypto').KeyObject): string => key.export({ type: key.type === 'private' ? 'pkcs8' : 'spki', format: 'pem' }).toString()

async function chainedLog (t: Parameters<typeof audited>[0], requests = 6): Promise<{ file: string, lines: string[] }> {
  const { app, file } = await audited(t, { chain: { signingKey: pem(ed25519.privateKey), keyId: 'audit-2026', checkpointEvery: 4 } })
  for (let i = 0; i < requests; i++) await app.inject({ url: `/orders/${i}`, headers: i % 2 === 0 ? { 'x-api-key': alice.key } : {} })
  app.audit.policyChange({ action: 'reject', version: null, previousVersion: 'v1', reason: 'PORTCULLIS_POLICY_INVALID', source: 'file' })
  await app.close()
  return { file, lines: (await readFile(file, 'utf8')).trimEnd().split('\n') }
}

test('an intact chain verifies, checkpoints and all; the file ends with a checkpoint', async (t) => {
  const { file, lines } = await chainedLog(t)
  t.equal(lines.length, 6 + 1 + 1 + 1, 'six requests, a policy record, a checkpoint after four records and one at close')
  const last = JSON.parse(lines.at(-1) as string)
  t.match(last, { event: { action: 'audit-checkpoint', hash: /^[\w-]{43}$/ }, portcullis: { checkpoint: { key_id: 'audit-2026', signature: /\S/ } } })
  const report = await verifyAuditFiles([file], { publicKey: pem(ed25519.publicKey) })
  t.match(report, { ok: true, records: 9, firstSequence: 1, lastSequence: 9, checkpoints: 2, verifiedCheckpoints: 2, afterLastCheckpoint: 0, continues: false, restarts: [], problem: null })
  t.match(await verifyAuditFiles([file]), { ok: true, checkpoints: 2, verifiedCheckpoints: 0 }, 'without a key: counted, not checked')
  t.match(verifyAuditLines(lines, { publicKey: { 'audit-2026': ed25519.publicKey } }), { ok: true, verifiedCheckpoints: 2 }, 'keys by id, as KeyObjects')
  t.match(verifyAuditLines(lines, { publicKey: ed25519.privateKey }), { ok: true, verifiedCheckpoints: 2 }, 'a private key stands for its public key')
})

test('a one-byte edit, a removed line and a reordered pair are each found, at their line', async (t) => {
  const { lines } = await chainedLog(t)
  const edited = [...lines]
  edited[2] = (edited[2] as string).replace('"/orders/2"', '"/orders/3"')
  t.match(verifyAuditLines(edited), { ok: false, records: 2, problem: { line: 3, message: 'record altered: its hash does not match its content' } })
  const broken = [...lines]
  broken[1] = (broken[1] as string).slice(0, -1)
  t.match(verifyAuditLines(broken), { ok: false, problem: { line: 2, message: /not a JSON record/ } })
  const hashEdited = [...lines]
  hashEdited[0] = (hashEdited[0] as string).replace(/"hash":"(.)/, (_m, c: string) => `"hash":"${c === 'A' ? 'B' : 'A'}`)
  t.match(verifyAuditLines(hashEdited), { ok: false, problem: { line: 1, message: /record altered/ } })

  const removed = lines.filter((_, i) => i !== 3)
  t.match(verifyAuditLines(removed), { ok: false, records: 3, problem: { line: 4, message: 'records missing before it: sequence 5 follows 3' } })
  const reordered = [...lines]
  ;[reordered[4], reordered[5]] = [reordered[5] as string, reordered[4] as string]
  t.match(verifyAuditLines(reordered), { ok: false, problem: { line: 5, message: /records missing before it: sequence 6 follows 4/ } })
  const swappedBack = [...lines]
  ;[swappedBack[1], swappedBack[2]] = [swappedBack[2] as string, swappedBack[1] as string]
  t.match(verifyAuditLines([swappedBack[0] as string, swappedBack[1] as string, swappedBack[2] as string]), { ok: false, problem: { line: 2 } })
  t.match(verifyAuditLines([lines[2] as string, lines[1] as string]), { ok: false, problem: { line: 2, message: /out of order: sequence 2 follows 3/ } })
  const { Sequencer } = await import('../src/chain.js')
  const renumbered = new Sequencer(true, { sequence: 9, prev: JSON.parse(lines[0] as string).event.hash }).seal({ ...JSON.parse(lines[1] as string), event: { ...JSON.parse(lines[1] as string).event, hash: undefined } })
  t.match(verifyAuditLines([lines[0] as string, renumbered]), { ok: false, problem: { line: 2, message: 'sequence 10 follows 1' } }, 'linked, but numbered wrong')
  t.match(verifyAuditLines(['{"event":{"sequence":1}}']), { ok: false, problem: { line: 1, message: /not a chained record/ } })
  t.match(verifyAuditLines(['', lines[0] as string, '']), { ok: true, records: 1 }, 'blank lines are skipped')
})

test('checkpoint signatures: a wrong key, an unknown key id and a forged signature fail', async (t) => {
  const { lines } = await chainedLog(t)
  const other = generateKeyPairSync('ed25519')
  t.match(verifyAuditLines(lines, { publicKey: other.publicKey }), { ok: false, problem: { line: 5, message: 'checkpoint signature does not verify' } })
  t.match(verifyAuditLines(lines, { publicKey: { 'another-key': pem(ed25519.publicKey) } }), { ok: false, problem: { message: 'checkpoint signed with key "audit-2026", which is not among the public keys given' } })
  const anonymous = await audited(t, { chain: { signingKey: ed25519.privateKey } })
  await anonymous.app.inject('/public')
  anonymous.app.audit.checkpoint()
  const unnamed = (await anonymous.text()).trimEnd().split('\n')
  t.match(verifyAuditLines(unnamed, { publicKey: { 'audit-2026': ed25519.publicKey } }), { ok: false, problem: { line: 2, message: 'checkpoint names no key_id: give its public key on its own, not keys by id' } })
  t.match(verifyAuditLines(unnamed, { publicKey: ed25519.publicKey }), { ok: true, verifiedCheckpoints: 1 })
  // A forger who rewrites a checkpoint (and its hash) still cannot sign it.
  const { Sequencer } = await import('../src/chain.js')
  const checkpoint = JSON.parse(lines[4] as string)
  delete checkpoint.event.hash
  checkpoint.portcullis.checkpoint.signature = 'AAAA'
  const forged = new Sequencer(true, stateAfter(lines[3] as string)).seal({ ...checkpoint, event: { ...checkpoint.event, sequence: 0 } })
  t.match(verifyAuditLines([...lines.slice(0, 4), forged], { publicKey: ed25519.publicKey }), { ok: false, problem: { line: 5, message: 'checkpoint signature does not verify' } })
  const unsigned = JSON.parse(lines[4] as string)
  delete unsigned.event.hash
  delete unsigned.portcullis.checkpoint.signature
  const stripped = new Sequencer(true, stateAfter(lines[3] as string)).seal({ ...unsigned, event: { ...unsigned.event, sequence: 0 } })
  t.match(verifyAuditLines([...lines.slice(0, 4), stripped], { publicKey: ed25519.publicKey }), { ok: false, problem: { message: 'checkpoint signature does not verify' } })
})

test('a restart goes on with the chain in the same file; rotated files verify as one chain, oldest first', async (t) => {
  const dir = t.testdir()
  const file = join(dir, 'audit.log')
  const start = async (): Promise<import('fastify').FastifyInstance> => {
    const app = Fastify()
    await app.register(portcullisCore)
    await app.register(portcullisAuditLog, { sinks: [{ type: 'file', path: file, maxSize: 4096, maxFiles: 3 }], chain: { signingKey: ec.privateKey, checkpointEvery: 1000 } })
    app.get('/', async () => 'ok')
    return app
  }
  let app = await start()
  for (let i = 0; i < 5; i++) await app.inject('/')
  await app.close()
  app = await start()
  for (let i = 0; i < 40; i++) await app.inject('/')
  await app.close()
  const files = [`${file}.3`, `${file}.2`, `${file}.1`, file]
  const all = await verifyAuditFiles(files, { publicKey: ec.publicKey })
  t.match(all, { ok: true, checkpoints: 1, verifiedCheckpoints: 1, restarts: [], continues: true }, 'the oldest files (and the first run\'s checkpoint) are gone beyond maxFiles: the chain starts earlier')
  t.ok((all.firstSequence as number) > 1)
  t.equal(all.lastSequence, 47, '45 requests and two checkpoints')
  const latest = await verifyAuditFiles([file])
  t.match(latest, { ok: true, continues: true }, 'one rotated file on its own continues a chain from an earlier one')
  t.match(await verifyAuditFiles([file, `${file}.1`]), { ok: false, problem: { file: `${file}.1`, line: 1 } }, 'files in the wrong order')
})

test('a restart right after a rotation goes on from the rotated file', async (t) => {
  const dir = t.testdir()
  const file = join(dir, 'audit.log')
  const run = async (requests: number): Promise<void> => {
    const app = Fastify()
    await app.register(portcullisCore)
    await app.register(portcullisAuditLog, { sinks: [{ type: 'file', path: file, maxSize: 1024 }], chain: true })
    app.get('/', async () => 'ok')
    for (let i = 0; i < requests; i++) await app.inject('/')
    await app.close()
  }
  await run(2)
  t.equal(await readFile(file, 'utf8'), '', 'rotated once full: the current file is empty')
  await run(1)
  t.match(await verifyAuditFiles([`${file}.1`, file]), { ok: true, records: 3, restarts: [], lastSequence: 3 })
})

test('a file that does not end with a chained record starts a new chain, reported as a restart', async (t) => {
  const dir = t.testdir()
  const file = join(dir, 'audit.log')
  await writeFile(file, '\n\n')
  const run = async (chain: boolean): Promise<void> => {
    const app = Fastify()
    await app.register(portcullisCore)
    await app.register(portcullisAuditLog, { sinks: [{ type: 'file', path: file }], chain })
    app.get('/', async () => 'ok')
    await app.inject('/')
    await app.close()
  }
  await run(true)
  await run(true)
  t.match(await verifyAuditFiles([file]), { ok: true, records: 2, restarts: [] })
  await writeFile(file, `${await readFile(file, 'utf8')}{"truncated`)
  await run(true)
  const text = await readFile(file, 'utf8')
  const report = verifyAuditLines(text.replace('{"truncated', '').split('\n'))
  t.match(report, { ok: true, records: 3, restarts: [{ line: 5 }] }, 'after a cut-short line, the next record begins a chain of its own (the blank lines the file began with are skipped)')
  t.same(stateAfter(null), { sequence: 0, prev: null })
  t.same(stateAfter('{"event":{"sequence":3}}'), { sequence: 0, prev: null })
  t.same(stateAfter('{}'), { sequence: 0, prev: null })
})

test('every kind of record is written in canonical form: the chain verifies across all of them', async (t) => {
  const { app, file } = await audited(t, { chain: true, headers: { request: '*', response: ['x-trace', 'content-type'] }, body: true })
  // Values JSON must escape, one way or another, each first in a value: quotes, backslashes,
  // control characters, lone surrogates; and a character past the surrogates, which needs none.
  app.get('/odd', { config: { authn: { anonymous: true }, authz: false } }, async (request, reply) => {
    recordDecision(request, { plugin: '\uff58-"plugin"', outcome: 'allow', reason: 'OK\u0001\\', rule: 'rule \ud800 "one"\n' })
    return await reply.header('x-trace', 'a\tb').send({ ok: true })
  })
  await app.inject({ method: 'POST', url: '/orders?z=1&a=%22', headers: { 'x-api-key': alice.key, 'x-zeta': '1', 'x-alpha': ['1', '2'] }, payload: { zeta: 1, alpha: { b: 2, a: 1 } } })
  await app.inject('/public')
  await app.inject({ url: '/odd?q="x"', headers: { 'user-agent': 'curl \\ "8.5" \tx' } })
  app.audit.policyChange({ action: 'activate', version: 'v2', previousVersion: 'v1', mode: 'canary', diff: { added: ['/routes/1'], changed: [], removed: [], truncated: false }, source: 'admin-api', actor: 'ops' })
  app.audit.policyChange({ action: 'rollback', version: 'v1', previousVersion: 'v2' })
  app.audit.checkpoint()
  await app.audit.flush()
  const report = await verifyAuditFiles([file])
  t.match(report, { ok: true, records: 5, checkpoints: 0 }, 'no checkpoint without a signing key')
  const odd = JSON.parse((await readFile(file, 'utf8')).split('\n')[2] as string)
  t.match(odd, { portcullis: { decision: { plugin: '\uff58-"plugin"', reason: 'OK\u0001\\', rule: 'rule \ud800 "one"\n' } }, user_agent: { original: 'curl \\ "8.5" \tx' }, http: { response: { headers: { 'content-type': /json/, 'x-trace': 'a\tb' } } } }, 'escaped values read back as they were')
})

test('chain options are checked at startup', async (t) => {
  for (const [chain, message] of [
    [{ signingKey: 'not a key' }, /audit\.chain\.signingKey must be a private key/],
    [{ signingKey: pem(ed25519.publicKey) }, /audit\.chain\.signingKey must be a private key/],
    [{ keyId: '' }, /audit\.chain\.keyId must be a non-empty string/],
    [{ checkpointEvery: 0 }, /audit\.chain\.checkpointEvery must be a whole number of records from 1/],
    [{ checkpointInterval: 5 }, /audit\.chain\.checkpointInterval must be a number of milliseconds from 100/],
    [{ every: 1 }, /audit\.chain\.every is not a known option/]
  ] as const) {
    const app = Fastify()
    await app.register(portcullisCore)
    app.register(portcullisAuditLog, { sinks: [{ type: 'file', path: join(t.testdir(), 'a.log') }], chain: chain as never })
    await t.rejects(async () => await app.ready(), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, message.source)
  }
})

test('checkpoints are also written on a timer while records come in', async (t) => {
  const { app, file } = await audited(t, { chain: { signingKey: ed25519.privateKey, checkpointInterval: 100 } })
  await app.inject('/public')
  await new Promise((resolve) => setTimeout(resolve, 250))
  await app.audit.flush()
  const lines = (await readFile(file, 'utf8')).trimEnd().split('\n')
  t.equal(lines.length, 2, 'one checkpoint, and none while nothing new is written')
  t.match(verifyAuditLines(lines, { publicKey: ed25519.publicKey }), { ok: true, verifiedCheckpoints: 1 })
})
