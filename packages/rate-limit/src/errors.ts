import { createError } from '@portcullis/core'

export const StoreUnavailable = createError('PORTCULLIS_RATE_LIMIT_STORE_UNAVAILABLE', 'Rate limits cannot be checked right now', 503, 'Service Unavailable')
export const RateLimited = createError('PORTCULLIS_RATE_LIMIT_EXCEEDED', 'Too many requests: retry later', 429, 'Too Many Requests')
