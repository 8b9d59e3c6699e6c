import { readFile } from 'node:fs/promises'
import { basename, dirname, resolve } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import { createPrincipal, setPrincipal, type PrincipalType } from '@portcullis/core'
import { MemoryStore } from '@portcullis/rate-limit'
import { PolicyManager, readPolicyFile, type PolicyPublicKey } from '@portcullis/policy'
import { configOfDocument } from './config.js'
import { addChain, readChainFiles, SHADOW_OUTCOME_HEADER } from './standalone.js'

/** What a candidate policy would have decided on recorded traffic, against what was decided. */
export interface PreviewReport {
  /** The candidate's version. */
  version: string
  /** Request records read. */
  records: number
  /** Records judged again by the candidate. */
  replayed: number
  /** Records that cannot be judged again from a redacted record, by why. */
  skipped: { noPrincipal: number, body: number, limits: number }
  /** Replayed records whose decision would change. */
  changed: number
  wouldDeny: number
  wouldAllow: number
  otherReason: number
  /** Changed decisions by route (`GET /orders/:id`) and by principal, most first. */
  routes: Array<[string, number]>
  principals: Array<[string, number]>
  /** Up to 20 of the changes. */
  examples: Array<{ method: string, path: string, principal: string, recorded: string, candidate: string }>
}

interface RequestRecord {
  event: { action: string, reason?: string, type: string[] }
  http: { request: { method: string, body?: { bytes: number, content?: string } } }
  client: { ip: string }
  url: { path: string, query?: string }
  user?: { id: string, roles: string[] }
  portcullis: {
    route: string | null
    principal?: { method: string, type: PrincipalType, scopes: string[], plan?: string, tenant?: string, credential_id?: string }
    decision: { plugin: string, outcome: string, reason: string }
  }
}

const REPLAY_HEADER = 'x-portcullis-replay'
// What a redacted record cannot carry again: credentials (authentication), certificates (mTLS),
// and the timing that limits count.
const NOT_REPLAYED = new Set(['@portcullis/authn', '@portcullis/mtls', '@portcullis/rate-limit'])

/**
 * Judges the requests of audit logs again with a candidate policy, offline: for each request
 * record with a principal, the same method, path, client address and principal (its id, type,
 * roles and scopes, as recorded) go through the candidate's IP rules, authorization and
 * validation, and its decision is compared with the one recorded. Credentials, client
 * certificates and limits cannot be replayed from redacted records: requests decided by them are
 * counted as skipped, and so are requests whose body was not recorded. Nothing is sent upstream.
 */
export async function previewPolicy (candidateFile: string, auditFiles: readonly string[], options: { env?: NodeJS.ProcessEnv, publicKey?: PolicyPublicKey } = {}): Promise<PreviewReport> {
  const path = resolve(candidateFile)
  const dir = dirname(path)
  const replays = new Map<string, RequestRecord>()
  const manager = new PolicyManager<FastifyInstance>({
    ...(options.publicKey === undefined ? {} : { publicKey: options.publicKey }),
    secrets: { baseDir: dir, env: options.env },
    compile: async (checked) => {
      // Authentication and limits are left out; the recorded principal stands in for the first.
      const { authn: _authn, ipRateLimit: _ip, rateLimit: _limits, rateLimitStore: _store, mtls: _mtls, audit: _audit, ...rest } = structuredClone(checked.resolved)
      const valid = configOfDocument(rest, dir)
      const app = Fastify() as unknown as FastifyInstance
      await addChain(app, valid, await readChainFiles(valid), {
        state: { closing: false },
        store: new MemoryStore(),
        version: checked.version,
        purpose: 'shadow',
        onPrincipal: (request, _reply, done) => {
          const record = replays.get(String(request.headers[REPLAY_HEADER])) as RequestRecord
          const principal = record.portcullis.principal as NonNullable<RequestRecord['portcullis']['principal']>
          const user = record.user as NonNullable<RequestRecord['user']>
          setPrincipal(request, createPrincipal({
            id: user.id,
            type: principal.type,
            method: principal.method,
            roles: user.roles,
            scopes: principal.scopes,
            ...(principal.plan === undefined ? {} : { plan: principal.plan }),
            ...(principal.tenant === undefined ? {} : { tenant: principal.tenant })
          }))
          done()
        }
      })
      await app.ready()
      return app
    },
    release: async (app) => { await app.close() }
  })
  const { text, signature } = await readPolicyFile(path, manager.requiresSignature)
  const candidate = await manager.apply(text, { name: basename(path), signature, source: 'preview' })
  const chain = candidate.compiled
  const report: PreviewReport = { version: candidate.version, records: 0, replayed: 0, skipped: { noPrincipal: 0, body: 0, limits: 0 }, changed: 0, wouldDeny: 0, wouldAllow: 0, otherReason: 0, routes: [], principals: [], examples: [] }
  const routes = new Map<string, number>()
  const principals = new Map<string, number>()
  try {
    for (const file of auditFiles) {
      for (const line of (await readFile(file, 'utf8')).split('\n')) {
        if (line === '') continue
        const record = JSON.parse(line) as RequestRecord
        if (record.event.action !== 'http-request') continue
        report.records++
        if (record.user === undefined) {
          report.skipped.noPrincipal++
          continue
        }
        // A record with a principal has authentication's decision at least.
        const decided = record.portcullis.decision
        if (decided.outcome === 'deny' && NOT_REPLAYED.has(decided.plugin)) {
          report.skipped.limits++
          continue
        }
        const body = record.http.request.body
        if (body !== undefined && body.content === undefined) {
          report.skipped.body++
          continue
        }
        const id = String(report.records)
        replays.set(id, record)
        const response = await chain.inject({
          method: record.http.request.method as 'GET',
          url: record.url.query === undefined ? record.url.path : `${record.url.path}?${record.url.query}`,
          headers: { [REPLAY_HEADER]: id, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
          remoteAddress: record.client.ip,
          // The JSON text as the audit log wrote it (redacted fields included).
          ...(body === undefined ? {} : { payload: body.content })
        })
        replays.delete(id)
        report.replayed++
        const recorded = decided.outcome === 'deny' ? `deny ${decided.reason}` : 'allow'
        const judged = String(response.headers[SHADOW_OUTCOME_HEADER])
        if (judged === recorded) continue
        report.changed++
        if (recorded === 'allow') report.wouldDeny++
        else if (judged === 'allow') report.wouldAllow++
        else report.otherReason++
        const route = `${record.http.request.method} ${String(record.portcullis.route)}`
        routes.set(route, (routes.get(route) ?? 0) + 1)
        principals.set(record.user.id, (principals.get(record.user.id) ?? 0) + 1)
        if (report.examples.length < 20) report.examples.push({ method: record.http.request.method, path: record.url.path, principal: record.user.id, recorded, candidate: judged })
      }
    }
  } finally {
    await manager.close()
  }
  const most = (counts: Map<string, number>): Array<[string, number]> => [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
  report.routes = most(routes)
  report.principals = most(principals)
  return report
}
