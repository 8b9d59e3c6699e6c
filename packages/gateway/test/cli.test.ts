import { test } from 'tap'
import { spawn } from 'node:child_process'
import { listeningUrl } from '../../../test/helpers/child.js'
import { once } from 'node:events'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import { main, USAGE } from '../src/cli-main.js'
import Fastify from 'fastify'
import { devJwtMethod, loadOrCreateDevIdentity } from '@portcullis/authn'
import { Redis } from 'ioredis'
import { publishPolicy } from '@portcullis/policy'
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
  const file = await configFile('version: 1\nserver:\n  host: 0.0.0.0\n  port: 1\n')
  const run = io()
  t.equal(await main(['start', file, '--port', '0'], run.io, { HOST: '127.0.0.1', PORT: '2' }), 0)
  const { app, url } = run.listening ?? t.fail('not listening') as never
  t.teardown(() => app.close())
  t.match(url, /^http:\/\/127\.0\.0\.1:\d+$/)
  t.not(url.endsWith(':1'), true)
  t.match(run.out, [new RegExp(`^portcullis: gateway listening on ${url} \\(policy version [0-9a-f]{16}, watching ${file}\\)$`)])
  t.equal((await fetch(`${url}/healthz`)).status, 200)
})

test('start failures exit 1 with the reason and its code', async (t) => {
  const bad = await configFile('version: 1\nserver:\n  prot: 3000\n')
  const empty = await configFile('version: 1\n')
  const cases: Array<[string[], NodeJS.ProcessEnv, RegExp]> = [
    [['start', bad], {}, /refused at schema$/],
    [['start', join(tmpdir(), 'no-such-portcullis.yaml')], {}, /ENOENT.*\[ENOENT\]/],
    [['start', empty], { PORT: 'abc' }, /port must be an integer from 0 to 65535 \(got "abc"\)$/],
    [['start', empty, '--port', '99999'], {}, /port must be an integer/],
    [['start', empty, '--host', '192.0.2.1', '--port', '0'], {}, /EADDRNOTAVAIL/],
    [['start', empty, '--port', '0', '--admin', '127.0.0.1'], {}, /--admin must be host:port, such as 127\.0\.0\.1:9901 \(got "127\.0\.0\.1"\)/],
    [['start', empty, '--port', '0', '--admin', '127.0.0.1:0'], {}, /--admin needs the admin token in the PORTCULLIS_ADMIN_TOKEN environment variable/],
    [['start', empty, '--port', '0', '--public-key', join(tmpdir(), 'no-such-key.pem')], {}, /ENOENT/]
  ]
  for (const [argv, env, message] of cases) {
    const run = io()
    t.equal(await main(argv, run.io, env), 1, argv.join(' '))
    t.match(run.err[0], message)
    t.equal(run.listening, undefined)
  }
  const run = io()
  await main(['start', bad], run.io, {})
  t.same(run.err.slice(1), ['  gateway.yaml:3:9: /server/prot: "prot" is not a known field here [additionalProperties]'], 'each fault with its line and column')
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
  const file = await configFile('version: 1\nserver:\n  port: 0\n')
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

test('policy validate: valid documents print their version and warnings; refused ones each fault with its place', async (t) => {
  const valid = await configFile('version: 1\nupstreams:\n  - { prefix: /api, url: "http://127.0.0.1:9", public: true }\nipRateLimit: { limits: [{ name: ip, limit: 5, window: 1m }], mode: report }\n', 'policy.yaml')
  const run = io()
  t.equal(await main(['policy', 'validate', valid], run.io, {}), 0)
  t.match(run.out, [/^policy\.yaml: valid, version [0-9a-f]{16}$/, '  warning policy.yaml:4:68: /ipRateLimit/mode: ipRateLimit only reports what it would deny [report-mode]'])

  const lint = await configFile('version: 1\nupstreams:\n  - { prefix: /api, url: "http://127.0.0.1:9" }\n', 'policy.yaml')
  const refused = io()
  t.equal(await main(['policy', 'validate', lint], refused.io, {}), 1)
  t.same(refused.err, ['policy.yaml: refused at lint', '  policy.yaml:3:5: /upstreams/0: nothing authenticates requests to this upstream: add an authn section, or mark it public: true [unauthenticated-upstream]'])

  // Valid to the schema, refused when compiled: the plugin's message names the option.
  const compile = await configFile('version: 1\nupstreams:\n  - { prefix: /api/, url: "http://127.0.0.1:9", public: true }\n', 'policy.yaml')
  const compiled = io()
  t.equal(await main(['policy', 'validate', compile], compiled.io, {}), 1)
  t.match(compiled.err, ['policy.yaml: refused at compile', /^ {2}policy\.yaml:3:15: \/upstreams\/0\/prefix: upstreams\[0\]\.prefix must be a path that starts with "\/" and does not end with one/])

  // Audit sinks are checked, not opened.
  const audit = await configFile('version: 1\nupstreams:\n  - { prefix: /api, url: "http://127.0.0.1:9", public: true }\naudit: { sinks: [{ type: file, path: /proc/forbidden/audit.log }] }\n', 'policy.yaml')
  t.equal(await main(['policy', 'validate', audit], io().io, {}), 0)

  const missing = io()
  t.equal(await main(['policy', 'validate', join(tmpdir(), 'no-such-policy.yaml')], missing.io, {}), 1)
  t.match(missing.err[0], /^portcullis policy validate: ENOENT/)
  const usage = io()
  t.equal(await main(['policy', 'validate'], usage.io, {}), 2)
  t.match(usage.err[0], /expected "validate <file>"/)
})

test('policy sign, and validate --public-key: only the signed bytes pass', async (t) => {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const file = await configFile('version: 1\nupstreams:\n  - { prefix: /api, url: "http://127.0.0.1:9", public: true }\n', 'policy.yaml')
  const keyFile = join(dirname(file), 'signing.pem')
  const publicFile = join(dirname(file), 'public.pem')
  await writeFile(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }))
  await writeFile(publicFile, publicKey.export({ type: 'spki', format: 'pem' }))
  const unsigned = io()
  t.equal(await main(['policy', 'validate', file, '--public-key', publicFile], unsigned.io, {}), 1)
  t.match(unsigned.err, ['policy.yaml: refused at signature', /not signed/])
  const signed = io()
  t.equal(await main(['policy', 'sign', file, '--key', keyFile], signed.io, {}), 0)
  t.match(signed.out[0], new RegExp(`^signed ${file} \\(version [0-9a-f]{16}\\): ${file}\\.sig$`))
  t.equal(await main(['policy', 'validate', file, '--public-key', publicFile], io().io, {}), 0)
  const started = io()
  t.equal(await main(['start', file, '--port', '0', '--public-key', publicFile], started.io, {}), 0, 'start takes the signed document')
  await started.listening?.app.close()
  await writeFile(file, `${await readFile(file, 'utf8')}# a comment\n`)
  t.equal(await main(['policy', 'validate', file, '--public-key', publicFile], io().io, {}), 1, 'one more byte breaks it')
  const failed = io()
  t.equal(await main(['policy', 'sign', file, '--key', join(dirname(file), 'missing.pem')], failed.io, {}), 1)
  t.match(failed.err[0], /^portcullis policy sign: ENOENT/)
})

