import { test } from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  DEFAULT_HISTORY,
  PolicyManager,
  PolicyRejected,
  isPolicyRejected,
  parsePolicy,
  policyVersion,
  signPolicy,
  type CheckedPolicy,
  type PolicyEvent,
  type PolicyManagerOptions,
  type PolicyMode,
  type PolicyRejectedError
} from '../src/index.js'
import { pointerOfOptionPath } from '../src/manager.js'

interface Compiled { readonly version: string, readonly mode: PolicyMode, readonly serial: number }

/** A manager whose compile function records its calls and can be told to fail. */
function harness (options: Partial<PolicyManagerOptions<Compiled>> = {}) {
  const compiles: Array<{ checked: CheckedPolicy, mode: PolicyMode }> = []
  const released: Compiled[] = []
  const events: PolicyEvent[] = []
  const state: { fail: ((checked: CheckedPolicy, mode: PolicyMode) => Error) | null } = { fail: null }
  let serial = 0
  const manager = new PolicyManager<Compiled>({
    compile: async (checked, mode) => {
      compiles.push({ checked, mode })
      const error = state.fail?.(checked, mode)
      if (error !== undefined) throw error
      return { version: checked.version, mode, serial: ++serial }
    },
    release: async (compiled) => { released.push(compiled) },
    onEvent: (event) => { events.push(event) },
    ...options
  })
  return { manager, compiles, released, events, state }
}

/** A valid document; each port is another version. */
const doc = (port: number, extra = ''): string => `version: 1\nupstreams:\n  - prefix: /api\n    url: http://orders:${port}\n    public: true\n${extra}`
const idOf = (text: string): string => policyVersion(parsePolicy(text).data)

async function refusal (promise: Promise<unknown>): Promise<PolicyRejectedError> {
  try {
    await promise
  } catch (err) {
    if (isPolicyRejected(err)) return err
    throw err
  }
  throw new Error('the document was taken')
}

const secured = [
  'version: 1',
  'authn:',
  '  methods:',
  '    jwt:',
  '      type: jwt',
  '      audience: orders-api',
  '      keys:',
  '        - kid: k1',
  '          key: env:JWT_KEY',
  '          algorithms: [HS256]',
  'authz:',
  '  defaultRule: { anyRole: [user] }',
  '  mode: report',
  'upstreams:',
  '  - prefix: /api',
  '    url: http://orders:8080',
  ''
].join('\n')
const jwtKey = 'a-key-of-thirty-two-bytes-or-more'

test('a document goes through every step and is put in force', async (t) => {
  const { manager, compiles, events, released } = harness({ secrets: { env: { JWT_KEY: jwtKey } } })
  t.equal(manager.active, null, 'nothing before the first document')
  t.equal(manager.candidate, null)
  t.equal(manager.requiresSignature, false)
  const active = await manager.apply(secured, { name: 'gateway.yaml', source: 'file', actor: 'ops@example.com' })
  const version = idOf(secured)
  t.match(active, { name: 'gateway.yaml', text: secured, version, source: 'file', compiled: { version, mode: 'enforce', serial: 1 } })
  t.ok(active.activatedAt instanceof Date)
  t.equal(manager.active, active)
  t.ok(Object.isFrozen(active))
  t.equal(((((active.data.authn as any).methods.jwt.keys)[0]).key), 'env:JWT_KEY', 'data keeps the reference')
  t.equal(((((active.resolved.authn as any).methods.jwt.keys)[0]).key), jwtKey, 'resolved holds the secret')
  t.same(active.warnings, [{ stage: 'lint', severity: 'warning', rule: 'report-mode', pointer: '/authz/mode', line: 13, column: 9, message: 'authz only reports what it would deny' }])
  t.equal(compiles.length, 1)
  t.equal(compiles[0]?.mode, 'enforce')
  t.same(compiles[0]?.checked, { name: 'gateway.yaml', text: secured, version, data: active.data, resolved: active.resolved, warnings: active.warnings })
  t.ok(Object.isFrozen(compiles[0]?.checked))
  t.equal(events.length, 1)
  t.match(events[0], { action: 'activate', version, previousVersion: null, source: 'file', actor: 'ops@example.com', mode: 'enforce', warnings: active.warnings })
  t.same(events[0]?.diff?.map((entry) => `${entry.kind} ${entry.path}`), ['added version', 'added authn', 'added authz', 'added upstreams'])
  t.notOk(JSON.stringify(events).includes(jwtKey), 'no event holds the secret')
  t.ok(Object.isFrozen(events[0]))
  t.same(released, [])
  t.match(manager.history(), [{ version, source: 'file', activatedAt: active.activatedAt, active: true }])
  t.equal(manager.document(version)?.text, secured)
  t.equal(manager.document('0000000000000000'), undefined)

  await manager.apply(doc(1))
  t.equal(events.length, 2)
  t.notOk('actor' in (events[1] as object), 'no actor when none is known')
  t.equal(events[1]?.source, 'code', 'source defaults to code')
  t.equal(manager.active?.name, 'policy', 'name defaults to policy')
})

