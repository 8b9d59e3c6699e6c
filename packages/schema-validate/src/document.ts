import { bundle, compileErrors, validate } from '@readme/openapi-parser'
import { invalidOption } from '@portcullis/core'
import type { OpenApiVersion } from './schema.js'

/** An OpenAPI document, checked and with every `$ref` internal. */
export interface LoadedDocument {
  version: OpenApiVersion
  document: Record<string, unknown>
}

// Parser options: files a document refers to are read, URLs never fetched (a document that
// would pull part of its contract off the network at startup is refused instead).
const PARSER_OPTIONS = { resolve: { http: false } } as unknown as Parameters<typeof bundle>[1]

/**
 * Reads an OpenAPI 3.0 or 3.1 document (a YAML or JSON file, or the document itself), brings the
 * files it refers to into it, and checks it against the OpenAPI specification. Any fault fails
 * with a message that names the option and says what is wrong.
 */
export async function loadDocument (source: unknown, path: string): Promise<LoadedDocument> {
  if (typeof source !== 'string' && (typeof source !== 'object' || source === null || Array.isArray(source))) {
    throw invalidOption(path, 'the path of an OpenAPI 3.0 or 3.1 document (YAML or JSON), or the document as an object', source)
  }
  if (typeof source === 'string' && /^[a-z][a-z0-9+.-]*:\/\//i.test(source) && !source.startsWith('file://')) {
    throw invalidOption(path, 'a file path or the document itself (documents are never fetched over the network)', source)
  }
  let bundled: Record<string, unknown>
  try {
    // The parser works on a copy: the caller's object is left as it was.
    bundled = await bundle(typeof source === 'string' ? source : structuredClone(source) as never, PARSER_OPTIONS) as unknown as Record<string, unknown>
  } catch (err) {
    throw new Error(`${path}: the OpenAPI document could not be read: ${(err as Error).message}`)
  }
  const version = versionOf(bundled.openapi)
  if (version === null) {
    throw invalidOption(`${path} (openapi)`, 'an OpenAPI 3.0.x or 3.1.x document', bundled.openapi ?? bundled.swagger ?? '(no version)')
  }
  const result = await validate(structuredClone(bundled) as never, PARSER_OPTIONS as never)
  if (!result.valid) throw new Error(`${path}: the document is not valid OpenAPI ${version}:\n${compileErrors(result)}`)
  return { version, document: bundled }
}

function versionOf (value: unknown): OpenApiVersion | null {
  if (typeof value !== 'string') return null
  if (/^3\.0\.\d+$/.test(value)) return '3.0'
  if (/^3\.1\.\d+$/.test(value)) return '3.1'
  return null
}

/** An operation of a document as a Fastify route: `GET` and `/orders/:id`. */
export interface DocumentRoute {
  method: string
  path: string
}

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']

/**
 * The operations of an OpenAPI document, as routes in Fastify's syntax (`/orders/{id}` becomes
 * `/orders/:id`; a parameter name Fastify could misread becomes word characters only), so that
 * a gateway can declare a route for each. The document is read and checked as the plugin does.
 */
export async function documentRoutes (source: unknown, path = 'openapi'): Promise<DocumentRoute[]> {
  const { document } = await loadDocument(source, path)
  const routes: DocumentRoute[] = []
  for (const [template, item] of Object.entries(document.paths as Record<string, Record<string, unknown>>)) {
    const fastifyPath = template.replace(/\{([^}]+)\}/g, (_match, name: string) => `:${name.replace(/\W/g, '_')}`)
    for (const method of METHODS) if (item[method] !== undefined) routes.push({ method: method.toUpperCase(), path: fastifyPath })
  }
  return routes
}
