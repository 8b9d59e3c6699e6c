import { STATUS_CODES } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import {
  BadGateway, BadRequest, ClientError, GatewayTimeout, Internal, NotFound, PayloadTooLarge,
  ServiceUnavailable, UnsupportedMediaType, ValidationFailed, catalogEntry,
  type ErrorCatalogEntry, type PortcullisErrorConstructor, type ProblemViolation, type ProtocolHeaders
} from './errors.js'

export const PROBLEM_CONTENT_TYPE = 'application/problem+json; charset=utf-8'
export const DEFAULT_PROBLEM_TYPE_BASE = 'urn:portcullis:problem:'

/** An RFC 9457 problem details object, with the stable Portcullis `code`. */
export interface ProblemDetails {
  type: string
  title: string
  status: number
  detail: string
  instance: string
  code: string
  errors?: ProblemViolation[]
}

export interface Problem {
  status: number
  headers: ProtocolHeaders | undefined
  body: ProblemDetails
}

interface ErrorLike {
  message?: unknown
  code?: unknown
  statusCode?: unknown
  status?: unknown
  headers?: unknown
  validation?: unknown
  validationContext?: unknown
  violations?: unknown
}

interface AjvIssue {
  instancePath?: unknown
  keyword?: unknown
  message?: unknown
}

// Headers an error may not set: the formatter owns the representation.
const RESERVED_HEADERS = new Set(['content-type', 'content-length', 'transfer-encoding'])

/**
 * Turns anything thrown or sent as an error into problem details, without leaking internals:
 * Portcullis errors keep their code, status, message and protocol headers; other 4xx errors are
 * mapped to a core code; anything else becomes a generic 5xx whose message is never shown.
 */
export function toProblem (
  error: unknown,
  request: Pick<FastifyRequest, 'url'>,
  typeBase = DEFAULT_PROBLEM_TYPE_BASE,
  replyStatus = 500
): Problem {
  const err: ErrorLike = typeof error === 'object' && error !== null ? error : {}
  const status = statusOf(err) ?? (isErrorStatus(replyStatus) ? replyStatus : 500)
  const own = catalogEntry(err.code)
  let entry: ErrorCatalogEntry
  let detail: string
  let errors: ProblemViolation[] | undefined
  if (own !== undefined && status === own.statusCode) {
    entry = own
    detail = typeof err.message === 'string' ? err.message : own.message
    if (Array.isArray(err.violations)) errors = err.violations as ProblemViolation[]
  } else if (status < 500) {
    entry = clientEntry(status, err)
    errors = violations(err)
    detail = errors === undefined && typeof err.message === 'string' && err.message !== '' ? err.message : entry.message
  } else {
    entry = serverEntry(status)
    detail = entry.message
  }
  const body: ProblemDetails = {
    type: typeBase + entry.code,
    title: status === entry.statusCode ? entry.title : STATUS_CODES[status] ?? entry.title,
    status,
    detail,
    instance: pathOf(request.url),
    code: entry.code
  }
  if (errors !== undefined) body.errors = errors
  return { status, headers: protocolHeaders(err.headers), body }
}

/** Sends problem details on a reply, with the problem+json content type and protocol headers. */
export function sendProblem (reply: FastifyReply, problem: Problem): FastifyReply {
  if (problem.headers !== undefined) {
    for (const [name, value] of Object.entries(problem.headers)) reply.header(name, value)
  }
  return reply.code(problem.status).type(PROBLEM_CONTENT_TYPE).send(JSON.stringify(problem.body))
}

export interface ProblemHandlers {
  errorHandler: (error: unknown, request: FastifyRequest, reply: FastifyReply) => FastifyReply
  notFoundHandler: (request: FastifyRequest, reply: FastifyReply) => FastifyReply
}

/** The error and not-found handlers that answer every rejection with problem details. */
export function createProblemHandlers (typeBase = DEFAULT_PROBLEM_TYPE_BASE): ProblemHandlers {
  return {
    errorHandler (error, request, reply) {
      // An error without a status of its own takes the one set with reply.code(), as in Fastify.
      const problem = toProblem(error, request, typeBase, reply.statusCode)
      if (problem.status >= 500) {
        request.log.error({ err: error }, 'request failed')
      } else {
        request.log.info({ code: problem.body.code, status: problem.status }, 'request rejected')
      }
      return sendProblem(reply, problem)
    },
    notFoundHandler (request, reply) {
      return sendProblem(reply, toProblem(new NotFound(request.method, pathOf(request.url)), request, typeBase))
    }
  }
}

function statusOf (err: ErrorLike): number | undefined {
  const status = err.statusCode ?? err.status
  return isErrorStatus(status) ? status : undefined
}

function isErrorStatus (status: unknown): status is number {
  return typeof status === 'number' && Number.isInteger(status) && status >= 400 && status <= 599
}

function describe (Err: PortcullisErrorConstructor): ErrorCatalogEntry {
  // Every constructor here was made by createError, so the catalog has it.
  return catalogEntry(new Err().code) as ErrorCatalogEntry
}

const BAD_REQUEST = describe(BadRequest)
const VALIDATION_FAILED = describe(ValidationFailed)
const PAYLOAD_TOO_LARGE = describe(PayloadTooLarge)
const UNSUPPORTED_MEDIA_TYPE = describe(UnsupportedMediaType)
const CLIENT_ERROR = describe(ClientError)
const NOT_FOUND = describe(NotFound)
const INTERNAL = describe(Internal)
const BY_SERVER_STATUS = new Map([[502, describe(BadGateway)], [503, describe(ServiceUnavailable)], [504, describe(GatewayTimeout)]])

function clientEntry (status: number, err: ErrorLike): ErrorCatalogEntry {
  if (Array.isArray(err.validation)) return VALIDATION_FAILED
  switch (status) {
    case 400: return BAD_REQUEST
    case 404: return NOT_FOUND
    case 413: return PAYLOAD_TOO_LARGE
    case 415: return UNSUPPORTED_MEDIA_TYPE
    default: return CLIENT_ERROR
  }
}

function serverEntry (status: number): ErrorCatalogEntry {
  return BY_SERVER_STATUS.get(status) ?? INTERNAL
}

function violations (err: ErrorLike): ProblemViolation[] | undefined {
  if (!Array.isArray(err.validation)) return undefined
  const part = typeof err.validationContext === 'string' ? err.validationContext : 'body'
  return err.validation.map((issue: AjvIssue) => ({
    in: part,
    pointer: typeof issue.instancePath === 'string' ? issue.instancePath : '',
    rule: typeof issue.keyword === 'string' ? issue.keyword : 'invalid',
    message: typeof issue.message === 'string' ? issue.message : 'is invalid'
  }))
}

function protocolHeaders (headers: unknown): ProtocolHeaders | undefined {
  if (typeof headers !== 'object' || headers === null) return undefined
  const kept: Record<string, string | number | readonly string[]> = {}
  for (const [name, value] of Object.entries(headers)) {
    if (RESERVED_HEADERS.has(name.toLowerCase())) continue
    if (typeof value === 'string' || typeof value === 'number' || Array.isArray(value)) kept[name] = value
  }
  return kept
}

/** The path of a request target, without its query string: never echo query parameters (they may hold credentials). */
export function pathOf (url: string): string {
  const q = url.indexOf('?')
  return q === -1 ? url : url.slice(0, q)
}
