import { test } from 'tap'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'

// The published executable, from the built package: what `npx portcullis` and `pnpm portcullis` run.
const bin = fileURLToPath(new URL('../packages/gateway/bin/portcullis.js', import.meta.url))
const run = promisify(execFile)

test('the installed portcullis command answers --help and --version', async (t) => {
  const help = await run(process.execPath, [bin, '--help'])
  t.match(help.stdout, /^Usage: portcullis <command>/)
  t.match(help.stdout, 'start <policy-file>')
  const version = await run(process.execPath, [bin, '--version'])
  t.match(version.stdout, /^\d+\.\d+\.\d+\n$/)
  await t.rejects(run(process.execPath, [bin, 'bogus']), { code: 2 })
})
