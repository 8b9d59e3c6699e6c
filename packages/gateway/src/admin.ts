import { createHash, timingSafeEqual } from 'node:crypto'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import { checkKnownKeys, invalidOption, portcullisCore, withHeaders, withViolations } from '@portcullis/core'
import { diffPolicies, formatDiff, isPolicyRejected, type ActivePolicy, type PolicyManager, type PolicyMode } from '@portcullis/policy'
import { AdminBadRequest, AdminConflict, AdminNotFound, AdminUnauthorized } from './errors.js'
import type { Generation } from './generation.js'
import type { TrialStats } from './trial.js'

/** The admin API: where operators read and change the policy of a running gateway. */
export interface AdminOptions {
  /** @default '127.0.0.1' */
  host?: string
  /** A port of its own: the admin API is never served on the gateway's listener. */
  port: number
  /**
   * The bearer token callers send (`Authorization: Bearer …`), at least 32 characters; give it
   * as a reference in configuration (`env:PORTCULLIS_ADMIN_TOKEN`). Compared in constant time.
   */
  token?: string
  /**
   * Listen with TLS and ask callers for a certificate from `clientCa` (PEM): mutual TLS instead
   * of, or besides, the token.
   */
  tls?: { key: string | Buffer, cert: string | Buffer, clientCa: string | Buffer }
}

const MIN_TOKEN_LENGTH = 32
const MAX_DOCUMENT_BYTES = 4 * 1024 * 1024

/** Checks the admin options once, at startup. */
export function checkAdminOptions (input: unknown): AdminOptions {
  const options = checkKnownKeys(input, ['host', 'port', 'token', 'tls'], 'admin') as unknown as AdminOptions
  if (options.host !== undefined && (typeof options.host !== 'string' || options.host === '')) throw invalidOption('admin.host', 'a host name or IP address', options.host)
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) throw invalidOption('admin.port', 'an integer from 0 to 65535', options.port)
  // Never part of a message: it is a secret.
  if (options.token !== undefined && (typeof options.token !== 'string' || options.token.length < MIN_TOKEN_LENGTH)) throw invalidOption('admin.token', `a random string of at least ${MIN_TOKEN_LENGTH} characters`)
  if (options.tls !== undefined) {
    const tls = checkKnownKeys(options.tls, ['key', 'cert', 'clientCa'], 'admin.tls')
    for (const name of ['key', 'cert', 'clientCa']) {
      if (typeof tls[name] !== 'string' && !Buffer.isBuffer(tls[name])) throw invalidOption(`admin.tls.${name}`, 'PEM text')
    }
  }
  if (options.token === undefined && options.tls === undefined) throw invalidOption('admin', 'authenticated: a token, or tls with a clientCa that callers\' certificates must chain to')
  return options
}

interface StagedDocument { text: string, signature?: string, version: string, data: Record<string, unknown> }

/**
 * Builds the admin API (not listening yet): read the active policy, its history and diffs; stage
 * a candidate; activate it (enforce, shadow or canary), promote it, or roll back. Every change
 * goes through the same pipeline as a file update and is audited with the caller as actor.
 */