test('policy diff names what changed by route and rule', async (t) => {
  const a = await configFile('version: 1\nrateLimit: { limits: [{ name: user, limit: 60, window: 1m }] }\nupstreams:\n  - prefix: /api\n    url: http://127.0.0.1:9\n    routes: [{ method: GET, path: /orders, authz: { anyScope: [read] } }]\n', 'a.yaml')
  const b = await configFile('version: 1\nrateLimit: { limits: [{ name: user, limit: 5, window: 1m }] }\nupstreams:\n  - prefix: /api\n    url: http://127.0.0.1:9\n    routes: [{ method: GET, path: /orders, authz: { anyRole: [admin] } }]\n', 'b.yaml')
  const run = io()
  t.equal(await main(['policy', 'diff', a, b], run.io, {}), 0)
  t.match(run.out[0], /^a\.yaml \(version [0-9a-f]{16}\) → b\.yaml \(version [0-9a-f]{16}\)$/)
  t.equal(run.out[1], [
    '~ rateLimit.limits[user].limit: 60 → 5',
    '- upstreams[/api].routes[GET /orders].authz.anyScope',
    '+ upstreams[/api].routes[GET /orders].authz.anyRole'
  ].join('\n'))
  const broken = io()
  t.equal(await main(['policy', 'diff', a, await configFile('a: [', 'c.yaml')], broken.io, {}), 1)
  t.match(broken.err[0], /^portcullis policy diff: c\.yaml:1:5: Flow sequence/)
})

