import { readFile, writeFile } from 'node:fs/promises'
import { basename } from 'node:path'
import { diffPolicies, formatDiff, formatProblem, isPolicyRejected, parsePolicy, policyVersion, signPolicy } from '@portcullis/policy'
import type { CliIo } from './cli-main.js'
import { checkPolicyFile } from './live.js'

/** `portcullis policy <validate|diff|sign> …`; resolves to the exit code. */
export async function policyCommand (args: string[], values: { key?: string | undefined, 'public-key'?: string | undefined }, io: CliIo, env: NodeJS.ProcessEnv, usage: string): Promise<number> {
  const [sub, ...files] = args
  if (sub === 'validate' && files.length === 1) return await validate(files[0] as string, values['public-key'], io, env)
  if (sub === 'diff' && files.length === 2) return await diff(files[0] as string, files[1] as string, io)
  if (sub === 'sign' && files.length === 1 && values.key !== undefined) return await sign(files[0] as string, values.key, io)
  io.stderr(`portcullis policy: expected "validate <file>", "diff <file> <file>" or "sign <file> --key <private-key.pem>"\n\n${usage}`)
  return 2
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
