import { createError } from '@portcullis/core'

export const RequestInvalid = createError('PORTCULLIS_SCHEMA_INVALID', 'The request does not match the API contract', 400, 'Bad Request')
export const UnknownOperation = createError('PORTCULLIS_SCHEMA_UNKNOWN_OPERATION', 'The API contract has no such operation', 404, 'Not Found')
export const MethodNotAllowed = createError('PORTCULLIS_SCHEMA_METHOD_NOT_ALLOWED', 'The API contract does not allow this method here', 405, 'Method Not Allowed')
export const UnsupportedContentType = createError('PORTCULLIS_SCHEMA_UNSUPPORTED_CONTENT_TYPE', 'The API contract does not accept this content type here', 415, 'Unsupported Media Type')
export const AmbiguousContentType = createError('PORTCULLIS_SCHEMA_AMBIGUOUS_CONTENT_TYPE', 'The request carries more than one content type', 400, 'Bad Request')
export const BodyTooLarge = createError('PORTCULLIS_SCHEMA_BODY_TOO_LARGE', 'The request body is larger than this operation allows', 413, 'Payload Too Large')
export const BodyTooDeep = createError('PORTCULLIS_SCHEMA_BODY_TOO_DEEP', 'The request body is nested too deeply', 400, 'Bad Request')
export const PrototypePoisoning = createError('PORTCULLIS_SCHEMA_PROTOTYPE_POISONING', 'The request holds a forbidden property name', 400, 'Bad Request')
export const ResponseInvalid = createError('PORTCULLIS_SCHEMA_RESPONSE_INVALID', 'The response does not match the API contract', 502, 'Bad Gateway')
