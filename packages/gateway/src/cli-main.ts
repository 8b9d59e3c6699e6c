import { parseArgs } from 'node:util'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import { readFile } from 'node:fs/promises'
import { verifyAuditFiles, type VerifyReport } from '@portcullis/audit-log'
import { loadDevIdentity, signDevToken } from '@portcullis/authn'
import { basename } from 'node:path'
import { formatProblem, isPolicyRejected } from '@portcullis/policy'
import { policyCommand } from './cli-policy.js'
import type { AdminOptions } from './admin.js'
import { startPolicyGateway } from './live.js'
import { VERSION } from './version.js'

export interface CliIo {
  stdout: (line: string) => void
  stderr: (line: string) => void
  /** Called with the gateway once it listens, so the caller can arrange its shutdown. */
  onListening?: (app: FastifyInstance, url: string) => void
  /**
   * The gateway's request log (Fastify `logger` option).
   * @default { level: 'info' }
   */
  logger?: FastifyServerOptions['logger']
}

export const USAGE = `Usage: portcullis <command> [options]

Commands:
  start <policy-file>   Start the standalone gateway from a YAML or JSON policy document, and
                        apply every change to the file that passes validation, without a
                        restart. Options: --host <address>, --port <number>, --public-key <file>
                        (only documents signed by this key, in <policy-file>.sig, are taken),
                        --redis <url> [--prefix <p>] (follow the fleet's version published there),
                        --admin <host:port> (the admin API, with the token in PORTCULLIS_ADMIN_TOKEN)
  policy validate <file>
                        Check a policy document as an update would (parse, signature, schema,
                        secrets, lint, compile); print each fault with its line and column.
                        Options: --public-key <file>
  policy diff <a> <b>   What changed from one policy document to another, by route and rule
  policy sign <file> --key <private-key.pem>
                        Write the detached signature <file>.sig (Ed25519, EC or RSA)
  policy publish <file> --redis <url> [--prefix <p>]
                        Make a document (and its <file>.sig) the version of every gateway
                        started with the same --redis and --prefix
  policy preview <file> --from <audit-log> [--from <audit-log>…]
                        Judge the requests of audit logs again with a candidate document, offline:
                        how many decisions would change, on which routes and principals
  policy status --redis <url> [--prefix <p>]
                        The published version and the one each instance runs (exit 3 while
                        any instance runs another)
  token <principal>     Print a bearer token for a principal of a development identity, such as
                        the quickstart's alice or bob. Options: --identity <file> (or the
                        PORTCULLIS_DEV_IDENTITY variable), --ttl <seconds> (default 3600)
  audit verify <file>…  Check a hash-chained audit log: every record intact and in order, across
                        rotated files given oldest first. Options: --key <file> (the public key,
                        PEM, that checks signed checkpoints)
  help                  Show this help

Options:
  -h, --help            Show this help
  -v, --version         Show the version

Environment: HOST and PORT override server.host and server.port; --host and --port override both.
Exit codes: 0 success, 1 the gateway could not start (or the audit log does not verify), 2 wrong usage.`

/** Runs the `portcullis` command; resolves to the exit code (the gateway keeps running after `start`). */
export async function main (argv: readonly string[], io: CliIo, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
        host: { type: 'string' },
        port: { type: 'string' },
        identity: { type: 'string' },
        ttl: { type: 'string' },
        key: { type: 'string' },
        'public-key': { type: 'string' },
        redis: { type: 'string' },
        prefix: { type: 'string' },
        admin: { type: 'string' },
        from: { type: 'string', multiple: true }
      }
    })
  } catch (err) {
    io.stderr(`portcullis: ${(err as Error).message}\n\n${USAGE}`)
    return 2
  }
  const { values, positionals } = parsed
  const [command, ...rest] = positionals
  if (values.version === true) {
    io.stdout(VERSION)
    return 0
  }
  if (values.help === true || command === undefined || command === 'help') {
    io.stdout(USAGE)
    return 0
  }
  if (command === 'token') {
    if (rest.length !== 1) {
      io.stderr(`portcullis token: expected one principal name, got ${rest.length}\n\n${USAGE}`)
      return 2
    }
    return await token(rest[0] as string, values.identity ?? env.PORTCULLIS_DEV_IDENTITY, values.ttl, io)
  }
  if (command === 'audit') {
    const [sub, ...files] = rest
    if (sub !== 'verify' || files.length === 0) {
      io.stderr(`portcullis audit: expected "verify" and one or more audit log files\n\n${USAGE}`)
      return 2
    }
    return await verify(files, values.key, io)
  }
  if (command === 'policy') return await policyCommand(rest, values, io, env, USAGE)
  if (command !== 'start') {
    io.stderr(`portcullis: unknown command "${command}"\n\n${USAGE}`)
    return 2
  }
  if (rest.length !== 1) {
    io.stderr(`portcullis start: expected one configuration file, got ${rest.length}\n\n${USAGE}`)
    return 2
  }
  return await start(rest[0] as string, { host: values.host ?? env.HOST, port: values.port ?? env.PORT, publicKeyFile: values['public-key'], redis: values.redis, prefix: values.prefix, admin: values.admin }, io, env)
}

