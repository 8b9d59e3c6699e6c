// Type tests, checked by `pnpm typecheck`: each @ts-expect-error must be an error, or the check fails.
import Fastify from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { portcullisAuditLog, verifyAuditLines, type AuditLogOptions, type VerifyReport } from '../src/index.js'

const app = Fastify()
app.register(portcullisCore)
app.register(portcullisAuditLog, { sinks: [{ type: 'file', path: 'audit.log', maxSize: 1 << 20 }, { type: 'http', url: 'https://collector.example/ingest' }], chain: { signingKey: 'PEM' } })
// @ts-expect-error a file sink needs its path
const noPath: AuditLogOptions = { sinks: [{ type: 'file' }] }
// @ts-expect-error sinks are of known types
const syslog: AuditLogOptions = { sinks: [{ type: 'syslog' }] }
// @ts-expect-error onSinkFailure is drop or refuse
const block: AuditLogOptions = { onSinkFailure: 'block' }

app.get('/healthz', { config: { audit: false } }, async () => 'ok')
app.get('/orders', { config: { audit: { sample: 0.1, body: true } } }, async () => 'ok')

app.audit.policyChange({ action: 'activate', version: 'v2', previousVersion: 'v1' })
// @ts-expect-error policy actions are activate, reject and rollback
app.audit.policyChange({ action: 'delete', version: 'v2', previousVersion: 'v1' })
const dropped: number = app.audit.stats().dropped
const report: VerifyReport = verifyAuditLines([])
const ok: boolean = report.ok
export { noPath, syslog, block, dropped, ok }
