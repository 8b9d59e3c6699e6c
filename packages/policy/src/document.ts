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

/**
 * Parses a policy document, YAML or JSON (YAML 1.2 reads JSON as it is). Duplicate keys, tags
 * and anchors that expand beyond reason are refused, as is anything but a mapping at the top.
 */
export function parsePolicy (text: string, name = 'policy'): ParsedPolicy {
  if (Buffer.byteLength(text, 'utf8') > MAX_POLICY_BYTES) {
    throw rejection(name, 'parse', [{ stage: 'parse', pointer: '', message: `the document is larger than ${MAX_POLICY_BYTES} bytes` }])
  }
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
  let data: unknown
  try {
    data = doc.toJS({ maxAliasCount: 100 })
  } catch (err) {
    throw rejection(name, 'parse', [{ stage: 'parse', pointer: '', message: (err as Error).message }])
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw rejection(name, 'parse', [{ stage: 'parse', pointer: '', message: 'the document must be a mapping of sections, such as version: 1 and upstreams: [...]' }])
  }
  return { name, text, data: data as Record<string, unknown>, locate: (pointer) => locate(doc, lineCounter, pointer) }
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
