import { createError } from '@portcullis/core'

// Messages are deliberately generic: a client learns that its credentials were refused, never
// which check refused them.
export const MissingCredentials = createError('PORTCULLIS_AUTHN_MISSING_CREDENTIALS', 'Authentication is required', 401, 'Unauthorized')
export const InvalidToken = createError('PORTCULLIS_AUTHN_INVALID_TOKEN', 'The access token is not valid', 401, 'Unauthorized')
export const InvalidCredentials = createError('PORTCULLIS_AUTHN_INVALID_CREDENTIALS', 'The credentials are not valid', 401, 'Unauthorized')
export const InvalidRequest = createError('PORTCULLIS_AUTHN_INVALID_REQUEST', 'The credentials in the request are malformed: %s', 400, 'Bad Request')
export const AmbiguousCredentials = createError('PORTCULLIS_AUTHN_AMBIGUOUS_CREDENTIALS', 'The request carries credentials in more than one way', 400, 'Bad Request')
export const ProviderUnavailable = createError('PORTCULLIS_AUTHN_PROVIDER_UNAVAILABLE', 'The identity provider cannot be reached to check the credentials', 503, 'Service Unavailable')
export const RevocationUnavailable = createError('PORTCULLIS_AUTHN_REVOCATION_UNAVAILABLE', 'The revocation status of the credentials cannot be checked', 503, 'Service Unavailable')
export const StoreUnavailable = createError('PORTCULLIS_AUTHN_STORE_UNAVAILABLE', 'The credential store cannot be reached to check the credentials', 503, 'Service Unavailable')
