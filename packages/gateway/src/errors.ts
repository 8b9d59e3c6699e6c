import { createError } from '@portcullis/core'

// The admin API's answers; a refused policy document is @portcullis/policy's PORTCULLIS_POLICY_REJECTED.
export const AdminUnauthorized = createError('PORTCULLIS_GATEWAY_ADMIN_UNAUTHORIZED', 'The admin API needs its token', 401, 'Unauthorized')
export const AdminBadRequest = createError('PORTCULLIS_GATEWAY_ADMIN_BAD_REQUEST', '%s', 400, 'Bad Request')
export const AdminNotFound = createError('PORTCULLIS_GATEWAY_ADMIN_NOT_FOUND', 'No kept policy version %s', 404, 'Not Found')
export const AdminConflict = createError('PORTCULLIS_GATEWAY_ADMIN_CONFLICT', '%s', 409, 'Conflict')

// Threat protection: refused clients, retired routes, and responses that could not be masked.
export const UserAgentDenied = createError('PORTCULLIS_GATEWAY_USER_AGENT_DENIED', 'This client is not allowed', 403, 'Forbidden')
export const SunsetGone = createError('PORTCULLIS_GATEWAY_SUNSET', 'This endpoint has been retired', 410, 'Gone')
export const MaskingFailed = createError('PORTCULLIS_GATEWAY_MASKING_FAILED', 'The response could not be checked for personal data', 502, 'Bad Gateway')
