export { PolicyRejected, formatProblem, isPolicyRejected, type PolicyProblem, type PolicyRejectedError, type PolicyStage } from './errors.js'
export { parsePolicy, MAX_POLICY_BYTES, type ParsedPolicy } from './document.js'
export { checkSchema, policySchema, POLICY_FORMAT_VERSIONS } from './schema.js'
export { resolveSecrets, isSecretReference, SECRET_FIELDS, type SecretContext } from './secrets.js'
export { lintPolicy, LINT_RULES, type LintFinding } from './lint.js'
export { policyVersion } from './version.js'
export { signPolicy, verifyPolicySignature, policyPublicKey, type PolicyPublicKey } from './signature.js'
export { diffPolicies, formatDiff, type PolicyDiffEntry } from './diff.js'
export {
  PolicyManager,
  DEFAULT_HISTORY,
  type ActivePolicy,
  type CandidatePolicy,
  type PolicyMode,
  type Rollout,
  type CheckedPolicy,
  type PolicyCompile,
  type PolicyEvent,
  type PolicyHistoryEntry,
  type PolicyManagerOptions,
  type UpdateOrigin
} from './manager.js'
export { watchPolicyFile, readPolicyFile, DEFAULT_DEBOUNCE_MS, type PolicyFileOptions, type PolicyFileWatch } from './file-source.js'
export {
  syncPolicyFromRedis,
  publishPolicy,
  publishedPolicy,
  fleetStatus,
  DEFAULT_REDIS_PREFIX,
  type InstanceStatus,
  type PolicyRedis,
  type PolicySubscriber,
  type PublishedPolicy,
  type RedisSync,
  type RedisSyncOptions
} from './redis-source.js'
