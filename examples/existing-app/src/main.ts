import { dirname, join } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { FastifyInstance } from 'fastify'
import type { SinkOptions } from '@portcullis/audit-log'
import { loadOrCreateDevIdentity } from '@portcullis/authn'
import { installShutdown, type ShutdownHost } from '@portcullis/gateway'
import { buildApp } from './app.js'
import { DEFAULT_IDENTITY_FILE, IDENTITY_DEFAULTS } from './security.js'

export const DEFAULT_HOST = '127.0.0.1'
export const DEFAULT_PORT = 3100

export interface ExistingAppOptions {
  host?: string
  port?: number
  logger?: boolean
  /** Where the demo token signing key is kept (made on first start). */
  identityFile?: string
  /** The audit log file. @default `audit.log` beside the identity file */
  auditFile?: string
  /** Also write every audit record to stdout. @default false */
  auditToStdout?: boolean
  /** Requests a minute for each principal. @default 60 */
  limitPerMinute?: number
}

export interface ExistingApp {
  app: FastifyInstance
  /** Such as `http://127.0.0.1:3100`. */
  url: string
  identityFile: string
  auditFile: string
  close: () => Promise<void>
}

/** Builds the orders service with Portcullis and starts listening. */
export async function startExistingApp ({ host = DEFAULT_HOST, port = DEFAULT_PORT, logger = false, identityFile = DEFAULT_IDENTITY_FILE, auditFile, auditToStdout = false, limitPerMinute }: ExistingAppOptions = {}): Promise<ExistingApp> {
  const identity = await loadOrCreateDevIdentity(identityFile, IDENTITY_DEFAULTS)
  const file = auditFile ?? join(dirname(identityFile), 'audit.log')
  const auditSinks: SinkOptions[] = [{ type: 'file', path: file }, ...(auditToStdout ? [{ type: 'stdout' as const }] : [])]
  const app = await buildApp({ logger, security: { identity, auditSinks, ...(limitPerMinute === undefined ? {} : { limitPerMinute }) } })
  try {
    const url = await app.listen({ host, port })
    return { app, url, identityFile, auditFile: file, close: async () => { await app.close() } }
  } catch (err) {
    await app.close()
    throw err
  }
}

/**
 * HOST and PORT (default 127.0.0.1:3100), RATE_LIMIT (requests a minute per principal, default
 * 60), AUDIT_FILE (default `.portcullis/audit.log`) and IDENTITY_FILE from the environment.
 */
export function optionsFromEnv (env: NodeJS.ProcessEnv): ExistingAppOptions {
  const { HOST: host = DEFAULT_HOST, PORT: text = String(DEFAULT_PORT), RATE_LIMIT: limit, AUDIT_FILE: auditFile, IDENTITY_FILE: identityFile } = env
  const port = Number(text)
  if (!/^\d+$/.test(text) || port > 65535) throw new Error(`PORT must be an integer from 0 to 65535 (got "${text}")`)
  if (limit !== undefined && !/^[1-9]\d{0,5}$/.test(limit)) throw new Error(`RATE_LIMIT must be a whole number of requests a minute, from 1 (got "${limit}")`)
  return {
    host,
    port,
    ...(limit === undefined ? {} : { limitPerMinute: Number(limit) }),
    ...(auditFile === undefined || auditFile === '' ? {} : { auditFile }),
    ...(identityFile === undefined || identityFile === '' ? {} : { identityFile })
  }
}

/** What a run as a program uses of `process`. */
export interface ProgramHost extends ShutdownHost {
  stdout: { write: (text: string) => unknown }
  stderr: { write: (text: string) => unknown }
  exitCode?: number | string | undefined
}

/** Runs the service as a program: reads the environment, starts, prints what to try, stops on SIGINT or SIGTERM. */
export async function run (env: NodeJS.ProcessEnv, host: ProgramHost): Promise<void> {
  let service: ExistingApp
  try {
    service = await startExistingApp({ ...optionsFromEnv(env), logger: true, auditToStdout: true })
  } catch (err) {
    host.stderr.write(`existing-app: ${(err as Error).message}\n`)
    host.exitCode = 1
    return
  }
  const { url } = service
  host.stdout.write(`Orders service (with Portcullis) listening on ${url}
  try: curl -i ${url}/healthz
       curl -i ${url}/orders                                                   (401: credentials needed)
       curl -i ${url}/orders -H 'x-api-key: demo-warehouse-key-00000000000001'
       TOKEN=$(pnpm -s portcullis token alice --identity ${service.identityFile})
       curl -i ${url}/orders -H "authorization: Bearer $TOKEN"
       curl -i -X DELETE ${url}/orders/1 -H "authorization: Bearer $TOKEN"     (403: admins only)
  audit log: ${service.auditFile} (and stdout)
`)
  installShutdown(service, host)
}

if (import.meta.url === pathToFileURL(String(process.argv[1])).href) await run(process.env, process)
