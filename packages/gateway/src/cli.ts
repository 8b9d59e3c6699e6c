#!/usr/bin/env node
import { main } from './cli-main.js'

main(process.argv.slice(2), {
  stdout: (line) => { process.stdout.write(`${line}\n`) },
  stderr: (line) => { process.stderr.write(`${line}\n`) },
  onListening: (app) => {
    // Finish in-flight requests, then exit; a second signal exits at once.
    const stop = (): void => {
      process.once('SIGINT', () => process.exit(130))
      process.once('SIGTERM', () => process.exit(143))
      app.close().then(() => process.exit(0), () => process.exit(1))
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  }
}).then((code) => {
  if (code !== 0) process.exitCode = code
})
