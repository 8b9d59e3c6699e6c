import { readFile, writeFile } from 'node:fs/promises'
import { basename } from 'node:path'
import { userInfo } from 'node:os'
import { Redis } from 'ioredis'
import { diffPolicies, fleetStatus, formatDiff, formatProblem, isPolicyRejected, parsePolicy, policyVersion, publishedPolicy, publishPolicy, signPolicy } from '@portcullis/policy'
import type { CliIo } from './cli-main.js'
import { checkPolicyFile } from './live.js'
import { previewPolicy } from './preview.js'

/** `portcullis policy <validate|diff|sign> …`; resolves to the exit code. */
export async function policyCommand (args: string[], values: PolicyFlags, io: CliIo, env: NodeJS.ProcessEnv, usage: string): Promise<number> {
  const [sub, ...files] = args
  if (sub === 'validate' && files.length === 1) return await validate(files[0] as string, values['public-key'], io, env)
  if (sub === 'diff' && files.length === 2) return await diff(files[0] as string, files[1] as string, io)
  if (sub === 'sign' && files.length === 1 && values.key !== undefined) return await sign(files[0] as string, values.key, io)
  if (sub === 'publish' && files.length === 1 && values.redis !== undefined) return await publish(files[0] as string, values.redis, values.prefix, io)
  if (sub === 'status' && files.length === 0 && values.redis !== undefined) return await status(values.redis, values.prefix, io)
  if (sub === 'preview' && files.length === 1 && values.from !== undefined) return await preview(files[0] as string, values.from, values['public-key'], io, env)
  io.stderr(`portcullis policy: expected "validate <file>", "diff <file> <file>", "sign <file> --key <private-key.pem>", "publish <file> --redis <url>", "status --redis <url>" or "preview <file> --from <audit-log>"\n\n${usage}`)
  return 2
}

/** The flags the policy commands read. */
export interface PolicyFlags {
  key?: string | undefined
  'public-key'?: string | undefined
  redis?: string | undefined
  prefix?: string | undefined
  from?: string[] | undefined
}

async function preview (file: string, auditFiles: string[], publicKeyFile: string | undefined, io: CliIo, env: NodeJS.ProcessEnv): Promise<number> {
  try {
    const publicKey = publicKeyFile === undefined ? undefined : await readFile(publicKeyFile, 'utf8')
    const report = await previewPolicy(file, auditFiles, { env, ...(publicKey === undefined ? {} : { publicKey }) })
    const { skipped } = report
    io.stdout(`${basename(file)} (version ${report.version}) on ${report.records} recorded requests: ${report.replayed} judged again, ${report.changed} would change (${report.wouldDeny} would be denied, ${report.wouldAllow} allowed, ${report.otherReason} denied for another reason)`)
    io.stdout(`  not judged again: ${skipped.noPrincipal} without a principal (credentials are not recorded), ${skipped.limits} decided by authentication, mTLS or a limit, ${skipped.body} whose body was not recorded`)
    for (const [route, count] of report.routes) io.stdout(`  route ${route}: ${count}`)
    for (const [principal, count] of report.principals) io.stdout(`  principal ${principal}: ${count}`)
    for (const example of report.examples) io.stdout(`  ${example.method} ${example.path} as ${example.principal}: ${example.recorded} → ${example.candidate}`)
    return 0
  } catch (err) {
    if (isPolicyRejected(err)) {
      io.stderr(`${basename(file)}: refused at ${err.stage}`)
      for (const problem of err.problems) io.stderr(`  ${formatProblem(basename(file), problem)}`)
      return 1
    }
    io.stderr(`portcullis policy preview: ${(err as Error).message}`)
    return 1
  }
}

async function withRedis<T> (url: string, run: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, connectTimeout: 2000, retryStrategy: () => null })
  client.on('error', () => {})
  try {
    await client.connect()
    return await run(client)
  } finally {
    client.disconnect()
  }
}