test('check() runs every step short of compiling', async (t) => {
  const { manager, compiles, events } = harness({ secrets: { env: { JWT_KEY: jwtKey } } })
  const checked = await manager.check(secured)
  t.equal(checked.version, idOf(secured))
  t.equal(checked.name, 'policy')
  t.equal(compiles.length, 0)
  t.equal(events.length, 0)
  t.equal(manager.active, null, 'nothing is put in force')
  const err = await refusal(manager.check('version: 1\nbogus: 1\n', { name: 'x.yaml' }))
  t.match(err, { stage: 'schema', version: idOf('version: 1\nbogus: 1\n'), message: 'x.yaml:2:8: /bogus: "bogus" is not a known field here [additionalProperties]' })
  const unparsed = await refusal(manager.check('version: [\n'))
  t.equal(unparsed.stage, 'parse')
  t.equal(unparsed.version, undefined, 'a document that did not parse has no version')
})

test('a refusal at any stage leaves the active version serving and says why', async (t) => {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519')
  const signed = (text: string): { name: string, signature: string } => ({ name: 'gw.yaml', signature: signPolicy(text, privateKey) })
  const { manager, compiles, events, released, state } = harness({ publicKey, secrets: { env: {} } })
  t.equal(manager.requiresSignature, true)
  const first = await manager.apply(doc(1), signed(doc(1)))
  const schemaText = doc(2, 'audit:\n  sample: 2\n')
  const secretsText = doc(3, 'authn:\n  methods:\n    jwt:\n      type: jwt\n      audience: api\n      keys:\n        - key: env:MISSING_KEY\n')
  const lintText = doc(4, 'authz:\n  defaultRule: false\n')
  const compileText = doc(5)
  const cases: Array<{ stage: string, text: string, origin: { name?: string, signature?: string }, version: string | null, problems: unknown[] }> = [
    { stage: 'parse', text: 'version: 1\nversion: 2\n', origin: signed('version: 1\nversion: 2\n'), version: null, problems: [{ stage: 'parse', pointer: '', line: 2, column: 1, message: 'Map keys must be unique' }] },
    { stage: 'signature', text: doc(6), origin: { name: 'gw.yaml' }, version: idOf(doc(6)), problems: [{ stage: 'signature', pointer: '', message: 'the document is not signed, and only signed documents are taken' }] },
    { stage: 'signature', text: doc(6), origin: signed(doc(7)), version: idOf(doc(6)), problems: [{ stage: 'signature', pointer: '', message: 'the signature does not verify' }] },
    { stage: 'signature', text: `${doc(1)}# a comment\n`, origin: signed(doc(1)), version: idOf(doc(1)), problems: [{ stage: 'signature', pointer: '', message: 'the signature does not verify' }] },
    { stage: 'schema', text: schemaText, origin: signed(schemaText), version: idOf(schemaText), problems: [{ stage: 'schema', pointer: '/audit/sample', line: 7, column: 11, rule: 'maximum', message: 'must be <= 1' }] },
    { stage: 'secrets', text: secretsText, origin: signed(secretsText), version: idOf(secretsText), problems: [{ stage: 'secrets', pointer: '/authn/methods/jwt/keys/0/key', line: 12, column: 16, message: 'the environment variable MISSING_KEY is not set' }] },
    { stage: 'lint', text: lintText, origin: signed(lintText), version: idOf(lintText), problems: [{ stage: 'lint', severity: 'error', rule: 'authz-fail-open', pointer: '/authz/defaultRule', line: 7, column: 16, message: 'defaultRule: false makes every route without a rule of its own public' }] }
  ]
  for (const { stage, text, origin, version, problems } of cases) {
    const before = events.length
    const err = await refusal(manager.apply(text, { ...origin, source: 'admin-api', actor: 'eve' }))
    t.equal(err.stage, stage, stage)
    t.same(err.problems, problems, `${stage}: the problems, with their positions`)
    t.equal(err.version, version ?? undefined, `${stage}: the refused version`)
    t.ok(err instanceof PolicyRejected)
    t.equal(manager.active, first, `${stage}: the active version keeps serving`)
    t.equal(events.length, before + 1)
    t.same(events.at(-1), { action: 'reject', version, previousVersion: first.version, source: 'admin-api', actor: 'eve', mode: 'enforce', stage, problems }, `${stage}: the reject event`)
  }
  t.equal(compiles.length, 1, 'nothing refused before compiling is compiled')

  state.fail = () => new Error('upstreams[0].url must be reachable from the gateway')
  const err = await refusal(manager.apply(compileText, signed(compileText)))
  t.same(err.problems, [{ stage: 'compile', pointer: '/upstreams/0/url', line: 4, column: 10, message: 'upstreams[0].url must be reachable from the gateway' }])
  t.equal(err.message, 'gw.yaml:4:10: /upstreams/0/url: upstreams[0].url must be reachable from the gateway')
  t.equal(err.version, idOf(compileText))
  t.match(events.at(-1), { action: 'reject', stage: 'compile', version: idOf(compileText), previousVersion: first.version, problems: err.problems })
  t.equal(manager.active, first)
  t.same(released, [], 'nothing was replaced')
  t.same(manager.history().map((entry) => entry.version), [first.version])
})

