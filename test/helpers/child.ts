import type { ChildProcessByStdio } from 'node:child_process'
import type { Readable } from 'node:stream'

/**
 * Resolves with the URL a child process prints as "listening on http://…" (or https://) on stdout, and all it
 * printed up to then; rejects with that output if the child exits first.
 */
export function listeningUrl (child: ChildProcessByStdio<null, Readable, Readable | null>): Promise<{ url: string, output: string }> {
  let output = ''
  child.stdout.setEncoding('utf8')
  return new Promise((resolve, reject) => {
    child.stdout.on('data', (chunk: string) => {
      output += chunk
      const match = /listening on (https?:\/\/\S+)/.exec(output)
      if (match?.[1] !== undefined) resolve({ url: match[1], output })
    })
    child.once('exit', (code) => { reject(new Error(`exited with ${String(code)} before listening: ${output}`)) })
  })
}