async function publish (file: string, url: string, prefix: string | undefined, io: CliIo): Promise<number> {
  try {
    const text = await readFile(file, 'utf8')
    const signature = await readFile(`${file}.sig`, 'utf8').then((sig) => sig.trim(), () => undefined)
    const published = await withRedis(url, async (client) => await publishPolicy(client, text, { name: basename(file), actor: `cli:${userInfo().username}`, prefix, signature }))
    io.stdout(`published ${file}, version ${published.version}${signature === undefined ? '' : ' (signed)'}: every instance that follows ${redactUrl(url)} applies it now; see portcullis policy status`)
    return 0
  } catch (err) {
    io.stderr(`portcullis policy publish: ${(err as Error).message}`)
    return 1
  }
}

async function status (url: string, prefix: string | undefined, io: CliIo): Promise<number> {
  try {
    const [published, fleet] = await withRedis(url, async (client) => await Promise.all([publishedPolicy(client, prefix), fleetStatus(client, prefix)]))
    io.stdout(`published: ${published === null ? 'none' : `${published.version} at ${published.publishedAt}${published.actor === undefined ? '' : ` by ${published.actor}`}`}`)
    for (const instance of fleet) {
      const refused = instance.refused === undefined ? '' : `  refused ${String(instance.refused.version)}: ${instance.refused.reason}`
      io.stdout(`  ${instance.instance}  ${String(instance.version)}${published !== null && instance.version !== published.version ? '  (behind)' : ''}${refused}`)
    }
    if (fleet.length === 0) io.stdout('  no instance reports')
    return published !== null && fleet.some((instance) => instance.version !== published.version) ? 3 : 0
  } catch (err) {
    io.stderr(`portcullis policy status: ${(err as Error).message}`)
    return 1
  }
}

// A Redis URL may hold a password: only its host is ever printed (it connected, so it parses).
function redactUrl (url: string): string {
  return `redis at ${new URL(url).host}`
}

async function validate (file: string, publicKeyFile: string | undefined, io: CliIo, env: NodeJS.ProcessEnv): Promise<number> {
  try {
    const publicKey = publicKeyFile === undefined ? undefined : await readFile(publicKeyFile, 'utf8')
    const checked = await checkPolicyFile(file, { env, ...(publicKey === undefined ? {} : { publicKey }) })
    io.stdout(`${checked.name}: valid, version ${checked.version}`)
    for (const warning of checked.warnings) io.stdout(`  warning ${formatProblem(checked.name, warning)}`)
    return 0
  } catch (err) {
    if (!isPolicyRejected(err)) {
      io.stderr(`portcullis policy validate: ${(err as Error).message}`)
      return 1
    }
    io.stderr(`${basename(file)}: refused at ${err.stage}`)
    for (const problem of err.problems) io.stderr(`  ${formatProblem(basename(file), problem)}`)
    return 1
  }
}

async function diff (before: string, after: string, io: CliIo): Promise<number> {
  try {
    const [a, b] = await Promise.all([before, after].map(async (file) => parsePolicy(await readFile(file, 'utf8'), basename(file))))
    const from = a as ReturnType<typeof parsePolicy>
    const to = b as ReturnType<typeof parsePolicy>
    io.stdout(`${from.name} (version ${policyVersion(from.data)}) → ${to.name} (version ${policyVersion(to.data)})`)
    io.stdout(formatDiff(diffPolicies(from.data, to.data)))
    return 0
  } catch (err) {
    io.stderr(`portcullis policy diff: ${(err as Error).message}`)
    return 1
  }
}

async function sign (file: string, keyFile: string, io: CliIo): Promise<number> {
  try {
    const text = await readFile(file)
    const signature = signPolicy(text, await readFile(keyFile, 'utf8'))
    await writeFile(`${file}.sig`, `${signature}\n`)
    io.stdout(`signed ${file} (version ${policyVersion(parsePolicy(text.toString('utf8'), basename(file)).data)}): ${file}.sig`)
    return 0
  } catch (err) {
    io.stderr(`portcullis policy sign: ${(err as Error).message}`)
    return 1
  }
}