test('compile errors are placed by the option path their message starts with', async (t) => {
  const { manager, events, state } = harness()
  await manager.apply(doc(1))
  state.fail = () => new Error('the compiler gave up')
  const unplaced = await refusal(manager.apply(doc(2)))
  t.same(unplaced.problems, [{ stage: 'compile', pointer: '', line: 1, column: 1, message: 'the compiler gave up' }], 'no option path: the document as a whole')
  const rejected = Object.assign(new PolicyRejected('upstream refused'), { stage: 'compile', problems: [{ stage: 'compile', pointer: '/upstreams/0', message: 'upstream refused' }] })
  state.fail = () => rejected
  const passed = await refusal(manager.apply(doc(3)))
  t.equal(passed, rejected, 'a refusal from the compiler is passed on as it is')
  t.equal(passed.version, idOf(doc(3)), 'with the version it refused')
  t.match(events.at(-1), { action: 'reject', stage: 'compile', version: idOf(doc(3)), problems: [{ pointer: '/upstreams/0', message: 'upstream refused' }] })
})

test('pointerOfOptionPath() turns an option path into a pointer', async (t) => {
  t.equal(pointerOfOptionPath('upstreams[0].routes[1].authz must be a rule'), '/upstreams/0/routes/1/authz')
  t.equal(pointerOfOptionPath('rateLimit.plans.gold[2].window must be a duration'), '/rateLimit/plans/gold/2/window')
  t.equal(pointerOfOptionPath('authn.methods.my-jwt.keys[0].key is not a key'), '/authn/methods/my-jwt/keys/0/key')
  t.equal(pointerOfOptionPath('audit is set, but the gateway started without an audit log'), '/audit')
  t.equal(pointerOfOptionPath('ipRateLimit.store must be left out'), '/ipRateLimit/store')
  t.equal(pointerOfOptionPath('upstreams[0].url'), '', 'a path alone is no message')
  t.equal(pointerOfOptionPath('the compiler gave up'), '', 'a first word that is no section of the document')
  t.equal(pointerOfOptionPath('connect ECONNREFUSED 127.0.0.1:6379'), '')
  t.equal(pointerOfOptionPath('toString is not a function'), '', 'nor anything inherited')
  t.equal(pointerOfOptionPath('[0] must be'), '')
  t.equal(pointerOfOptionPath(': nothing'), '')
  t.equal(pointerOfOptionPath(''), '')
})