test('policy publish and status: the fleet in Redis', async (t) => {
  const redis = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
  const client = new Redis(redis)
  t.teardown(() => client.quit())
  const prefix = `portcullis:test:cli:${process.pid}:${Date.now()}:`
  const file = await configFile('version: 1\nupstreams:\n  - { prefix: /api, url: "http://127.0.0.1:9", public: true }\n', 'policy.yaml')
  const none = io()
  t.equal(await main(['policy', 'status', '--redis', redis, '--prefix', prefix], none.io, {}), 0)
  t.same(none.out, ['published: none', '  no instance reports'])

  const started = io()
  t.equal(await main(['start', file, '--port', '0', '--redis', redis, '--prefix', prefix], started.io, { PORTCULLIS_ADMIN_TOKEN: 'x' }), 0)
  const { app } = started.listening ?? t.fail('not listening') as never
  t.teardown(() => app.close())
  await writeFile(file, 'version: 1\nupstreams:\n  - { prefix: /v2, url: "http://127.0.0.1:9", public: true }\n')
  const unsigned = io()
  t.equal(await main(['policy', 'publish', file, '--redis', redis, '--prefix', prefix], unsigned.io, {}), 0)
  t.match(unsigned.out[0], /^published .+, version [0-9a-f]{16}: every instance/)
  // Signed (the instance, started without a key, does not ask for it, but takes it along).
  const { privateKey } = generateKeyPairSync('ed25519')
  const keyFile = join(dirname(file), 'signing.pem')
  await writeFile(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }))
  t.equal(await main(['policy', 'sign', file, '--key', keyFile], io().io, {}), 0)
  const published = io()
  t.equal(await main(['policy', 'publish', file, '--redis', redis, '--prefix', prefix], published.io, {}), 0)
  const version = /version ([0-9a-f]{16})/.exec(published.out[0] as string)?.[1] as string
  t.match(published.out[0], /\(signed\): every instance that follows redis at 127\.0\.0\.1:6379 applies it now/)
  let status = io()
  for (let i = 0; i < 100; i++) {
    status = io()
    if (await main(['policy', 'status', '--redis', redis, '--prefix', prefix], status.io, {}) === 0) break
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.match(status.out, [new RegExp(`^published: ${version} at .+ by cli:`), new RegExp(`^ {2}\\S+ {2}${version}$`)])

  // A version the instance cannot run (its environment lacks a variable): it keeps its own, says
  // so, and status exits 3 until the fleet has converged.
  const next = await publishPolicy(client, 'version: 1\nupstreams:\n  - { prefix: /v3, url: "env:NO_SUCH_UPSTREAM_URL", public: true }\n', { prefix })
  let behind = io()
  for (let i = 0; i < 100; i++) {
    behind = io()
    if (await main(['policy', 'status', '--redis', redis, '--prefix', prefix], behind.io, {}) === 3 && behind.out.some((line) => line.includes('refused'))) break
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.match(behind.out, [new RegExp(`^published: ${next.version} at \\S+$`), new RegExp(`^ {2}\\S+ {2}${version} {2}\\(behind\\) {2}refused ${next.version}: .*NO_SUCH_UPSTREAM_URL is not set`)])

  const down = io()
  t.equal(await main(['policy', 'publish', file, '--redis', 'redis://127.0.0.1:1'], down.io, {}), 1)
  t.match(down.err[0], /^portcullis policy publish: /)
  t.equal(await main(['policy', 'status', '--redis', 'redis://127.0.0.1:1'], io().io, {}), 1)
})

test('start --admin serves the admin API on its own address, with the token from the environment', async (t) => {
  const file = await configFile('version: 1\nupstreams:\n  - { prefix: /api, url: "http://127.0.0.1:9", public: true }\n', 'policy.yaml')
  const token = 'cli-admin-token-0123456789abcdef012345'
  const run = io()
  t.equal(await main(['start', file, '--port', '0', '--admin', '127.0.0.1:0'], run.io, { PORTCULLIS_ADMIN_TOKEN: token }), 0)
  const { app } = run.listening ?? t.fail('not listening') as never
  t.teardown(() => app.close())
  const admin = /admin API on (\S+)$/.exec(run.out[1] as string)?.[1] as string
  t.equal((await fetch(`${admin}/policy`)).status, 401)
  t.equal((await fetch(`${admin}/policy`, { headers: { authorization: `Bearer ${token}` } })).status, 200)
})
