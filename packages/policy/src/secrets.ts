import { readFile } from 'node:fs/promises'
import { isAbsolute, resolve } from 'node:path'
import { pointerToken } from '@portcullis/core'
import type { PolicyProblem } from './errors.js'

/**
 * Where a policy document holds secrets, as pointers with `*` for any one token: a secret written
 * there instead of referenced is refused (lint rule `inline-secret`), and diffs never show it.
 */
export const SECRET_FIELDS: readonly string[] = Object.freeze([
  '/authn/methods/*/keys/*/key',
  '/authn/methods/*/keys/*/hash',
  '/authn/methods/*/clientSecret',
  '/authn/methods/*/users/*/passwordHash',
  '/rateLimitStore/redis/url'
])

const ENV_REF = /^env:([A-Za-z_][A-Za-z0-9_]*)$/
const FILE_REF = /^file:(.+)$/

/** Whether a value is a secret reference. */
export function isSecretReference (value: unknown): value is string {
  return typeof value === 'string' && (ENV_REF.test(value) || FILE_REF.test(value))
}

/** Where a document is read from, for resolving references. */
export interface SecretContext {
  /** Directory that relative `file:` paths are read from. @default process.cwd() */
  baseDir?: string
  /** @default process.env */
  env?: NodeJS.ProcessEnv
}

/** The values at secret fields, with their pointers, in document order. */
export function secretValues (data: unknown): Array<{ pointer: string, value: unknown }> {
  const found: Array<{ pointer: string, value: unknown }> = []
  for (const pattern of SECRET_FIELDS) visit(data, pattern.slice(1).split('/'), '', found)
  return found
}

function visit (node: unknown, tokens: string[], pointer: string, found: Array<{ pointer: string, value: unknown }>): void {
  if (tokens.length === 0) {
    found.push({ pointer, value: node })
    return
  }
  if (typeof node !== 'object' || node === null) return
  const [token, ...rest] = tokens as [string, ...string[]]
  const keys = token === '*' ? Object.keys(node) : Object.hasOwn(node, token) ? [token] : []
  for (const key of keys) visit((node as Record<string, unknown>)[key], rest, `${pointer}/${pointerToken(key)}`, found)
}

/**
 * A copy of the document with every reference replaced by what it names: any string value that
 * is exactly `env:NAME` (an environment variable) or `file:path` (a file's content without its
 * final line break, a relative path read from `baseDir`). Secrets are given this way, and so are
 * values a deployment hands over, such as an upstream's address. Problems name the variable or
 * file that is missing, never a value.
 */
export async function resolveSecrets (data: Record<string, unknown>, context: SecretContext = {}): Promise<{ data: Record<string, unknown>, problems: PolicyProblem[] }> {
  const env = context.env ?? process.env
  const baseDir = context.baseDir ?? process.cwd()
  const copy = structuredClone(data)
  const problems: PolicyProblem[] = []
  const references: Array<{ pointer: string, value: string }> = []
  collectReferences(copy, '', references)
  for (const { pointer, value } of references) {
    const envName = ENV_REF.exec(value)?.[1]
    let secret: string | undefined
    if (envName !== undefined) {
      secret = env[envName]
      if (secret === undefined || secret === '') problems.push({ stage: 'secrets', pointer, message: `the environment variable ${envName} is not set` })
    } else {
      const file = (FILE_REF.exec(value) as RegExpExecArray)[1] as string
      const path = isAbsolute(file) ? file : resolve(baseDir, file)
      try {
        secret = (await readFile(path, 'utf8')).replace(/\r?\n$/, '')
      } catch (err) {
        problems.push({ stage: 'secrets', pointer, message: `the file ${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})` })
      }
      if (secret === '') problems.push({ stage: 'secrets', pointer, message: `the file ${path} is empty` })
    }
    if (secret !== undefined && secret !== '') setAt(copy, pointer, secret)
  }
  return { data: copy, problems }
}

function collectReferences (node: unknown, pointer: string, found: Array<{ pointer: string, value: string }>): void {
  if (isSecretReference(node)) {
    found.push({ pointer, value: node })
    return
  }
  if (typeof node !== 'object' || node === null) return
  for (const [key, value] of Object.entries(node)) collectReferences(value, `${pointer}/${pointerToken(key)}`, found)
}

function setAt (root: Record<string, unknown>, pointer: string, value: unknown): void {
  const tokens = pointer.slice(1).split('/').map((token) => token.replaceAll('~1', '/').replaceAll('~0', '~'))
  const last = tokens.pop() as string
  let node = root
  for (const token of tokens) node = node[token] as Record<string, unknown>
  node[last] = value
}