test('the same version again changes nothing, however it is written', async (t) => {
  const { manager, compiles, events, released } = harness()
  const first = await manager.apply(doc(1))
  const again = await manager.apply(doc(1), { source: 'file' })
  t.equal(again, first)
  const json = JSON.stringify(parsePolicy(doc(1)).data, null, 2)
  t.equal(await manager.apply(json), first, 'the same data as JSON')
  t.equal(compiles.length, 1)
  t.equal(events.length, 1)
  t.same(released, [])
  t.equal(manager.history().length, 1)
})

test('history keeps the `history` newest versions, newest first', async (t) => {
  const { manager, released } = harness({ history: 3 })
  const actives = []
  for (let port = 1; port <= 5; port++) actives.push(await manager.apply(doc(port), { source: `s${port}` }))
  const history = manager.history()
  t.same(history.map((entry) => entry.version), [5, 4, 3].map((port) => idOf(doc(port))))
  t.same(history.map((entry) => entry.active), [true, false, false])
  t.same(history.map((entry) => entry.source), ['s5', 's4', 's3'])
  t.equal(manager.document(idOf(doc(1))), undefined, 'an old version is forgotten')
  t.equal(manager.document(idOf(doc(3)))?.text, doc(3))
  t.same(released.map((compiled) => compiled.serial), [1, 2, 3, 4], 'each replaced version is released')
  t.same(released, actives.slice(0, 4).map((active) => active.compiled))

  const { manager: defaults } = harness()
  for (let port = 1; port <= DEFAULT_HISTORY + 2; port++) await defaults.apply(doc(port))
  t.equal(DEFAULT_HISTORY, 10)
  t.equal(defaults.history().length, DEFAULT_HISTORY)
})

test('rollback() restores the previous version, or a named one, compiled afresh', async (t) => {
  const { manager, compiles, events, released, state } = harness()
  const v1 = await manager.apply(doc(1))
  const v2 = await manager.apply(doc(2))
  const v3 = await manager.apply(doc(3))
  const back = await manager.rollback(undefined, { source: 'admin-api', actor: 'ops' })
  t.equal(back.version, v2.version, 'the exact previous version id')
  t.equal(back.text, v2.text)
  t.same(back.data, v2.data)
  t.not(back.compiled, v2.compiled, 'compiled afresh')
  t.same(compiles.at(-1), { checked: { name: v2.name, text: v2.text, version: v2.version, data: v2.data, resolved: v2.resolved, warnings: v2.warnings }, mode: 'enforce' })
  t.equal(manager.active, back)
  t.match(events.at(-1), { action: 'rollback', version: v2.version, previousVersion: v3.version, source: 'admin-api', actor: 'ops', mode: 'enforce' })
  t.same(events.at(-1)?.diff, [{ kind: 'changed', path: 'upstreams.[/api].url', before: 'http://orders:3', after: 'http://orders:2' }])
  t.equal(released.at(-1), v3.compiled)
  t.same(manager.history().map((entry) => entry.version), [v2.version, v3.version, v1.version], 'the version rolled back to is the newest')

  const named = await manager.rollback(v1.version)
  t.equal(named.version, v1.version)
  t.equal(events.at(-1)?.source, 'code')
  t.equal(await manager.rollback(v1.version), named, 'rolling back to the active version changes nothing')

  const unknown = manager.rollback('ffffffffffffffff')
  await t.rejects(unknown, { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: `version must be one of the kept versions: ${[v1.version, v2.version, v3.version].join(', ')} (got "ffffffffffffffff")` })

  state.fail = () => new Error('upstreams[0] is gone')
  const before = events.length
  const failed = await refusal(manager.rollback())
  t.equal(failed.stage, 'compile')
  t.equal(manager.active, named, 'a rollback that does not compile changes nothing')
  t.match(events.slice(before), [{ action: 'reject', stage: 'compile', version: v2.version, previousVersion: v1.version, mode: 'enforce' }])
})

