/** The parts of `process` that shutdown needs, so it can be exercised without exiting the caller. */
export interface ShutdownHost {
  on: (signal: 'SIGINT' | 'SIGTERM', listener: () => void) => unknown
  exit: (code: number) => void
}

/**
 * On SIGINT or SIGTERM, stops accepting requests, lets in-flight ones finish and exits 0 (1 if
 * closing failed). A second signal while waiting exits at once, with 128 + the signal number.
 */
export function installShutdown (app: { close: () => PromiseLike<unknown> }, host: ShutdownHost): void {
  let stopping = false
  const onSignal = (exitCode: number) => (): void => {
    if (stopping) {
      host.exit(exitCode)
      return
    }
    stopping = true
    app.close().then(() => { host.exit(0) }, () => { host.exit(1) })
  }
  host.on('SIGINT', onSignal(130))
  host.on('SIGTERM', onSignal(143))
}
