import { watch, type FSWatcher } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { basename, dirname, resolve } from 'node:path'
import { checkNumber } from '@portcullis/core'
import type { ActivePolicy, PolicyManager } from './manager.js'

export interface PolicyFileOptions {
  /** How long the file must be quiet before it is read, in ms: editors write in several steps. @default 200 */
  debounceMs?: number
  /** Called with each update's outcome: the policy now active, or why the file was refused. */
  onUpdate?: (outcome: { active: ActivePolicy<unknown> } | { error: Error }) => void
}

/** What {@link watchPolicyFile} returns. */
export interface PolicyFileWatch {
  /** Reads the file now (and its signature) and applies it if it changed. */
  reload: () => Promise<void>
  close: () => void
}

export const DEFAULT_DEBOUNCE_MS = 200

/**
 * A policy file's text and, when signatures are required, its detached signature from
 * `<file>.sig` beside it (`undefined` without one: the manager then refuses the document).
 */
export async function readPolicyFile (path: string, withSignature: boolean): Promise<{ text: string, signature: string | undefined }> {
  const text = await readFile(path, 'utf8')
  const signature = withSignature ? await readFile(`${path}.sig`, 'utf8').catch(() => undefined) : undefined
  return { text, signature }
}

/**
 * Reads a policy document from a file, and again whenever it changes, applying each version
 * through the manager. The file's directory is watched, not the file: editors and deployment
 * tools replace files by renaming over them (Kubernetes swaps a symlink), which a watch on the
 * old file would miss. A signature is read from `<file>.sig` beside it. A file that did not
 * change (same text, same signature) is not applied again.
 */
export async function watchPolicyFile<C> (manager: PolicyManager<C>, file: string, options: PolicyFileOptions = {}): Promise<PolicyFileWatch> {
  const debounceMs = checkNumber(options.debounceMs, DEFAULT_DEBOUNCE_MS, 'watch.debounceMs', 'milliseconds, from 0 to 60000', (n) => Number.isInteger(n) && n >= 0 && n <= 60_000)
  const path = resolve(file)
  const name = basename(path)
  const onUpdate = options.onUpdate ?? (() => {})
  let last: string | null = null
  let timer: NodeJS.Timeout | null = null
  let watcher: FSWatcher | null = null

  const reload = async (): Promise<void> => {
    let text: string
    let signature: string | undefined
    try {
      ({ text, signature } = await readPolicyFile(path, manager.requiresSignature))
    } catch (err) {
      // Between a delete and a rename the file can be missing for a moment; the next event reads it.
      onUpdate({ error: err as Error })
      return
    }
    const seen = `${signature ?? ''}\0${text}`
    if (seen === last) return
    last = seen
    try {
      onUpdate({ active: await manager.apply(text, { name, signature, source: 'file' }) })
    } catch (err) {
      onUpdate({ error: err as Error })
    }
  }

  // The first read must succeed: a gateway does not start on a missing or refused policy.
  const { text, signature } = await readPolicyFile(path, manager.requiresSignature)
  await manager.apply(text, { name, signature, source: 'file' })
  last = `${signature ?? ''}\0${text}`

  watcher = watch(dirname(path), { persistent: false }, () => {
    if (timer !== null) clearTimeout(timer)
    timer = setTimeout(() => {
      timer = null
      reload().catch(() => {})
    }, debounceMs)
  })
  return {
    reload,
    close: () => {
      if (timer !== null) clearTimeout(timer)
      watcher?.close()
      watcher = null
    }
  }
}
