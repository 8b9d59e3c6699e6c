import { test, type Test } from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, rename, rm, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  DEFAULT_DEBOUNCE_MS,
  PolicyManager,
  isPolicyRejected,
  parsePolicy,
  policyVersion,
  signPolicy,
  watchPolicyFile,
  type ActivePolicy,
  type PolicyManagerOptions
} from '../src/index.js'

type Outcome = { active: ActivePolicy<unknown> } | { error: Error }

const doc = (port: number): string => `version: 1\nupstreams:\n  - prefix: /api\n    url: http://orders:${port}\n    public: true\n`
const idOf = (text: string): string => policyVersion(parsePolicy(text).data)

async function tempDir (t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-policy-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

function setup (options: Partial<PolicyManagerOptions<number>> = {}): { manager: PolicyManager<number>, compiles: string[], outcomes: Outcome[], onUpdate: (outcome: Outcome) => void } {
  const compiles: string[] = []
  const outcomes: Outcome[] = []
  const manager = new PolicyManager<number>({
    compile: async (checked) => {
      compiles.push(checked.version)
      return compiles.length
    },
    ...options
  })
  return { manager, compiles, outcomes, onUpdate: (outcome) => { outcomes.push(outcome) } }
}

/** Waits until `condition` holds, for at most `ms`. */
async function until (condition: () => boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms
  while (!condition()) {
    if (Date.now() > end) return false
    await sleep(10)
  }
  return true
}

const errorOf = (outcome: Outcome | undefined): Error | undefined => outcome !== undefined && 'error' in outcome ? outcome.error : undefined
const activeOf = (outcome: Outcome | undefined): ActivePolicy<unknown> | undefined => outcome !== undefined && 'active' in outcome ? outcome.active : undefined

test('the file is applied at start, and again on every change, a rename over it included', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, doc(1))
  const { manager, compiles, outcomes, onUpdate } = setup()
  const watch = await watchPolicyFile(manager, file, { debounceMs: 20, onUpdate })
  t.teardown(watch.close)
  t.match(manager.active, { version: idOf(doc(1)), name: 'gateway.yaml', source: 'file', text: doc(1) }, 'the first read is applied')
  t.same(outcomes, [], 'onUpdate is for updates')

  await writeFile(file, doc(2))
  t.ok(await until(() => manager.active?.version === idOf(doc(2))), 'a write is applied')
  t.equal(activeOf(outcomes.at(-1)), manager.active, 'onUpdate gets the policy now active')

  // Deployment tools write a new file and rename it over the old one.
  await writeFile(join(dir, '.gateway.yaml.tmp'), doc(3))
  await rename(join(dir, '.gateway.yaml.tmp'), file)
  t.ok(await until(() => manager.active?.version === idOf(doc(3))), 'a rename over the file is applied')
  t.same(compiles, [1, 2, 3].map((port) => idOf(doc(port))), 'each version compiled once')
  t.same(manager.history().map((entry) => entry.source), ['file', 'file', 'file'])
})

test('an invalid edit is refused and the version in force keeps serving', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, doc(1))
  const { manager, outcomes, onUpdate } = setup()
  const watch = await watchPolicyFile(manager, file, { debounceMs: 20, onUpdate })
  t.teardown(watch.close)
  const first = manager.active
  await writeFile(file, `${doc(1)}bogus: true\n`)
  t.ok(await until(() => outcomes.length > 0))
  const error = errorOf(outcomes[0])
  t.ok(isPolicyRejected(error))
  t.match(error, { stage: 'schema', message: /^gateway\.yaml:6:\d+: \/bogus: "bogus" is not a known field here/ }, 'named by the file')
  t.equal(manager.active, first)

  await writeFile(file, 'version: 1\nupstreams: [\n')
  t.ok(await until(() => outcomes.length > 1))
  t.match(errorOf(outcomes[1]), { stage: 'parse' })
  t.equal(manager.active, first)

  await writeFile(file, doc(2))
  t.ok(await until(() => manager.active?.version === idOf(doc(2))), 'a fixed file is applied')
})

test('a file that did not change is not applied again', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, doc(1))
  const { manager, compiles, outcomes, onUpdate } = setup()
  const watch = await watchPolicyFile(manager, file, { debounceMs: 20, onUpdate })
  t.teardown(watch.close)
  await watch.reload()
  t.same(outcomes, [], 'reload() of the same text does nothing')
  await writeFile(file, doc(1))
  await writeFile(join(dir, 'unrelated.txt'), 'another file in the directory')
  await sleep(150)
  t.same(outcomes, [], 'rewritten with the same text: nothing')
  t.equal(compiles.length, 1)

  await writeFile(file, 'version: 1\nbogus: 1\n')
  t.ok(await until(() => outcomes.length === 1))
  await watch.reload()
  t.equal(outcomes.length, 1, 'a refused text is not tried again until it changes')
})

test('reload() reads the file now; a missing file is reported, not applied', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, doc(1))
  const { manager, outcomes, onUpdate } = setup()
  // A long debounce: only reload() reads the file within this test.
  const watch = await watchPolicyFile(manager, relative(process.cwd(), file), { debounceMs: 60_000, onUpdate })
  t.teardown(watch.close)
  t.equal(manager.active?.name, 'gateway.yaml', 'a relative path, named by its file name')
  await writeFile(file, doc(2))
  await watch.reload()
  t.equal(manager.active?.version, idOf(doc(2)))
  t.equal(activeOf(outcomes.at(-1))?.version, idOf(doc(2)))
  await unlink(file)
  await watch.reload()
  t.match(errorOf(outcomes.at(-1)), { code: 'ENOENT' })
  t.equal(manager.active?.version, idOf(doc(2)), 'the version in force keeps serving')
  await writeFile(file, doc(2))
  const before = outcomes.length
  await watch.reload()
  t.equal(outcomes.length, before, 'back as it was: nothing to apply')
})

