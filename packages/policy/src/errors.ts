import { createError } from '@portcullis/core'

/** The steps of an update, in the order they run; an update refused at one never reaches the next. */
export type PolicyStage = 'parse' | 'signature' | 'schema' | 'secrets' | 'lint' | 'compile'

/** One thing wrong with a policy document, with where it is. */
export interface PolicyProblem {
  readonly stage: PolicyStage
  /** RFC 6901 pointer into the document; `''` for the document as a whole. */
  readonly pointer: string
  /** 1-based position in the document's text, when it can be told. */
  readonly line?: number
  readonly column?: number
  /** The lint rule or JSON Schema keyword that failed. */
  readonly rule?: string
  /** What is wrong. Never a secret's value. */
  readonly message: string
}

/**
 * A policy document or update that was refused. `stage` says which step refused it and
 * `problems` every fault found there; the message names the first.
 */
export const PolicyRejected = createError('PORTCULLIS_POLICY_REJECTED', '%s', 422, 'Policy Rejected')

export type PolicyRejectedError = InstanceType<typeof PolicyRejected> & {
  stage: PolicyStage
  problems: PolicyProblem[]
  /** The refused document's version id, once it parsed. */
  version?: string
}

/** Builds the refusal of a document named `name` for the problems found at one stage. */
export function rejection (name: string, stage: PolicyStage, problems: PolicyProblem[]): PolicyRejectedError {
  const first = problems[0] as PolicyProblem
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more)` : ''
  return Object.assign(new PolicyRejected(`${formatProblem(name, first)}${more}`), { stage, problems })
}

/** `name:line:column: /pointer: message [rule]`, the form editors and CI logs link to. */
export function formatProblem (name: string, problem: PolicyProblem): string {
  const at = problem.line === undefined ? name : `${name}:${problem.line}:${problem.column ?? 1}`
  const pointer = problem.pointer === '' ? '' : ` ${problem.pointer}:`
  const rule = problem.rule === undefined ? '' : ` [${problem.rule}]`
  return `${at}:${pointer} ${problem.message}${rule}`
}

/** Whether an error is a policy refusal (of either build of this package). */
export function isPolicyRejected (error: unknown): error is PolicyRejectedError {
  return (error as { code?: unknown } | null)?.code === 'PORTCULLIS_POLICY_REJECTED' && Array.isArray((error as { problems?: unknown }).problems)
}
