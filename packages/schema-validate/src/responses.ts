import type { Readable } from 'node:stream'
import type { FastifyReply, FastifyRequest, onSendHookHandler, preSerializationHookHandler } from 'fastify'
import { isJsonMediaType, readPayload, recordDecision, type Mode } from '@portcullis/core'
import { ResponseInvalid } from './errors.js'
import { ruleFor } from './media.js'
import type { MediaRule, Operation } from './operations.js'

export interface ResponseContext {
  plugin: string
  /** `report` sends a response that breaks the contract and records it; `enforce` answers 502. */
  mode: (request: FastifyRequest) => Mode
  /** Remove what the document does not declare before anything is checked or sent. */
  strip: boolean
  /** The largest body read in full to be checked; a longer one goes out unchecked (refused in enforce mode). */
  maxBytes: number
  operationOf: (request: FastifyRequest) => { operation: Operation, name: string } | undefined
  violationsOf: (rule: MediaRule) => unknown[]
}

/**
 * Responses against the document: objects before they are serialized, JSON that arrives as text
 * or as a stream (a proxied answer) once read. Violations are logged, never sent to the client.
 */
export function responseHooks (context: ResponseContext): { preSerialization: preSerializationHookHandler<unknown>, onSend: onSendHookHandler<unknown> } {
  const checked = new WeakSet<FastifyRequest>()
  // What applies to this response: null when nothing does.
  const ruleOf = (request: FastifyRequest, reply: FastifyReply): { rule: MediaRule, name: string } | null => {
    const bound = context.operationOf(request)
    if (bound === undefined) return null
    const { operation } = bound
    const status = String(reply.statusCode)
    const rules = operation.responses.get(status) ?? operation.responses.get(`${status[0] as string}XX`) ?? operation.responses.get('DEFAULT')
    // Fastify has set the type by now, objects' included; a malformed one matches no range but */*.
    const essence = (String(reply.getHeader('content-type')).split(';')[0] as string).trim().toLowerCase()
    const rule = rules === undefined ? undefined : ruleFor(rules, essence)
    // A media type without a schema takes any body: nothing to check, nothing to strip.
    return rule === undefined || rule.validate === null ? null : { rule, name: bound.name }
  }
  // Strips, checks and says whether the value may go out.
  const judge = (request: FastifyRequest, { rule, name }: { rule: MediaRule, name: string }, value: unknown): boolean => {
    if (context.strip) rule.strip(value)
    if (rule.validate === null || rule.validate(value)) return true
    return refuse(request, name, { violations: context.violationsOf(rule) })
  }
  const refuse = (request: FastifyRequest, name: string, details: object): boolean => {
    const report = context.mode(request) === 'report'
    recordDecision(request, { plugin: context.plugin, outcome: report ? 'would-deny' : 'deny', reason: 'PORTCULLIS_SCHEMA_RESPONSE_INVALID', rule: name })
    request.log.warn({ rule: name, ...details }, 'response does not match the API contract')
    return report
  }
  return {
    preSerialization (request, reply, payload, done) {
      const applies = typeof payload === 'object' && payload !== null ? ruleOf(request, reply) : null
      if (applies === null) return done(null, payload)
      checked.add(request)
      if (judge(request, applies, payload)) return done(null, payload)
      done(new ResponseInvalid())
    },
    onSend (request, reply, payload, done) {
      if (checked.has(request) || payload === null || payload === undefined || payload === '' || !isJsonMediaType(reply.getHeader('content-type'))) return done(null, payload)
      const applies = ruleOf(request, reply)
      const encoding = reply.getHeader('content-encoding')
      if (applies === null || (encoding !== undefined && String(encoding).toLowerCase() !== 'identity')) return done(null, payload)
      // Once: an answer that replaces a refused one is not checked again.
      checked.add(request)
      readPayload(payload as string | Buffer | Readable, context.maxBytes).then((read) => {
        if (read.text === null) {
          if (refuse(request, applies.name, { reason: `body larger than ${context.maxBytes} bytes, not checked` })) return done(null, read.payload)
          read.payload.destroy()
          return done(new ResponseInvalid())
        }
        let value: unknown
        try {
          value = JSON.parse(read.text)
        } catch {
          return refuse(request, applies.name, { reason: 'body is not valid JSON' }) ? done(null, read.payload) : done(new ResponseInvalid())
        }
        if (!judge(request, applies, value)) return done(new ResponseInvalid())
        if (!context.strip) return done(null, read.payload)
        // The representation changed: the upstream's length and validators describe another one.
        reply.removeHeader('content-length')
        reply.removeHeader('etag')
        done(null, JSON.stringify(value))
      }, (err: Error) => done(err))
    }
  }
}
