// Writes docs/reference/errors.md from the error catalogs of the built packages, so the reference
// lists exactly the codes the code can answer with. `--check` fails instead when the file is stale.
import { readFile, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

const target = fileURLToPath(new URL('../docs/reference/errors.md', import.meta.url))

export async function render () {
  // Loading a package defines its errors; core's catalog then lists every code of the process.
  const core = await import('@portcullis/core')
  await import('@portcullis/gateway')
  await import('@portcullis/authn')
  await import('@portcullis/authz')
  await import('@portcullis/mtls')
  await import('@portcullis/audit-log')
  await import('@portcullis/rate-limit')
  await import('@portcullis/policy')
  const rows = core.errorCatalog()
    .filter((entry) => !entry.code.startsWith('PORTCULLIS_TEST_'))
    .map((entry) => `| \`${entry.code}\` | ${entry.statusCode} | ${entry.title} | ${entry.message.replaceAll('%s', '…').replaceAll('|', '\\|')} |`)
  return `# Error codes

Every rejection is an \`application/problem+json\` body (RFC 9457) whose \`code\` is one of these.
Codes are stable: a code never changes meaning, and a removed code is never reused. The \`type\` of
a problem is the configured \`problemTypeBase\` (default \`urn:portcullis:problem:\`) followed by the
code. \`PORTCULLIS_CORE_CLIENT_ERROR\` keeps the 4xx status of the error it stands for;
\`PORTCULLIS_CORE_INVALID_OPTION\` is never sent to a client: it fails startup on bad configuration.

This page is generated from the packages' error definitions by \`pnpm docs:errors\`.

| code | status | title | detail |
|---|---|---|---|
${rows.join('\n')}
`
}

const text = await render()
if (process.argv.includes('--check')) {
  const current = await readFile(target, 'utf8').catch(() => '')
  if (current !== text) {
    console.error('docs/reference/errors.md is out of date: run pnpm docs:errors')
    process.exit(1)
  }
} else {
  await writeFile(target, text)
}
