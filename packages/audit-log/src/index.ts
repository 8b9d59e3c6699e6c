import { portcullisAuditLog } from './plugin.js'

export { portcullisAuditLog, type AuditLog } from './plugin.js'
export * from './options.js'
export * as errors from './errors.js'
export { AuditUnavailable } from './errors.js'
export { ALWAYS_REDACTED_HEADERS, DEFAULT_REDACTED_BODY_KEYS, DEFAULT_REDACTED_QUERY, REDACTED } from './redact.js'
export { DATASET, ECS_VERSION, type AuditRecord, type RecordedDecision } from './record.js'
export { diffSummary, type DiffSummary, type PolicyAction, type PolicyChange } from './policy.js'
export { verifyAuditFiles, verifyAuditLines, ChainVerifier, type VerifyOptions, type VerifyProblem, type VerifyReport } from './verify.js'
export { openAuditWriter, type AuditStats, type AuditWriter } from './writer.js'
export type { SinkStats } from './sink.js'
export default portcullisAuditLog