test('signatures are read from <file>.sig when the manager needs them', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  const { publicKey, privateKey } = generateKeyPairSync('ed25519')
  const { manager, outcomes, onUpdate } = setup({ publicKey })

  await writeFile(file, doc(1))
  await t.rejects(watchPolicyFile(manager, file, { debounceMs: 20 }), { stage: 'signature', message: 'gateway.yaml: the document is not signed, and only signed documents are taken' }, 'no .sig at start')
  await writeFile(`${file}.sig`, signPolicy(doc(2), privateKey))
  await t.rejects(watchPolicyFile(manager, file, { debounceMs: 20 }), { stage: 'signature', message: 'gateway.yaml: the signature does not verify' })
  t.equal(manager.active, null)

  await writeFile(`${file}.sig`, `${signPolicy(doc(1), privateKey)}\n`)
  const watch = await watchPolicyFile(manager, file, { debounceMs: 20, onUpdate })
  t.teardown(watch.close)
  t.equal(manager.active?.version, idOf(doc(1)))

  await writeFile(file, doc(2))
  await writeFile(`${file}.sig`, signPolicy(doc(2), privateKey))
  t.ok(await until(() => manager.active?.version === idOf(doc(2))), 'a new text with its new signature is applied')

  await writeFile(file, doc(3))
  t.ok(await until(() => errorOf(outcomes.at(-1)) !== undefined))
  t.match(errorOf(outcomes.at(-1)), { stage: 'signature', message: /the signature does not verify/ }, 'an edit without a new signature is refused')
  t.equal(manager.active?.version, idOf(doc(2)))

  await writeFile(`${file}.sig`, signPolicy(doc(3), privateKey))
  t.ok(await until(() => manager.active?.version === idOf(doc(3))), 'the same text with a new signature is read again')

  await unlink(`${file}.sig`)
  t.ok(await until(() => /not signed/.test(errorOf(outcomes.at(-1))?.message ?? '')), 'a removed signature refuses the file')
  t.equal(manager.active?.version, idOf(doc(3)))
})

test('without a public key, a .sig file is not read', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, doc(1))
  await writeFile(`${file}.sig`, 'not a signature')
  const { manager, outcomes, onUpdate } = setup()
  const watch = await watchPolicyFile(manager, file, { debounceMs: 20, onUpdate })
  t.teardown(watch.close)
  t.equal(manager.active?.version, idOf(doc(1)))
  await writeFile(`${file}.sig`, 'another bad signature')
  await sleep(150)
  t.same(outcomes, [], 'a changed .sig is not a changed document')
})

test('close() stops watching, a pending read included', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, doc(1))
  const { manager, outcomes, onUpdate } = setup()
  const pending = await watchPolicyFile(manager, file, { debounceMs: 200, onUpdate })
  await writeFile(file, doc(2))
  await sleep(60)
  pending.close()
  await sleep(300)
  t.same(outcomes, [], 'the read that was waiting for the file to be quiet never happens')
  t.equal(manager.active?.version, idOf(doc(1)))

  const watch = await watchPolicyFile(manager, file, { debounceMs: 20, onUpdate })
  t.equal(manager.active?.version, idOf(doc(2)), 'a new watch reads the file')
  watch.close()
  watch.close()
  await writeFile(file, doc(3))
  await sleep(150)
  t.equal(manager.active?.version, idOf(doc(2)), 'closed: changes are not read')
  t.same(outcomes, [])
})

test('the default debounce applies changes too', async (t) => {
  t.equal(DEFAULT_DEBOUNCE_MS, 200)
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, doc(1))
  const { manager } = setup()
  const watch = await watchPolicyFile(manager, file)
  t.teardown(watch.close)
  const written = Date.now()
  await writeFile(file, doc(2))
  t.ok(await until(() => manager.active?.version === idOf(doc(2))))
  const waited = (manager.active?.activatedAt.getTime() as number) - written
  t.ok(waited >= DEFAULT_DEBOUNCE_MS - 5, `not before the file has been quiet for the debounce (${waited} ms)`)
  await writeFile(file, 'version: 1\nbogus: 1\n')
  await sleep(DEFAULT_DEBOUNCE_MS * 2)
  t.equal(manager.active?.version, idOf(doc(2)), 'a refusal without onUpdate changes nothing')
})

test('a bad debounceMs, a missing file or a refused document fail the start', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  const { manager } = setup()
  for (const debounceMs of [-1, 1.5, 60_001, Number.NaN, '20']) {
    await t.rejects(watchPolicyFile(manager, file, { debounceMs: debounceMs as number }), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: /^watch\.debounceMs must be milliseconds, from 0 to 60000 \(got / }, String(debounceMs))
  }
  await t.rejects(watchPolicyFile(manager, file, { debounceMs: 0 }), { code: 'ENOENT' }, 'a missing file')
  await writeFile(file, 'version: 1\nbogus: 1\n')
  await t.rejects(watchPolicyFile(manager, file, { debounceMs: 0 }), { stage: 'schema', message: /"bogus" is not a known field here/ }, 'a refused document')
  t.equal(manager.active, null)
  await writeFile(file, doc(1))
  const watch = await watchPolicyFile(manager, file, { debounceMs: 0 })
  watch.close()
  t.equal(manager.active?.version, idOf(doc(1)), 'debounceMs: 0 is allowed')
})
