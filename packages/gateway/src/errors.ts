import { createError } from '@portcullis/core'

// The admin API's answers; a refused policy document is @portcullis/policy's PORTCULLIS_POLICY_REJECTED.
export const AdminUnauthorized = createError('PORTCULLIS_GATEWAY_ADMIN_UNAUTHORIZED', 'The admin API needs its token', 401, 'Unauthorized')
export const AdminBadRequest = createError('PORTCULLIS_GATEWAY_ADMIN_BAD_REQUEST', '%s', 400, 'Bad Request')
export const AdminNotFound = createError('PORTCULLIS_GATEWAY_ADMIN_NOT_FOUND', 'No kept policy version %s', 404, 'Not Found')
export const AdminConflict = createError('PORTCULLIS_GATEWAY_ADMIN_CONFLICT', '%s', 409, 'Conflict')
