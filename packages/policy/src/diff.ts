import { isSecretReference } from './secrets.js'

/** One difference between two policy documents, named the way a reviewer reads them. */
export interface PolicyDiffEntry {
  readonly kind: 'added' | 'removed' | 'changed'
  /** Where: sections and fields joined by dots, list entries by their key: `upstreams[/api].routes[GET /orders].authz`. */
  readonly path: string
  /** The values, absent for what is added or removed as a whole; secrets are never shown. */
  readonly before?: unknown
  readonly after?: unknown
}

type Data = Record<string, unknown>

// Lists whose entries have a natural key: they are compared entry by entry, not by position.
const KEYED: ReadonlyArray<{ list: RegExp, key: (entry: Data) => string }> = [
  { list: /^upstreams$/, key: (entry) => String(entry.prefix) },
  { list: /\.routes$/, key: (entry) => `${([] as unknown[]).concat(entry.method).join(',')} ${String(entry.path)}` },
  { list: /(^|\.)limits$|^(ip)?[rR]ateLimit\.plans\.[^.]+$|\.rateLimit$/, key: (entry) => String(entry.name) },
  { list: /\.keys$/, key: (entry) => String(entry.id ?? entry.kid ?? JSON.stringify(entry)) },
  { list: /\.users$/, key: (entry) => String(entry.username) }
]
const SECRET_NAMES = new Set(['key', 'clientSecret', 'passwordHash', 'hash'])
const SHOWN = '(secret)'

/**
 * What changed from `before` to `after`, by meaning rather than by line: upstreams are matched by
 * prefix, routes by method and path, limits by name, keys by id, so reordering is no change and a
 * changed route is named by its method and path.
 */
export function diffPolicies (before: Data, after: Data): PolicyDiffEntry[] {
  const entries: PolicyDiffEntry[] = []
  walk(before, after, '', entries)
  return entries
}

function walk (a: unknown, b: unknown, path: string, out: PolicyDiffEntry[]): void {
  // A secret is compared whole: the members of a JWK are not walked into, so none is ever shown.
  if (isObject(a) && isObject(b) && !isSecret(path)) {
    for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const at = path === '' ? key : `${path}.${key}`
      if (!Object.hasOwn(b, key)) out.push({ kind: 'removed', path: at })
      else if (!Object.hasOwn(a, key)) out.push({ kind: 'added', path: at })
      else walk(a[key], b[key], at, out)
    }
    return
  }
  const keyed = KEYED.find((rule) => rule.list.test(path))
  if (keyed !== undefined && Array.isArray(a) && Array.isArray(b) && [...a, ...b].every(isObject)) {
    walk(byKey(a as Data[], keyed.key), byKey(b as Data[], keyed.key), path, out)
    return
  }
  if (sameJson(a, b)) return
  out.push({ kind: 'changed', path, before: shown(path, a), after: shown(path, b) })
}

// Keyed entries become fields named `[key]`, so that the walk names them in the path.
function byKey (list: Data[], key: (entry: Data) => string): Data {
  const keyed: Data = {}
  for (const entry of list) keyed[`[${key(entry)}]`] = entry
  return keyed
}

function isSecret (path: string): boolean {
  return SECRET_NAMES.has(path.slice(path.lastIndexOf('.') + 1)) || path.endsWith('redis.url')
}

function shown (path: string, value: unknown): unknown {
  return isSecret(path) && !isSecretReference(value) ? SHOWN : value
}

function isObject (value: unknown): value is Data {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function sameJson (a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b)
}

/** The diff as lines for a terminal or a review: `+` added, `-` removed, `~` changed (old → new). */
export function formatDiff (entries: readonly PolicyDiffEntry[]): string {
  if (entries.length === 0) return 'no differences'
  return entries.map((entry) => {
    const path = entry.path.replaceAll('.[', '[')
    if (entry.kind === 'added') return `+ ${path}`
    if (entry.kind === 'removed') return `- ${path}`
    return `~ ${path}: ${brief(entry.before)} → ${brief(entry.after)}`
  }).join('\n')
}

function brief (value: unknown): string {
  const text = JSON.stringify(value) ?? 'undefined'
  return text.length > 120 ? `${text.slice(0, 119)}…` : text
}
