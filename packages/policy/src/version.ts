import { createHash } from 'node:crypto'
import canonicalizeModule from 'canonicalize'

// The package's declaration file does not match its CommonJS export; this is its one function.
const canonicalize = canonicalizeModule as unknown as (input: unknown) => string

/**
 * The version id of a policy document: the first 16 hex digits of the SHA-256 of its canonical
 * JSON form (RFC 8785). Two documents that mean the same data, however formatted, commented or
 * ordered, have one id. It is taken before secret references are resolved, so it never depends
 * on, and never reveals anything of, a secret.
 */
export function policyVersion (data: unknown): string {
  return createHash('sha256').update(canonicalize(data)).digest('hex').slice(0, 16)
}
