import { createError } from '@portcullis/core'

// Only with onSinkFailure: 'refuse'. The client learns that the service is unavailable, not why.
export const AuditUnavailable = createError('PORTCULLIS_AUDIT_UNAVAILABLE', 'The service is unavailable', 503, 'Service Unavailable')
