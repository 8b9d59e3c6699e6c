import { test } from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { listeningUrl } from '../../../test/helpers/child.js'
import { ACME_API_KEY } from '../src/identities.js'
import { call, policyCopy } from './helpers.js'

const acme = { 'x-api-key': ACME_API_KEY }
const main = fileURLToPath(new URL('../src/main.ts', import.meta.url))

test('run as a program: the services and the gateway on the ports of the environment, a clean stop on SIGTERM', async (t) => {
  const dir = t.testdir()
  const policyFile = await policyCopy(dir)
  const env = { ...process.env, HOST: '127.0.0.1', PORT: '0', ORDERS_PORT: '0', CATALOG_PORT: '0', POLICY_FILE: policyFile, IDENTITY_FILE: join(dir, 'id.json') }
  const child = spawn(process.execPath, [...process.execArgv, main], { env, stdio: ['ignore', 'pipe', 'ignore'], detached: true })
  t.teardown(() => { try { process.kill(-(child.pid as number), 'SIGKILL') } catch {} })
  const { url, output } = await listeningUrl(child)
  t.match(output, `policy: ${policyFile}, version `)
  t.match(output, `curl -i ${url}/api/orders -H 'x-api-key: ${ACME_API_KEY}'`)
  t.match(output, `pnpm -s portcullis token alice --identity ${join(dir, 'id.json')}`)
  t.match(output, `audit log: ${join(dir, '.portcullis', 'audit.log')}`)
  const ordersUrl = /orders (http:\/\/\S+) under \/api/.exec(output)?.[1] as string
  t.equal((await call(`${ordersUrl}/orders`)).status, 200, 'the orders service listens on its own port')
  t.equal((await call(`${url}/api/orders`, { headers: acme })).status, 200, 'and the gateway in front of it')
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  t.equal((await exited)[0], 0)
})
