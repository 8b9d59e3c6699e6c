import { test } from 'tap'
import { execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { setTimeout as sleep } from 'node:timers/promises'
import { listeningUrl } from '../../../test/helpers/child.js'
import { getJson } from '../../../test/helpers/https.js'
import { optionsFromEnv, startMtlsExample } from '../src/main.js'

// What the README's curl commands do, with Node's https client.
async function curl (url: string, certs: string, client?: string): Promise<{ status: number, body: any }> {
  const ca = await readFile(join(certs, 'ca.crt'))
  if (client === undefined) return await getJson(url, { ca })
  return await getJson(url, { ca, cert: await readFile(join(certs, `${client}.crt`)), key: await readFile(join(certs, `${client}.key`)) })
}

test('the README\'s requests: who gets through, and the problem each of the others gets', async (t) => {
  const certs = t.testdir()
  const example = await startMtlsExample({ port: 0, certs })
  t.teardown(example.close)
  const api = `${example.url}/api/inventory`

  const ok = await curl(api, certs, 'orders')
  t.same([ok.status, ok.body.items.length], [200, 2])
  t.same((await curl(`${api}/whoami`, certs, 'orders')).body, { caller: 'spiffe://demo.example/ns/edge/sa/gateway' }, 'the inventory API sees the gateway\'s certificate')
  const refused: Array<[string | undefined, number, string]> = [
    [undefined, 401, 'PORTCULLIS_MTLS_CERTIFICATE_REQUIRED'],
    ['expired', 401, 'PORTCULLIS_MTLS_CERTIFICATE_EXPIRED'],
    ['revoked', 401, 'PORTCULLIS_MTLS_CERTIFICATE_REVOKED'],
    ['impostor', 401, 'PORTCULLIS_MTLS_CERTIFICATE_INVALID'],
    ['reports', 403, 'PORTCULLIS_AUTHZ_FORBIDDEN']
  ]
  for (const [client, status, code] of refused) {
    const res = await curl(api, certs, client)
    t.same([res.status, res.body.code], [status, code], client ?? 'no certificate')
  }
  t.equal((await curl(`${example.url}/healthz`, certs)).status, 200)
  // Around the gateway, the inventory API answers no one else's certificate.
  t.same(await curl(`${example.inventoryUrl}/inventory`, certs, 'orders'), { status: 403, body: { error: 'only the gateway may call the inventory API' } })
  t.equal((await curl(`${example.inventoryUrl}/inventory`, certs)).status, 401)
  const port = Number(new URL(example.url).port)
  await t.rejects(startMtlsExample({ port, certs }), { code: 'EADDRINUSE' }, 'a port in use fails the start, and leaves nothing running')
})

test('revoking a certificate takes effect without a restart', async (t) => {
  const certs = t.testdir()
  const example = await startMtlsExample({ port: 0, certs })
  t.teardown(example.close)
  const api = `${example.url}/api/inventory`
  t.equal((await curl(api, certs, 'orders')).status, 200)
  const openssl = async (...args: string[]): Promise<unknown> => await promisify(execFile)('openssl', args, { cwd: certs })
  await openssl('ca', '-batch', '-config', 'ca.cnf', '-revoke', 'orders.crt')
  await openssl('ca', '-batch', '-config', 'ca.cnf', '-gencrl', '-out', 'ca.crl.new')
  await writeFile(join(certs, 'ca.crl'), await readFile(join(certs, 'ca.crl.new')))
  let status = 200
  for (let i = 0; i < 100 && status === 200; i++) {
    await sleep(100)
    status = (await curl(api, certs, 'orders')).status
  }
  t.equal(status, 401)
})

test('the example runs as a program, making its certificates on first start', async (t) => {
  const certs = t.testdir()
  const main = fileURLToPath(new URL('../src/main.ts', import.meta.url))
  const child = spawn(process.execPath, [...process.execArgv, main], { env: { ...process.env, PORT: '0', CERTS: certs }, stdio: ['ignore', 'pipe', 'ignore'] })
  const { url, output } = await listeningUrl(child)
  t.match(output, `--cert ${certs}/orders.crt --key ${certs}/orders.key ${url}/api/inventory`)
  t.equal((await curl(`${url}/api/inventory`, certs, 'orders')).status, 200)
  child.kill('SIGTERM')
  t.equal((await once(child, 'exit'))[0], 0)

  const bad = spawn(process.execPath, [...process.execArgv, main], { env: { ...process.env, PORT: 'https', CERTS: certs }, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  bad.stderr.setEncoding('utf8')
  bad.stderr.on('data', (chunk: string) => { stderr += chunk })
  t.equal((await once(bad, 'exit'))[0], 1)
  t.match(stderr, 'mtls example: PORT must be an integer from 0 to 65535 (got "https")')
})

test('PORT and CERTS come from the environment', async (t) => {
  t.match(optionsFromEnv({}), { port: 8443, certs: /examples\/mtls\/certs$/ })
  t.same(optionsFromEnv({ PORT: '9443', CERTS: '/tmp/c' }), { port: 9443, certs: '/tmp/c' })
  t.throws(() => optionsFromEnv({ PORT: '70000' }), /PORT must be an integer/)
})
