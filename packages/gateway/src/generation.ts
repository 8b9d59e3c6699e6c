import type { IncomingMessage, ServerResponse } from 'node:http'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'

/** Hands a raw request to a Fastify instance that does not listen itself. */
export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void

/** A running version of the policy: a ready Fastify instance with the whole chain, and its requests in flight. */
export interface Generation {
  readonly version: string
  /** What it was compiled for: the active version, a canary or a shadow. */
  readonly mode: 'enforce' | 'canary' | 'shadow'
  readonly app: FastifyInstance
  /** Requests it is serving now. */
  readonly inflight: number
}

/**
 * One compiled version of the policy. It serves the requests handed to it and, once retired,
 * closes when the last of them is answered: requests always finish on the version they began on.
 */
export class LiveGeneration implements Generation {
  inflight = 0
  #retired = false
  #closed: Promise<void> | null = null
  readonly version: string
  readonly mode: Generation['mode']
  readonly app: FastifyInstance
  readonly #handler: RequestHandler
  /** Counts a response out; bound once, so that every request adds the same listener. */
  readonly #finished = (): void => {
    if (--this.inflight === 0 && this.#retired) this.close().catch(() => {})
  }

  constructor (version: string, mode: Generation['mode'], app: FastifyInstance, handler: RequestHandler) {
    this.version = version
    this.mode = mode
    this.app = app
    this.#handler = handler
  }

  /** Serves one request, counted in flight until its response closes. */
  serve (req: IncomingMessage, res: ServerResponse): void {
    this.inflight++
    res.once('close', this.#finished)
    this.#handler(req, res)
  }

  /** Decides a request handed to it in-process (a shadow's replay), counted in flight as served ones are. */
  async inject (options: InjectOptions): Promise<LightMyRequestResponse> {
    this.inflight++
    try {
      return await this.app.inject(options)
    } finally {
      this.#finished()
    }
  }

  /** No new request comes to it; it closes once its last one is answered. */
  async retire (): Promise<void> {
    this.#retired = true
    if (this.inflight === 0) await this.close()
  }

  /** Closes it now; resolves once its plugins have released what they hold. */
  async close (): Promise<void> {
    this.#closed ??= this.app.close().then(() => {}, (err: unknown) => { this.app.log.error({ err }, 'closing a policy version failed') })
    await this.#closed
  }
}
