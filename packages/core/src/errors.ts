import createFastifyError from '@fastify/error'

/** A stable error code: `PORTCULLIS_<PKG>_<REASON>`, upper case, digits and underscores. */
export type PortcullisCode = `PORTCULLIS_${string}`

/**
 * Headers a rejection must carry on the wire, such as `WWW-Authenticate`, `Retry-After`
 * or `RateLimit`. The problem+json formatter copies them onto the response.
 */
export type ProtocolHeaders = Readonly<Record<string, string | number | readonly string[]>>

/** A class made by {@link createError}; `new` is optional, as with `@fastify/error`. */
export type PortcullisErrorConstructor<C extends PortcullisCode = PortcullisCode, S extends number = number> =
  createFastifyError.FastifyErrorConstructor<{ code: C, statusCode: S }, unknown[]>

/** The fields every Portcullis error instance has, beyond those of `Error`. */
export interface PortcullisError extends Error {
  readonly code: PortcullisCode
  readonly statusCode: number
  /** Protocol headers to send with the rejection. */
  headers?: ProtocolHeaders
}

export interface ErrorCatalogEntry {
  readonly code: PortcullisCode
  readonly statusCode: number
  /** Short, human-readable summary of the problem type: the problem+json `title`. */
  readonly title: string
  /** The message template (`%s` placeholders are filled from the constructor's arguments). */
  readonly message: string
}

const CODE_PATTERN = /^PORTCULLIS_[A-Z][A-Z0-9]*_[A-Z][A-Z0-9_]*$/
// One catalog per process, shared by the ESM and CommonJS builds of this package, so an error
// defined through one is recognised by the formatter of the other.
const kCatalog = Symbol.for('portcullis.errorCatalog')
const registry = globalThis as { [kCatalog]?: Map<PortcullisCode, ErrorCatalogEntry> }
const catalog = registry[kCatalog] ??= new Map<PortcullisCode, ErrorCatalogEntry>()

/**
 * Every error code defined through {@link createError} in this process, in definition order.
 * The reference page of error codes is generated from it.
 */
export function errorCatalog (): readonly ErrorCatalogEntry[] {
  return [...catalog.values()]
}

/**
 * Defines a Portcullis error class with a stable code and HTTP status.
 *
 * @example
 * export const MissingCredentials = createError(
 *   'PORTCULLIS_AUTHN_MISSING', 'Authentication is required', 401, 'Unauthorized')
 * throw Object.assign(new MissingCredentials(), { headers: { 'www-authenticate': 'Bearer realm="api"' } })
 */
export function createError<C extends PortcullisCode, S extends number> (
  code: C,
  message: string,
  statusCode: S,
  title: string
): PortcullisErrorConstructor<C, S> {
  if (!CODE_PATTERN.test(code)) {
    throw new TypeError(`error code "${code}" must match ${String(CODE_PATTERN)}`)
  }
  if (!Number.isInteger(statusCode) || statusCode < 400 || statusCode > 599) {
    throw new TypeError(`error ${code}: statusCode must be an integer from 400 to 599, got ${String(statusCode)}`)
  }
  const known = catalog.get(code)
  if (known !== undefined && (known.statusCode !== statusCode || known.message !== message)) {
    throw new TypeError(`error code ${code} is already defined with another status or message`)
  }
  catalog.set(code, Object.freeze({ code, statusCode, title, message }))
  return createFastifyError(code, message, statusCode)
}

/**
 * Attaches the rules a request broke to a Portcullis error; the problem+json body lists them
 * under `errors`. Describe what was wrong with the request, never echo the values in it.
 */
export function withViolations<E extends PortcullisError> (error: E, violations: ProblemViolation[]): E & { violations: ProblemViolation[] } {
  return Object.assign(error, { violations })
}

/** One violated rule, for rejections that have several (schema validation, unwritable fields). */
export interface ProblemViolation {
  /** Which part of the request: `body`, `querystring`, `params` or `headers`. */
  in: string
  /** JSON Pointer (RFC 6901) to the offending value within that part; `''` for the part itself. */
  pointer: string
  /** The rule that failed, such as `required` or `maxLength`. */
  rule: string
  message: string
}

/** A property name as a JSON Pointer token (RFC 6901): `~` and `/` escaped, so that a pointer names exactly one field. */
export function pointerToken (name: string): string {
  return name.replaceAll('~', '~0').replaceAll('/', '~1')
}

/** Adds protocol headers to an error and returns it, for `throw withHeaders(new X(), {...})`. */
export function withHeaders<E extends Error> (error: E, headers: ProtocolHeaders): E & { headers: ProtocolHeaders } {
  return Object.assign(error, { headers })
}

/** The title registered for a Portcullis code, if the code is one. */
export function catalogEntry (code: unknown): ErrorCatalogEntry | undefined {
  return typeof code === 'string' ? catalog.get(code as PortcullisCode) : undefined
}

// Codes core itself answers with: HTTP-level rejections that no Portcullis plugin raised
// (Fastify's router, body parser and schema validation) and the generic server-side ones.
export const NotFound = createError('PORTCULLIS_CORE_NOT_FOUND', 'No route matches %s %s', 404, 'Not Found')
export const BadRequest = createError('PORTCULLIS_CORE_BAD_REQUEST', 'The request is malformed', 400, 'Bad Request')
export const ValidationFailed = createError('PORTCULLIS_CORE_VALIDATION_FAILED', 'The request does not match the route schema', 400, 'Validation Failed')
export const PayloadTooLarge = createError('PORTCULLIS_CORE_PAYLOAD_TOO_LARGE', 'The request body is larger than allowed', 413, 'Payload Too Large')
export const UnsupportedMediaType = createError('PORTCULLIS_CORE_UNSUPPORTED_MEDIA_TYPE', 'The request content type is not supported', 415, 'Unsupported Media Type')
export const ClientError = createError('PORTCULLIS_CORE_CLIENT_ERROR', 'The request was refused', 400, 'Client Error')
export const Internal = createError('PORTCULLIS_CORE_INTERNAL', 'The server could not complete the request', 500, 'Internal Server Error')
export const BadGateway = createError('PORTCULLIS_CORE_BAD_GATEWAY', 'The upstream service did not answer correctly', 502, 'Bad Gateway')
export const ServiceUnavailable = createError('PORTCULLIS_CORE_SERVICE_UNAVAILABLE', 'The service is unavailable', 503, 'Service Unavailable')
export const GatewayTimeout = createError('PORTCULLIS_CORE_GATEWAY_TIMEOUT', 'The upstream service did not answer in time', 504, 'Gateway Timeout')
// Answered by the HTTP server before any route: see clientErrorHandler.
export const RequestTimeout = createError('PORTCULLIS_CORE_REQUEST_TIMEOUT', 'The request was not received in time', 408, 'Request Timeout')
export const HeadersTooLarge = createError('PORTCULLIS_CORE_HEADERS_TOO_LARGE', 'The request line and headers are larger than allowed', 431, 'Request Header Fields Too Large')

/** Bad configuration: thrown at registration, so `app.ready()` fails before any request is served. */
export const InvalidOption = createError('PORTCULLIS_CORE_INVALID_OPTION', '%s', 500, 'Invalid Option')