test('rollback() with no earlier version kept names the option', async (t) => {
  const { manager } = harness({ history: 1 })
  await t.rejects(manager.rollback(), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: /^version must be an earlier version to roll back to \(there is none\)/ }, 'before any version')
  await manager.apply(doc(1))
  await t.rejects(manager.rollback(), { message: /^version must be an earlier version to roll back to \(there is none\)/ })
  await manager.apply(doc(2))
  await t.rejects(manager.rollback(), { message: /^version must be an earlier version to roll back to \(there is none\)/ }, 'history: 1 keeps only the active version')
  t.equal(manager.active?.version, idOf(doc(2)))
})

test('updates run one at a time, in the order they were asked for', async (t) => {
  const log: string[] = []
  const manager = new PolicyManager<string>({
    compile: async (checked) => {
      const port = String(checked.data.upstreams !== undefined && (checked.data.upstreams as Array<{ url: string }>)[0]?.url.split(':').at(-1))
      log.push(`start ${port}`)
      await sleep(port === '1' ? 40 : port === '2' ? 20 : 0)
      log.push(`end ${port}`)
      return port
    }
  })
  const results = await Promise.allSettled([manager.apply(doc(1)), manager.apply(doc(2)), manager.apply('version: 1\nnope: 1\n'), manager.apply(doc(3))])
  t.same(log, ['start 1', 'end 1', 'start 2', 'end 2', 'start 3', 'end 3'])
  t.same(results.map((result) => result.status), ['fulfilled', 'fulfilled', 'rejected', 'fulfilled'], 'a refusal does not hold up the next update')
  t.equal(manager.active?.compiled, '3', 'the last one asked for is in force')
  t.same(manager.history().map((entry) => entry.version), [3, 2, 1].map((port) => idOf(doc(port))))
})

test('shadow and canary candidates are tried beside the active version', async (t) => {
  const { manager, compiles, events, released } = harness()
  const v1 = await manager.apply(doc(1))
  const shadow = await manager.apply(doc(2), { source: 'admin-api' }, { mode: 'shadow' })
  t.match(shadow, { version: idOf(doc(2)), mode: 'shadow', share: null, source: 'admin-api', compiled: { mode: 'shadow' } })
  t.equal(manager.candidate, shadow)
  t.equal(manager.active, v1, 'the active version is unchanged')
  t.equal(compiles.at(-1)?.mode, 'shadow')
  t.same(events.at(-1), { action: 'activate', version: shadow.version, previousVersion: v1.version, source: 'admin-api', mode: 'shadow', diff: [{ kind: 'changed', path: 'upstreams.[/api].url', before: 'http://orders:1', after: 'http://orders:2' }], warnings: [] })
  t.same(manager.history().map((entry) => entry.version), [v1.version], 'a candidate is not history')
  t.equal(manager.document(shadow.version), shadow)

  const canary = await manager.apply(doc(3), {}, { mode: 'canary', share: 0.1 })
  t.match(canary, { version: idOf(doc(3)), mode: 'canary', share: 0.1, compiled: { mode: 'canary' } })
  t.equal(manager.candidate, canary, 'a new candidate replaces the last')
  t.same(released, [shadow.compiled])
  t.match(events.at(-1), { action: 'activate', mode: 'canary', share: 0.1, previousVersion: v1.version })
  t.equal(manager.document(shadow.version), undefined)
  t.equal(await manager.apply(doc(1), {}, { mode: 'shadow' }), v1, 'the active version as a candidate changes nothing')
})

test('bad rollout options are refused before anything runs', async (t) => {
  const { manager, compiles, events } = harness()
  await manager.apply(doc(1))
  const cases: Array<[object, RegExp]> = [
    [{ mode: 'blue-green' }, /^mode must be one of enforce, shadow, canary \(got "blue-green"\)$/],
    [{ mode: 'canary' }, /^share must be the share of principals the canary serves, a number above 0 and below 1 \(got undefined\)$/],
    [{ mode: 'canary', share: 0 }, /^share must be .* \(got 0\)$/],
    [{ mode: 'canary', share: 1 }, /^share must be .* \(got 1\)$/],
    [{ mode: 'canary', share: Number.NaN }, /^share must be .* \(got NaN\)$/],
    [{ mode: 'canary', share: '0.5' }, /^share must be .* \(got "0\.5"\)$/],
    [{ mode: 'shadow', share: 0.5 }, /^share must be left out unless mode is canary \(got 0\.5\)$/],
    [{ share: 0.5 }, /^share must be left out unless mode is canary/]
  ]
  for (const [rollout, message] of cases) {
    await t.rejects(manager.apply(doc(2), {}, rollout), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, JSON.stringify(rollout))
  }
  t.equal(compiles.length, 1)
  t.equal(events.length, 1)
  t.equal(manager.candidate, null)
})

