// Type tests, checked by `pnpm typecheck`: each @ts-expect-error must be an error, or the check fails.
// Nothing here runs: the checks are in a function that is never called.
import {
  PolicyManager,
  diffPolicies,
  lintPolicy,
  watchPolicyFile,
  type ActivePolicy,
  type CandidatePolicy,
  type PolicyEvent,
  type PolicyManagerOptions,
  type PolicyMode,
  type PolicyRedis,
  type Rollout
} from '../src/index.js'

interface Chain { version: string, mode: PolicyMode, close: () => Promise<void> }

export async function typeChecks (redis: PolicyRedis): Promise<unknown[]> {
  const options: PolicyManagerOptions<Chain> = {
    compile: async (checked, mode) => ({ version: checked.version, mode, close: async () => {} }),
    release: async (chain) => { await chain.close() },
    onEvent: (event: PolicyEvent) => { console.log(event.action, event.stage) }
  }
  const manager = new PolicyManager<Chain>(options)
  const active: ActivePolicy<Chain> = await manager.apply('version: 1', { name: 'gateway.yaml', source: 'file' })
  const candidate: CandidatePolicy<Chain> | null = manager.candidate
  const chain: Chain | undefined = manager.active?.compiled
  // @ts-expect-error compiled is what compile returns
  const wrong: string | undefined = manager.active?.compiled

  const canary: Rollout = { mode: 'canary', share: 0.1 }
  // @ts-expect-error a rollout mode is enforce, shadow or canary
  const blueGreen: Rollout = { mode: 'blue-green' }
  // @ts-expect-error the compile function is required
  const noCompile: PolicyManagerOptions<Chain> = { history: 5 }
  // @ts-expect-error promote takes no signature: the candidate was checked already
  const promoted = await manager.promote({ signature: 'x' })

  const watching = await watchPolicyFile(manager, 'gateway.yaml', {
    debounceMs: 50,
    onUpdate: (outcome) => { console.log('error' in outcome ? outcome.error.message : outcome.active.version) }
  })
  const severity: 'error' | 'warning' | undefined = lintPolicy({ version: 1 })[0]?.severity
  const kind: 'added' | 'removed' | 'changed' | undefined = diffPolicies({}, {})[0]?.kind
  await redis.set('key', 'value', 'PX', 1000)
  // @ts-expect-error an expiry is in milliseconds, with PX
  await redis.set('key', 'value', 'EX')
  return [active, candidate, chain, wrong, canary, blueGreen, noCompile, promoted, watching, severity, kind]
}
