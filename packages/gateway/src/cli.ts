import { main } from './cli-main.js'
import { installShutdown } from './shutdown.js'

main(process.argv.slice(2), {
  stdout: (line) => { process.stdout.write(`${line}\n`) },
  stderr: (line) => { process.stderr.write(`${line}\n`) },
  onListening: (app) => { installShutdown(app, process) }
}).then((code) => {
  if (code !== 0) process.exitCode = code
})