test('a trial needs an active version beside it', async (t) => {
  const { manager, compiles, events } = harness()
  await t.rejects(manager.apply(doc(1), {}, { mode: 'canary', share: 0.5 }), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: 'mode must be enforce for the first version: a trial needs an active version beside it (got "canary")' })
  t.equal(compiles.length, 0)
  t.same(events, [{ action: 'reject', version: null, previousVersion: null, source: 'code', mode: 'canary', stage: 'compile', problems: [{ stage: 'compile', pointer: '', message: 'mode must be enforce for the first version: a trial needs an active version beside it (got "canary")' }] }])
  t.equal(manager.active, null)
})

test('promote() makes the candidate the active version, compiled to enforce', async (t) => {
  const { manager, compiles, events, released, state } = harness()
  await t.rejects(manager.promote(), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: 'candidate must be a version in shadow or canary mode to promote (there is none)' })
  const v1 = await manager.apply(doc(1))
  const canary = await manager.apply(doc(2), {}, { mode: 'canary', share: 0.25 })

  state.fail = () => new Error('upstreams[0].url cannot be enforced')
  const failed = await refusal(manager.promote({ source: 'admin-api', actor: 'ops' }))
  t.equal(failed.stage, 'compile')
  t.match(events.at(-1), { action: 'reject', mode: 'enforce', version: canary.version, source: 'admin-api', actor: 'ops' })
  t.equal(manager.candidate, canary, 'the trial goes on')
  t.equal(manager.active, v1)
  state.fail = null

  const promoted = await manager.promote({ actor: 'ops' })
  t.equal(promoted.version, canary.version)
  t.equal(compiles.at(-1)?.mode, 'enforce', 'recompiled to enforce')
  t.equal(promoted.compiled.mode, 'enforce')
  t.notOk('mode' in promoted, 'an active version carries no trial fields')
  t.notOk('share' in promoted)
  t.equal(manager.active, promoted)
  t.equal(manager.candidate, null)
  t.same(released, [canary.compiled, v1.compiled], 'the trial and the old version are released')
  t.match(events.at(-1), { action: 'activate', version: canary.version, previousVersion: v1.version, mode: 'enforce', source: 'code', actor: 'ops' })
  t.same(manager.history().map((entry) => entry.version), [canary.version, v1.version])
})

test('rollback() during a trial drops only the candidate', async (t) => {
  const { manager, compiles, events, released } = harness()
  const v1 = await manager.apply(doc(1))
  const v2 = await manager.apply(doc(2))
  const shadow = await manager.apply(doc(3), {}, { mode: 'shadow' })
  const compiled = compiles.length
  const back = await manager.rollback(undefined, { actor: 'ops' })
  t.equal(back, v2, 'the active version goes on alone, as it was')
  t.equal(manager.candidate, null)
  t.equal(compiles.length, compiled, 'nothing is compiled')
  t.equal(released.at(-1), shadow.compiled)
  t.same(events.at(-1), { action: 'rollback', version: v2.version, previousVersion: shadow.version, source: 'code', actor: 'ops', mode: 'shadow' })
  t.same(manager.history().map((entry) => entry.version), [v2.version, v1.version])

  const canary = await manager.apply(doc(3), {}, { mode: 'canary', share: 0.5 })
  t.equal(await manager.rollback(v2.version), v2, 'naming the active version drops the trial too')
  t.equal(manager.candidate, null)
  t.equal(released.at(-1), canary.compiled)

  const again = await manager.apply(doc(3), {}, { mode: 'canary', share: 0.5 })
  const older = await manager.rollback(v1.version)
  t.equal(older.version, v1.version, 'naming an older version rolls the active version back')
  t.equal(manager.candidate, null, 'and ends the trial')
  t.same(released.slice(-2), [again.compiled, v2.compiled])
})