export async function buildAdminApi (policy: PolicyManager<Generation>, trialStats: () => TrialStats, input: AdminOptions, logger: FastifyInstance['log']): Promise<FastifyInstance> {
  const options = checkAdminOptions(input)
  const app = Fastify({
    loggerInstance: logger.child({ admin: true }),
    bodyLimit: MAX_DOCUMENT_BYTES,
    ...(options.tls === undefined ? {} : { https: { key: options.tls.key, cert: options.tls.cert, ca: options.tls.clientCa, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' as const } })
  }) as unknown as FastifyInstance
  await app.register(portcullisCore, { requestIdHeader: 'x-request-id' })
  // A policy document is text: YAML or JSON, as written, so that its signature still holds.
  app.addContentTypeParser(['application/yaml', 'application/x-yaml', 'text/yaml', 'text/plain', 'application/json'], { parseAs: 'string' }, (request, body, done) => {
    done(null, request.url.startsWith('/policy/candidate') ? body : parseJsonBody(body as string))
  })
  const expected = options.token === undefined ? null : digest(options.token)
  app.addHook('onRequest', async (request) => {
    // With mutual TLS, the handshake already refused callers without a certificate from clientCa.
    if (expected === null) return
    const header = request.headers.authorization
    const given = typeof header === 'string' && header.startsWith('Bearer ') ? header.slice(7) : ''
    if (!timingSafeEqual(digest(given), expected)) throw withHeaders(new AdminUnauthorized(), { 'www-authenticate': 'Bearer realm="portcullis-admin"' })
  })
  let staged: StagedDocument | null = null
  const actor = (request: FastifyRequest): string => {
    const socket = request.raw.socket as { getPeerCertificate?: () => { subject?: { CN?: string } } }
    const cn = socket.getPeerCertificate?.().subject?.CN
    return `admin-api${cn === undefined ? '' : `:${cn}`}`
  }

  // The gateway has an active version from before its admin API listens until after it closes.
  const active = (): ActivePolicy<Generation> => policy.active as ActivePolicy<Generation>
  app.get('/policy', async () => {
    const { version, source, activatedAt, warnings } = active()
    const candidate = policy.candidate
    return {
      version,
      source,
      activatedAt,
      warnings,
      candidate: candidate === null ? null : { version: candidate.version, mode: candidate.mode, share: candidate.share, activatedAt: candidate.activatedAt },
      staged: staged === null ? null : { version: staged.version }
    }
  })
  app.get('/policy/history', async () => ({ versions: policy.history() }))
  app.get<{ Params: { version: string } }>('/policy/versions/:version', async (request, reply) => {
    const text = staged?.version === request.params.version ? staged.text : policy.document(request.params.version)?.text
    if (text === undefined) throw new AdminNotFound(request.params.version)
    return await reply.type('text/plain; charset=utf-8').send(text)
  })
  app.get<{ Querystring: { from?: string, to?: string } }>('/policy/diff', async (request) => {
    const from = request.query.from ?? active().version
    const to = request.query.to ?? policy.candidate?.version ?? staged?.version
    if (from === undefined || to === undefined) throw new AdminBadRequest('from and to name kept versions (to defaults to the candidate or the staged document)')
    const [a, b] = [documentOf(from), documentOf(to)]
    const changes = diffPolicies(a, b)
    return { from, to, changes, text: formatDiff(changes) }
  })
  app.get('/policy/trial', async () => trialStats())

  app.put('/policy/candidate', async (request, reply) => {
    if (typeof request.body !== 'string') throw new AdminBadRequest('the body is the policy document, as YAML or JSON text (content-type application/yaml or application/json)')
    const signature = request.headers['x-policy-signature']
    const checked = await refusing(async () => await policy.check(request.body as string, { name: 'candidate', ...(typeof signature === 'string' ? { signature } : {}) }))
    staged = { text: request.body, version: checked.version, data: checked.data, ...(typeof signature === 'string' ? { signature } : {}) }
    return await reply.code(201).send({ version: checked.version, warnings: checked.warnings, diff: formatDiff(diffPolicies(active().data, checked.data)) })
  })
  app.post<{ Body: { version?: unknown, mode?: unknown, share?: unknown } | undefined }>('/policy/activate', async (request) => {
    const { version, mode = 'enforce', share } = request.body ?? {}
    if (mode !== 'enforce' && mode !== 'shadow' && mode !== 'canary') throw new AdminBadRequest('mode must be one of enforce, shadow, canary')
    if (share !== undefined && (typeof share !== 'number' || mode !== 'canary')) throw new AdminBadRequest('share is a number, with mode canary')
    const source = staged !== null && (version === undefined || version === staged.version) ? staged : null
    if (source === null && version !== undefined && typeof version === 'string' && policy.document(version) !== undefined && mode === 'enforce') {
      return summary(await refusing(async () => await policy.rollback(version, { source: 'admin-api', actor: actor(request) })))
    }
    if (source === null) throw new AdminConflict(version === undefined ? 'no candidate is staged: PUT /policy/candidate first' : `version ${String(version)} is neither staged nor kept`)
    const rollout = { mode: mode as PolicyMode, ...(share === undefined ? {} : { share: share as number }) }
    const result = await refusing(async () => await policy.apply(source.text, { name: 'candidate', source: 'admin-api', actor: actor(request), ...(source.signature === undefined ? {} : { signature: source.signature }) }, rollout))
    staged = null
    return summary(result)
  })
  app.post('/policy/promote', async (request) => {
    if (policy.candidate === null) throw new AdminConflict('no version is in shadow or canary mode')
    return summary(await refusing(async () => await policy.promote({ source: 'admin-api', actor: actor(request) })))
  })
  app.post<{ Body: { version?: unknown } | undefined }>('/policy/rollback', async (request) => {
    const version = request.body?.version
    if (version !== undefined && typeof version !== 'string') throw new AdminBadRequest('version names a kept version')
    if (version !== undefined && policy.document(version) === undefined) throw new AdminNotFound(version)
    if (version === undefined && policy.candidate === null && policy.history().length < 2) throw new AdminConflict('there is no earlier version to roll back to')
    return summary(await refusing(async () => await policy.rollback(version, { source: 'admin-api', actor: actor(request) })))
  })

  // What a change made: the version it put in force, how, and the version that is active now.
  function summary (result: { version: string, mode?: PolicyMode }): { version: string, mode: PolicyMode, active: string } {
    return { version: result.version, mode: result.mode ?? 'enforce', active: active().version }
  }

  function documentOf (version: string): Record<string, unknown> {
    if (staged?.version === version) return staged.data
    const document = policy.document(version)
    if (document === undefined) throw new AdminNotFound(version)
    return document.data
  }
  return app
}

// A refused document is 422 with every problem, each with its pointer and place in the text.
async function refusing<T> (run: () => Promise<T>): Promise<T> {
  try {
    return await run()
  } catch (err) {
    if (isPolicyRejected(err)) {
      throw withViolations(err, err.problems.map((problem) => ({
        in: 'body',
        pointer: problem.pointer,
        rule: problem.rule ?? problem.stage,
        // Every problem has its place: the document parsed, or its parser said where it stopped.
        message: `line ${String(problem.line)}, column ${String(problem.column)}: ${problem.message}`
      })))
    }
    // Anything else is the manager's own refusal (no such version, a bad share), which names what was wrong.
    throw new AdminBadRequest((err as Error).message)
  }
}

function parseJsonBody (body: string): unknown {
  if (body === '') return undefined
  try {
    return JSON.parse(body)
  } catch {
    throw new AdminBadRequest('the body is not JSON')
  }
}

function digest (text: string): Buffer {
  return createHash('sha256').update(text).digest()
}
