import { CORE_SCHEMA, load as loadYaml } from 'js-yaml'
import { isMap, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml'
import { rejection, type PolicyProblem } from './errors.js'

/** The largest document read: far above any real policy, well below what would strain the process. */
export const MAX_POLICY_BYTES = 16 * 1024 * 1024

/** A policy document's text, parsed, with a way back from a pointer to its place in the text. */
export interface ParsedPolicy {
  /** What the document is called in messages: its file name, or `policy`. */
  readonly name: string
  readonly text: string
  /** The document as plain data. */
  readonly data: Record<string, unknown>
  /** Line and column (1-based) of the value a pointer names, or of its nearest parent that exists. */
  locate: (pointer: string) => { line: number, column: number } | null
}

// Values a document may hold once its aliases are expanded, beyond one per character of its text
// (which no document reaches without aliases): room for aliases used as intended, none for a bomb.
const ALIAS_ALLOWANCE = 10_000

/**
 * Parses a policy document, YAML or JSON (YAML 1.2 reads JSON as it is). Duplicate keys, tags
 * and anchors that expand beyond reason are refused, as is anything but a mapping at the top.
 *
 * A valid document is read by the fast readers (JSON.parse for JSON, js-yaml for YAML); only a
 * document they refuse, or a problem that needs its place, is read again with `yaml`, which
 * keeps every node's position.
 */
export function parsePolicy (text: string, name = 'policy'): ParsedPolicy {
  if (Buffer.byteLength(text, 'utf8') > MAX_POLICY_BYTES) {
    throw rejection(name, 'parse', [{ stage: 'parse', pointer: '', message: `the document is larger than ${MAX_POLICY_BYTES} bytes` }])
  }
  let data = fastParse(text)
  let precise: Precise | null = null
  if (data === undefined) {
    // Refused by a fast reader: the precise one says where, or, where the two disagree, reads it.
    precise = preciseParse(text, name)
    // Aliases are counted below, for both readers alike.
    data = precise.doc.toJS({ maxAliasCount: -1 }) as unknown
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw rejection(name, 'parse', [{ stage: 'parse', pointer: '', message: 'the document must be a mapping of sections, such as version: 1 and upstreams: [...]' }])
  }
  const limit = text.length + ALIAS_ALLOWANCE
  if (countNodes(data, limit) > limit) {
    throw rejection(name, 'parse', [{ stage: 'parse', pointer: '', message: `its aliases expand the document to more than ${limit} values` }])
  }
  return {
    name,
    text,
    data: data as Record<string, unknown>,
    locate: (pointer) => {
      precise ??= preciseParse(text, name)
      return locate(precise.doc, precise.lineCounter, pointer)
    }
  }
}

interface Precise { doc: Document, lineCounter: LineCounter }

function fastParse (text: string): unknown {
  try {
    if (/^\s*\{/.test(text)) {
      const data: unknown = JSON.parse(text)
      return hasDuplicateKey(text) ? undefined : data
    }
    // The YAML 1.2 core schema: no timestamps, sets, binary or other tags beyond plain JSON values.
    return loadYaml(text, { schema: CORE_SCHEMA })
  } catch {
    return undefined
  }
}

// Whether a JSON text has an object with one key twice, which JSON.parse would take silently.
function hasDuplicateKey (text: string): boolean {
  const scopes: Array<Set<string> | null> = []
  const tokens = /"(?:[^"\\]|\\.)*"|[{}[\]:]/g
  let previous: string | null = null
  for (const [token] of text.matchAll(tokens)) {
    if (token === '{') scopes.push(new Set())
    else if (token === '[') scopes.push(null)
    else if (token === '}' || token === ']') scopes.pop()
    else if (token === ':' && previous !== null) {
      // Compared unescaped: "a" and "\u0061" are one key.
      const keys = scopes.at(-1) as Set<string>
      const key = JSON.parse(previous) as string
      if (keys.has(key)) return true
      keys.add(key)
    }
    previous = token.startsWith('"') ? token : null
  }
  return false
}

// Counts values, following shared (aliased) ones each time they appear, up to just over `limit`.
function countNodes (root: unknown, limit: number): number {
  let count = 0
  const stack: unknown[] = [root]
  while (stack.length > 0 && count <= limit) {
    const node = stack.pop()
    count++
    if (typeof node === 'object' && node !== null) for (const value of Object.values(node)) stack.push(value)
  }
  return count
}

function preciseParse (text: string, name: string): Precise {
  const lineCounter = new LineCounter()
  // Without resolveKnownTags, !!binary, !!set, !!omap and !!timestamp are unresolved tags rather than
  // Buffers, Sets, Maps and Dates: the data stays plain JSON (a Map or a Set hashes as {}).
  const doc = parseDocument(text, { lineCounter, strict: true, uniqueKeys: true, prettyErrors: false, version: '1.2', schema: 'core', resolveKnownTags: false })
  // Warnings (an unresolved tag, a tag on the wrong kind of node, an ambiguous anchor) refuse too.
  const faults = [...doc.errors, ...doc.warnings]
  if (faults.length > 0) {
    throw rejection(name, 'parse', faults.map((err): PolicyProblem => {
      const { line, col } = lineCounter.linePos(err.pos[0])
      return { stage: 'parse', pointer: '', line, column: col, message: err.message.split('\n')[0] as string }
    }))
  }
  return { doc, lineCounter }
}

function locate (doc: Document, lineCounter: LineCounter, pointer: string): { line: number, column: number } {
  // The document is a mapping (parsePolicy refuses anything else), and every parsed node has its range.
  let node: Node | null = doc.contents as Node
  let found: Node = node
  for (const token of pointerTokens(pointer)) {
    if (isMap(node)) node = node.get(token, true) as Node | null ?? null
    else if (isSeq(node)) node = node.get(Number(token), true) as Node | null ?? null
    else node = null
    if (node === null) break
    found = node
  }
  const { line, col } = lineCounter.linePos((found.range as [number, number, number])[0])
  return { line, column: col }
}

/** The tokens of an RFC 6901 pointer, unescaped. */
export function pointerTokens (pointer: string): string[] {
  if (pointer === '') return []
  return pointer.slice(1).split('/').map((token) => token.replaceAll('~1', '/').replaceAll('~0', '~'))
}

/** Adds positions to problems that have a pointer, from the parsed text. */
export function withPositions<P extends PolicyProblem> (parsed: ParsedPolicy, problems: P[]): P[] {
  return problems.map((problem) => {
    if (problem.line !== undefined) return problem
    const at = parsed.locate(problem.pointer)
    return at === null ? problem : { ...problem, line: at.line, column: at.column }
  })
}
