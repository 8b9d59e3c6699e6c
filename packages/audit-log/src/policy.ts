import { pointerToken } from '@portcullis/core'
import { DATASET, ECS_VERSION, type AuditRecord } from './record.js'

/** What happened to a policy: a new version became active, a candidate was refused, or an earlier one came back. */
export type PolicyAction = 'activate' | 'reject' | 'rollback'

/** Where two versions of a policy differ, as RFC 6901 pointers. */
export interface DiffSummary {
  added: string[]
  changed: string[]
  removed: string[]
  /** More differences exist than are listed. */
  truncated: boolean
}

export interface PolicyChange {
  action: PolicyAction
  /** The version made active (activate, rollback), or the one refused (reject); `null` when it has none (it did not parse). */
  version: string | null
  /** The version active before. */
  previousVersion: string | null
  /** How it is active: enforced, or only observed (shadow) or on a share of principals (canary). */
  mode?: 'enforce' | 'shadow' | 'canary'
  diff?: DiffSummary
  /** Why: for a refusal, the error code or what failed. Never a secret. */
  reason?: string
  /** Where the change came from: `file`, `admin-api`, `redis`, … */
  source?: string
  /** Who made it, when known (the admin API's principal). */
  actor?: string
}

const MAX_PATHS = 50
const MAX_DEPTH = 8

/**
 * Summarizes how `after` differs from `before`, both plain JSON data (a policy document):
 * the pointers of what was added, removed and changed, at most 50 in all. Arrays that differ
 * are one change; objects are compared property by property, down to a depth of 8.
 */
export function diffSummary (before: unknown, after: unknown): DiffSummary {
  const summary: DiffSummary = { added: [], changed: [], removed: [], truncated: false }
  let count = 0
  const note = (list: string[], pointer: string): void => {
    if (count === MAX_PATHS) {
      summary.truncated = true
      return
    }
    count++
    list.push(pointer === '' ? '/' : pointer)
  }
  const walk = (a: unknown, b: unknown, pointer: string, depth: number): void => {
    if (isPlainObject(a) && isPlainObject(b) && depth < MAX_DEPTH) {
      for (const key of Object.keys(a)) {
        const at = `${pointer}/${pointerToken(key)}`
        if (!Object.hasOwn(b, key)) note(summary.removed, at)
        else walk(a[key], b[key], at, depth + 1)
      }
      for (const key of Object.keys(b)) {
        if (!Object.hasOwn(a, key)) note(summary.added, `${pointer}/${pointerToken(key)}`)
      }
      return
    }
    if (!sameValue(a, b)) note(summary.changed, pointer)
  }
  walk(before, after, '', 0)
  return summary
}

/** The audit record of a policy change. */
export function policyRecord (change: PolicyChange, chained: boolean): AuditRecord {
  const policy: Record<string, unknown> = {}
  if (change.diff !== undefined) policy.diff = change.diff
  if (change.mode !== undefined) policy.mode = change.mode
  policy.previous_version = change.previousVersion
  if (change.source !== undefined) policy.source = change.source
  policy.version = change.version
  const record: AuditRecord = {
    '@timestamp': new Date().toISOString(),
    ecs: { version: ECS_VERSION },
    event: {
      action: `policy-${change.action}`,
      category: ['configuration'],
      dataset: DATASET,
      kind: 'event',
      outcome: change.action === 'reject' ? 'failure' : 'success',
      ...(change.reason === undefined ? {} : { reason: change.reason }),
      sequence: 0,
      type: ['change']
    },
    portcullis: chained ? { chain: { prev: null }, policy } : { policy }
  }
  if (change.actor !== undefined) record.user = { id: change.actor }
  return record
}

/** The record that says a sink dropped records, written once it takes them again. */
export function droppedRecord (sink: string, count: number, since: number, chained: boolean): AuditRecord {
  const audit = { dropped: count, since: new Date(since).toISOString(), sink }
  return {
    '@timestamp': new Date().toISOString(),
    ecs: { version: ECS_VERSION },
    event: { action: 'audit-records-dropped', category: ['process'], dataset: DATASET, kind: 'event', outcome: 'failure', reason: 'sink-unavailable', sequence: 0, type: ['info'] },
    portcullis: chained ? { audit, chain: { prev: null } } : { audit }
  }
}

function isPlainObject (value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

function sameValue (a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((item, i) => sameValue(item, b[i]))
  if (isPlainObject(a) && isPlainObject(b)) {
    const keys = Object.keys(a)
    return keys.length === Object.keys(b).length && keys.every((key) => Object.hasOwn(b, key) && sameValue(a[key], b[key]))
  }
  return false
}