async function token (name: string, identityFile: string | undefined, ttl: string | undefined, io: CliIo): Promise<number> {
  if (identityFile === undefined) {
    io.stderr('portcullis token: no development identity; pass --identity <file> or set PORTCULLIS_DEV_IDENTITY (the quickstart creates one when it first starts)')
    return 2
  }
  try {
    const identity = await loadDevIdentity(identityFile)
    io.stdout(signDevToken(identity, name, ttl === undefined ? undefined : Number(ttl)))
    return 0
  } catch (err) {
    io.stderr(`portcullis token: ${(err as Error).message}`)
    return 1
  }
}

async function verify (files: string[], keyFile: string | undefined, io: CliIo): Promise<number> {
  let report: VerifyReport
  try {
    const publicKey = keyFile === undefined ? undefined : await readFile(keyFile, 'utf8')
    report = await verifyAuditFiles(files, publicKey === undefined ? {} : { publicKey })
  } catch (err) {
    io.stderr(`portcullis audit verify: ${(err as Error).message}`)
    return 1
  }
  const { problem } = report
  if (problem !== null) {
    io.stderr(`portcullis audit verify: ${problem.file as string}:${problem.line}: ${problem.message} (${report.records} records before it are intact)`)
    return 1
  }
  const range = report.records === 0 ? 'no records' : `${report.records} records, sequence ${String(report.firstSequence)} to ${String(report.lastSequence)}`
  const checkpoints = keyFile === undefined
    ? `${report.checkpoints} checkpoints (signatures not checked: pass --key)`
    : `${report.verifiedCheckpoints} signed checkpoints verified`
  io.stdout(`portcullis audit verify: intact: ${range}; ${checkpoints}`)
  if (report.continues) io.stdout('  the first record continues a chain from an earlier file')
  for (const restart of report.restarts) io.stdout(`  a new chain begins at ${restart.file as string}:${restart.line}`)
  if (report.afterLastCheckpoint > 0 && report.checkpoints > 0) io.stdout(`  ${report.afterLastCheckpoint} records after the last checkpoint`)
  return 0
}

interface StartFlags {
  host: string | undefined
  port: string | undefined
  publicKeyFile: string | undefined
  redis: string | undefined
  prefix: string | undefined
  admin: string | undefined
}

async function start (file: string, { host, port, publicKeyFile, redis, prefix, admin }: StartFlags, io: CliIo, env: NodeJS.ProcessEnv): Promise<number> {
  try {
    if (port !== undefined && (!/^\d{1,5}$/.test(port) || Number(port) > 65535)) throw new Error(`port must be an integer from 0 to 65535 (got "${port}")`)
    const publicKey = publicKeyFile === undefined ? undefined : await readFile(publicKeyFile, 'utf8')
    const gateway = await startPolicyGateway({
      file,
      env,
      ...(host === undefined ? {} : { host }),
      ...(port === undefined ? {} : { port: Number(port) }),
      ...(publicKey === undefined ? {} : { publicKey }),
      ...(redis === undefined ? {} : { redis: { url: redis, prefix } }),
      ...(admin === undefined ? {} : { admin: adminOf(admin, env) }),
      serverOptions: { logger: io.logger ?? { level: 'info' } }
    })
    let url: string
    try {
      url = await gateway.listen()
    } catch (err) {
      await gateway.close()
      throw err
    }
    io.stdout(`portcullis: gateway listening on ${url} (policy version ${String(gateway.policy.active?.version)}, watching ${file})`)
    const adminUrl = gateway.adminUrl()
    if (adminUrl !== null) io.stdout(`portcullis: admin API on ${adminUrl}`)
    io.onListening?.(gateway.app, url)
    return 0
  } catch (err) {
    if (isPolicyRejected(err)) {
      io.stderr(`portcullis start: ${file} refused at ${err.stage}`)
      for (const problem of err.problems) io.stderr(`  ${formatProblem(basename(file), problem)}`)
      return 1
    }
    const code = (err as { code?: unknown }).code
    io.stderr(`portcullis start: ${(err as Error).message}${typeof code === 'string' ? ` [${code}]` : ''}`)
    return 1
  }
}

// --admin host:port, the token from PORTCULLIS_ADMIN_TOKEN (never a flag: flags show in ps).
function adminOf (address: string, env: NodeJS.ProcessEnv): AdminOptions {
  const match = /^(.+):(\d{1,5})$/.exec(address)
  if (match === null || Number(match[2]) > 65535) throw new Error(`--admin must be host:port, such as 127.0.0.1:9901 (got "${address}")`)
  const token = env.PORTCULLIS_ADMIN_TOKEN
  if (token === undefined || token === '') throw new Error('--admin needs the admin token in the PORTCULLIS_ADMIN_TOKEN environment variable')
  return { host: (match[1] as string).replace(/^\[(.*)\]$/, '$1'), port: Number(match[2]), token }
}