test('an enforced update ends a trial', async (t) => {
  const { manager, released, events } = harness()
  const v1 = await manager.apply(doc(1))
  const shadow = await manager.apply(doc(2), {}, { mode: 'shadow' })
  const v3 = await manager.apply(doc(3))
  t.equal(manager.active, v3)
  t.equal(manager.candidate, null)
  t.same(released, [shadow.compiled, v1.compiled])
  t.match(events.at(-1), { action: 'activate', version: v3.version, previousVersion: v1.version, mode: 'enforce' })
  t.same(events.at(-1)?.diff, [{ kind: 'changed', path: 'upstreams.[/api].url', before: 'http://orders:1', after: 'http://orders:3' }], 'the diff is from the active version')
})

test('close() releases everything, and no update is taken after', async (t) => {
  const { manager, released, events } = harness()
  const v1 = await manager.apply(doc(1))
  const v2 = await manager.apply(doc(2))
  const canary = await manager.apply(doc(4), {}, { mode: 'canary', share: 0.5 })
  await manager.close()
  t.same(released, [v1.compiled, canary.compiled, v2.compiled])
  t.equal(manager.active, null)
  t.equal(manager.candidate, null)
  await t.rejects(manager.apply(doc(3)), { message: 'the policy manager is closed' })
  t.match(events.at(-1), { action: 'reject', stage: 'compile', previousVersion: null, problems: [{ stage: 'compile', pointer: '', message: 'the policy manager is closed' }] })
  await t.rejects(manager.apply(doc(1)), { message: 'the policy manager is closed' }, 'not even the version that was active')
  await t.rejects(manager.rollback(), { message: 'the policy manager is closed' })
  await t.rejects(manager.promote(), { message: /candidate must be/ })
  await t.rejects(manager.rollback(v1.version), { message: 'the policy manager is closed' })
  t.equal(released.length, 3, 'nothing is released twice')

  const { manager: empty, released: none } = harness()
  await empty.close()
  t.same(none, [])
  const { manager: alone, released: one } = harness()
  const only = await alone.apply(doc(1))
  await alone.close()
  t.same(one, [only.compiled])
})

test('a manager without release or onEvent works the same', async (t) => {
  const manager = new PolicyManager({ compile: async (checked) => checked.version })
  const v1 = await manager.apply(doc(1))
  const v2 = await manager.apply(doc(2))
  await manager.apply(doc(3), {}, { mode: 'shadow' })
  t.equal((await manager.rollback()).version, v2.version)
  t.equal((await manager.rollback()).version, v1.version)
  await manager.close()
  t.equal(manager.active, null)
})

test('bad manager options are refused, naming the option', async (t) => {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519')
  const compile = async (): Promise<null> => null
  t.throws(() => new PolicyManager({} as never), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: 'policy.compile must be a function that compiles a checked document' })
  t.throws(() => new PolicyManager(undefined as never), { message: /^policy\.compile must be a function/ })
  t.throws(() => new PolicyManager({ compile: 'gateway' } as never), { message: /^policy\.compile must be a function/ })
  for (const history of [0, 1001, 1.5, -1, Number.POSITIVE_INFINITY, '3']) {
    t.throws(() => new PolicyManager({ compile, history: history as number }), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: /^policy\.history must be an integer from 1 to 1000 \(got / }, String(history))
  }
  t.ok(new PolicyManager({ compile, history: 1 }))
  t.ok(new PolicyManager({ compile, history: 1000 }))
  t.throws(() => new PolicyManager({ compile, publicKey: privateKey }), { message: 'policy.publicKey must be a public key (never the private key that signs documents)' })
  t.throws(() => new PolicyManager({ compile, publicKey: privateKey.export({ type: 'pkcs8', format: 'pem' }) }), { message: 'policy.publicKey must be a public key (never the private key that signs documents)' })
  t.throws(() => new PolicyManager({ compile, publicKey: 'not a key' }), { message: 'policy.publicKey must be a public key, PEM (SPKI) or a KeyObject' })
  t.equal(new PolicyManager({ compile, publicKey: publicKey.export({ type: 'spki', format: 'pem' }) }).requiresSignature, true)
})
