import { test } from 'tap'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { openAuditWriter, portcullisAuditLog, verifyAuditLines, type AuditLogOptions } from '../src/index.js'

async function instance (options: AuditLogOptions, version: string): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(portcullisCore, { snapshot: { current: { version, value: null } } })
  await app.register(portcullisAuditLog, options)
  app.get('/', async () => 'ok')
  return app
}

test('one writer shared by two registrations: one file, one unbroken chain, left open when they close', async (t) => {
  const file = join(t.testdir(), 'audit.log')
  const writer = await openAuditWriter({ sinks: [{ type: 'file', path: file, flushInterval: 10 }], chain: true })
  const first = await instance({ writer, sample: 1 }, 'v1')
  const second = await instance({ writer, redact: { query: ['token'] } }, 'v2')
  await first.inject('/')
  await second.inject('/?token=abc')
  await first.inject('/')
  await first.close()
  await second.close()
  t.equal(writer.stats().records, 3, 'the writer is still open after both closed')
  await writer.close()
  const text = await readFile(file, 'utf8')
  const records = text.trimEnd().split('\n').map((line) => JSON.parse(line))
  t.same(records.map((record) => [record.event.sequence, record.portcullis.policy.version]), [[1, 'v1'], [2, 'v2'], [3, 'v1']], 'each stamped with its own version, numbered by the one writer')
  t.notOk(text.includes('abc'), 'each registration redacts by its own options')
  t.match(verifyAuditLines(text.trimEnd().split('\n')), { problem: null, records: 3 })
})

test('a writer excludes the options it has, and must be one openAuditWriter made', async (t) => {
  const writer = await openAuditWriter({ sinks: [{ type: 'stream', stream: process.stdout }] })
  t.teardown(async () => { await writer.close() })
  for (const key of ['sinks', 'chain', 'onSinkFailure'] as const) {
    const value = { sinks: [{ type: 'stdout' as const }], chain: true, onSinkFailure: 'refuse' as const }[key]
    await t.rejects(instance({ writer, [key]: value }, 'v'), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: `audit.${key} must be left out with audit.writer, which has its own sinks, chain and onSinkFailure` })
  }
  await t.rejects(instance({ writer: { write () {} } as never }, 'v'), { message: /^audit\.writer must be a writer made by openAuditWriter\(\)/ })
  await t.rejects(openAuditWriter({ sinks: [] }), { message: /audit\.sinks must be a non-empty list of sinks/ }, 'its options are checked as the plugin\'s')
})

test('a shared writer that refuses while a sink is down refuses for every registration', async (t) => {
  const writer = await openAuditWriter({ sinks: [{ type: 'file', path: '/dev/full', flushInterval: 10 }], onSinkFailure: 'refuse' })
  t.teardown(async () => { await writer.close() })
  const app = await instance({ writer }, 'v1')
  t.teardown(async () => { await app.close() })
  await app.inject('/')
  const deadline = Date.now() + 5000
  while (writer.healthy && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
  const refused = await app.inject('/')
  t.equal(refused.statusCode, 503)
  t.equal(refused.json().code, 'PORTCULLIS_AUDIT_UNAVAILABLE')
})
