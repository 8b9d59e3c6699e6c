import { createError } from '@portcullis/core'

// A client learns why its certificate was refused when the reason is a fact about the certificate
// it holds (missing, expired, revoked). A chain that does not verify gets one generic answer: a
// forger is not told which check failed.
export const CertificateRequired = createError('PORTCULLIS_MTLS_CERTIFICATE_REQUIRED', 'A client certificate is required', 401, 'Unauthorized')
export const CertificateInvalid = createError('PORTCULLIS_MTLS_CERTIFICATE_INVALID', 'The client certificate is not trusted', 401, 'Unauthorized')
export const CertificateExpired = createError('PORTCULLIS_MTLS_CERTIFICATE_EXPIRED', 'The client certificate has expired', 401, 'Unauthorized')
export const CertificateNotYetValid = createError('PORTCULLIS_MTLS_CERTIFICATE_NOT_YET_VALID', 'The client certificate is not valid yet', 401, 'Unauthorized')
export const CertificateRevoked = createError('PORTCULLIS_MTLS_CERTIFICATE_REVOKED', 'The client certificate has been revoked', 401, 'Unauthorized')
export const RevocationUnknown = createError('PORTCULLIS_MTLS_REVOCATION_UNKNOWN', 'The revocation status of the client certificate cannot be checked', 503, 'Service Unavailable')
export const CertificateNotAllowed = createError('PORTCULLIS_MTLS_CERTIFICATE_NOT_ALLOWED', 'The client certificate is not allowed to make this request', 403, 'Forbidden')
