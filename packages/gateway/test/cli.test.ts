import { test } from 'tap'
import { spawn } from 'node:child_process'
import { listeningUrl } from '../../../test/helpers/child.js'
import { once } from 'node:events'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import { main, USAGE } from '../src/cli-main.js'
import Fastify from 'fastify'
import { devJwtMethod, loadOrCreateDevIdentity } from '@portcullis/authn'
import { installShutdown, portcullis } from '../src/index.js'

function io () {
  const out: string[] = []
  const err: string[] = []
  let listening: { app: FastifyInstance, url: string } | undefined
  return {
    out,
    err,
    get listening () { return listening },
    io: {
      stdout: (line: string) => { out.push(line) },
      stderr: (line: string) => { err.push(line) },
      onListening: (app: FastifyInstance, url: string) => { listening = { app, url } },
      logger: false
    }
  }
}

async function configFile (content: string, name = 'gateway.yaml'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-cli-'))
  const file = join(dir, name)
  await writeFile(file, content)
  return file
}

test('help and version', async (t) => {
  for (const argv of [[], ['--help'], ['-h'], ['help']]) {
    const run = io()
    t.equal(await main(argv, run.io, {}), 0)
    t.same(run.out, [USAGE])
  }
  const run = io()
  t.equal(await main(['--version'], run.io, {}), 0)
  t.match(run.out[0], /^\d+\.\d+\.\d+/)
})

test('wrong usage exits 2 with the usage', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['serve'], /unknown command "serve"/],
    [['start'], /expected one configuration file, got 0/],
    [['start', 'a.yaml', 'b.yaml'], /expected one configuration file, got 2/],
    [['--nope'], /Unknown option '--nope'/]
  ]
  for (const [argv, message] of cases) {
    const run = io()
    t.equal(await main(argv, run.io, {}), 2, argv.join(' '))
    t.match(run.err[0], message)
    t.match(run.err[0], 'Usage: portcullis')
  }
})

test('start serves the configured gateway; flags beat the environment, which beats the file', async (t) => {
  const file = await configFile('server:\n  host: 0.0.0.0\n  port: 1\n')
  const run = io()
  t.equal(await main(['start', file, '--port', '0'], run.io, { HOST: '127.0.0.1', PORT: '2' }), 0)
  const { app, url } = run.listening ?? t.fail('not listening') as never
  t.teardown(() => app.close())
  t.match(url, /^http:\/\/127\.0\.0\.1:\d+$/)
  t.not(url.endsWith(':1'), true)
  t.same(run.out, [`portcullis: gateway listening on ${url}`])
  t.equal((await fetch(`${url}/healthz`)).status, 200)
})

test('start failures exit 1 with the reason and its code', async (t) => {
  const bad = await configFile('server:\n  prot: 3000\n')
  const cases: Array<[string[], NodeJS.ProcessEnv, RegExp]> = [
    [['start', bad], {}, /server\.prot is not a known option; allowed: host, port, tls \[PORTCULLIS_CORE_INVALID_OPTION\]/],
    [['start', join(tmpdir(), 'no-such-portcullis.yaml')], {}, /ENOENT.*\[ENOENT\]/],
    [['start', await configFile('{}')], { PORT: 'abc' }, /port must be an integer from 0 to 65535 \(got "abc"\)$/],
    [['start', await configFile('{}'), '--port', '99999'], {}, /port must be an integer/],
    [['start', await configFile('{}'), '--host', '192.0.2.1', '--port', '0'], {}, /EADDRNOTAVAIL/]
  ]
  for (const [argv, env, message] of cases) {
    const run = io()
    t.equal(await main(argv, run.io, env), 1, argv.join(' '))
    t.match(run.err[0], message)
    t.equal(run.listening, undefined)
  }
})

test('token prints a development token that the identity verifies', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-token-'))
  const file = join(dir, 'identity.json')
  const identity = await loadOrCreateDevIdentity(file, { issuer: 'dev', audience: 'api', principals: { alice: { scope: 'orders:read' } } })
  const run = io()
  t.equal(await main(['token', 'alice', '--ttl', '60'], run.io, { PORTCULLIS_DEV_IDENTITY: file }), 0)
  const token = run.out[0] as string
  t.match(token, /^ey[\w-]+\.ey[\w-]+\.[\w-]+$/)
  const app = Fastify()
  await app.register(portcullis, { authn: { methods: { dev: devJwtMethod(identity) } } })
  app.get('/me', async (request) => request.principal)
  t.match((await app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })).json(), { id: 'alice', scopes: ['orders:read'] })
  const flag = io()
  t.equal(await main(['token', 'alice', '--identity', file], flag.io, {}), 0, '--identity works without the variable')
  const cases: Array<[string[], NodeJS.ProcessEnv, number, RegExp]> = [
    [['token'], {}, 2, /expected one principal name, got 0/],
    [['token', 'alice'], {}, 2, /no development identity; pass --identity <file> or set PORTCULLIS_DEV_IDENTITY/],
    [['token', 'mallory', '--identity', file], {}, 1, /principal must be one of alice/],
    [['token', 'alice', '--identity', file, '--ttl', 'soon'], {}, 1, /ttl must be seconds/],
    [['token', 'alice', '--identity', join(dir, 'missing.json')], {}, 1, /ENOENT/]
  ]
  for (const [argv, env, code, message] of cases) {
    const failed = io()
    t.equal(await main(argv, failed.io, env), code, argv.join(' '))
    t.match(failed.err[0], message)
  }
})

test('shutdown waits for close, and a second signal exits at once', async (t) => {
  const listeners = new Map<string, Array<() => void>>()
  const exits: number[] = []
  const host = {
    on: (signal: string, listener: () => void) => { listeners.set(signal, [...(listeners.get(signal) ?? []), listener]) },
    exit: (code: number) => { exits.push(code) }
  }
  const fire = (signal: string) => { for (const listener of listeners.get(signal) ?? []) listener() }
  let finishClose: (ok: boolean) => void = () => {}
  const app = { close: () => new Promise<undefined>((resolve, reject) => { finishClose = (ok) => ok ? resolve(undefined) : reject(new Error('x')) }) }

  installShutdown(app, host)
  fire('SIGTERM')
  t.same(exits, [], 'waits for in-flight requests')
  fire('SIGINT')
  t.same(exits, [130], 'a second signal does not wait')
  finishClose(true)
  await new Promise((resolve) => setImmediate(resolve))
  t.same(exits, [130, 0])

  listeners.clear()
  exits.length = 0
  installShutdown(app, host)
  fire('SIGINT')
  fire('SIGTERM')
  finishClose(false)
  await new Promise((resolve) => setImmediate(resolve))
  t.same(exits, [143, 1], 'a failed close exits 1')
})

test('the portcullis executable starts, serves and stops on SIGTERM', async (t) => {
  const file = await configFile('server:\n  port: 0\n')
  const cli = fileURLToPath(new URL('../src/cli.ts', import.meta.url))
  const child = spawn(process.execPath, [...process.execArgv, cli, 'start', file], { stdio: ['ignore', 'pipe', 'pipe'] })
  const { url } = await listeningUrl(child)
  t.equal((await fetch(`${url}/healthz`)).status, 200)
  child.kill('SIGTERM')
  const [code] = await once(child, 'exit')
  t.equal(code, 0)

  const failing = spawn(process.execPath, [...process.execArgv, cli, 'start'], { stdio: 'ignore' })
  const [failCode] = await once(failing, 'exit')
  t.equal(failCode, 2)
})
