import { createError } from '@portcullis/core'

export const Unauthenticated = createError('PORTCULLIS_AUTHZ_UNAUTHENTICATED', 'Authentication is required for this route', 401, 'Unauthorized')
export const Forbidden = createError('PORTCULLIS_AUTHZ_FORBIDDEN', 'The principal may not perform this request', 403, 'Forbidden')
export const InsufficientScope = createError('PORTCULLIS_AUTHZ_INSUFFICIENT_SCOPE', 'The access token lacks a required scope', 403, 'Forbidden')
export const NoRule = createError('PORTCULLIS_AUTHZ_NO_RULE', 'No authorization rule covers this route', 403, 'Forbidden')
export const IpDenied = createError('PORTCULLIS_AUTHZ_IP_DENIED', 'Requests from this address are not allowed', 403, 'Forbidden')
export const OverrideRefused = createError('PORTCULLIS_AUTHZ_OVERRIDE_REFUSED', 'Method and URL override headers are not accepted', 400, 'Bad Request')
export const NotOwner = createError('PORTCULLIS_AUTHZ_NOT_OWNER', 'The principal does not own this resource', 403, 'Forbidden')
export const NotOwnedHidden = createError('PORTCULLIS_AUTHZ_NOT_FOUND', 'The resource was not found', 404, 'Not Found')
export const ConditionFailed = createError('PORTCULLIS_AUTHZ_CONDITION_FAILED', 'The principal may not perform this request', 403, 'Forbidden')
export const ConditionError = createError('PORTCULLIS_AUTHZ_CONDITION_ERROR', 'The principal may not perform this request', 403, 'Forbidden')
export const PropertyNotWritable = createError('PORTCULLIS_AUTHZ_PROPERTY_NOT_WRITABLE', 'The request sets fields the principal may not set', 403, 'Forbidden')
export const ResponseUnfilterable = createError('PORTCULLIS_AUTHZ_RESPONSE_UNFILTERABLE', 'The response could not be filtered', 500, 'Internal Server Error')
