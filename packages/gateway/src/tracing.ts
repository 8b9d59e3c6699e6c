import { SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Tracer } from '@opentelemetry/api'
import { RECOMMENDED_ORDER, type ChainStep } from './order.js'
import type { Timeline } from './observe.js'

/** What a request's spans say about it besides its timeline; nothing secret (no headers, no credentials). */
export interface RequestFacts {
  /** The matched route pattern; `null` when no route matched. */
  readonly route: string | null
  readonly method: string
  readonly status: number
  readonly version: string | null
}

export const SPAN_NAME = 'portcullis'
const STAGE_SPAN_NAMES = RECOMMENDED_ORDER.map((stage) => `${SPAN_NAME}.${stage.key}`)

/**
 * The request's span (child of the context active when it arrived) and one child span per stage
 * it went through, with the times of the marks. Performance marks are turned into epoch
 * milliseconds, which every SDK reads the same way.
 */
export function emitSpans (tracer: Tracer, parent: Context, t: Timeline, facts: RequestFacts): void {
  const origin = performance.timeOrigin
  const answered = RECOMMENDED_ORDER[t.answered] as ChainStep
  const attributes: Attributes = {
    'http.request.method': facts.method,
    'http.response.status_code': facts.status,
    'portcullis.outcome': t.rejected ? 'rejected' : 'passed',
    'portcullis.answered_by': answered.key
  }
  if (facts.route !== null) attributes['http.route'] = facts.route
  if (facts.version !== null) attributes['portcullis.policy.version'] = facts.version
  const span = tracer.startSpan(SPAN_NAME, { kind: SpanKind.INTERNAL, startTime: origin + t.start, attributes }, parent)
  // Unsampled: its stages would be dropped too.
  if (!span.isRecording()) return
  const within = trace.setSpan(parent, span)
  for (let i = 0; i < t.count; i++) {
    const stage = t.stages[i] as number
    const step = RECOMMENDED_ORDER[stage] as ChainStep
    const child = tracer.startSpan(STAGE_SPAN_NAMES[stage] as string, {
      kind: SpanKind.INTERNAL,
      startTime: origin + (t.from[i] as number),
      attributes: { 'portcullis.stage': step.key, 'portcullis.step': step.step }
    }, within)
    if (stage === t.answered && t.rejected) {
      const denial = t.denial
      if (denial !== null) {
        child.setAttributes({ 'portcullis.decision.plugin': denial.plugin, 'portcullis.decision.outcome': denial.outcome, 'portcullis.decision.reason': denial.reason })
        if (denial.rule !== undefined) child.setAttribute('portcullis.decision.rule', denial.rule)
      }
      child.setAttribute('http.response.status_code', facts.status)
      child.setStatus({ code: SpanStatusCode.ERROR, message: denial?.reason ?? `answered with status ${facts.status}` })
    }
    child.end(origin + (t.to[i] as number))
  }
  span.end(origin + t.end)
}
