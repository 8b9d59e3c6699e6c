import type { FastifyInstance } from 'fastify'
import { InvalidOption } from './errors.js'

/** The hooks whose relative order decides what a part of the chain can see and stop. */
export type ChainHook = 'onRequest' | 'preValidation' | 'preHandler' | 'onSend' | 'onResponse'

/** A part of the request path, as it claims its place when it is registered. */
export interface ChainPart {
  /** The step of the recommended order (ARCHITECTURE.md), 1 to 12. */
  readonly step: number
  /** What the part is called in messages: its npm name, and its stage where a package has several. */
  readonly name: string
  /** The hooks the part enforces in: two parts conflict only where they share one. */
  readonly hooks: readonly ChainHook[]
}

const kChain = Symbol.for('portcullis.chain')

interface Claims { [kChain]?: readonly ChainPart[] }

/**
 * Claims a part's place in the chain of `app`'s context, at registration. Fastify runs hooks of
 * one kind in the order they were added, so a part registered after a later step that shares a
 * hook with it would run after that step: an authorization check before authentication, a
 * per-principal limit before the principal is known. Both that and a part registered twice in
 * one context fail startup, naming the parts and the fix.
 *
 * Claims are kept per encapsulation context: a child context sees its parents' parts, and what it
 * registers itself stays in it.
 */
export function claimChainStep (app: FastifyInstance, part: ChainPart): void {
  const holder = app as unknown as Claims
  const claimed = holder[kChain] ?? []
  for (const earlier of claimed) {
    if (earlier.name === part.name) {
      throw new InvalidOption(`${part.name} is registered twice in the same context; register it once (the meta-plugin portcullis registers it already when given its options)`)
    }
    const shared = part.hooks.find((hook) => earlier.hooks.includes(hook))
    if (earlier.step > part.step && shared !== undefined) {
      throw new InvalidOption(`${part.name} (step ${part.step}) is registered after ${earlier.name} (step ${earlier.step}); Fastify runs ${shared} hooks in the order they are added, so ${earlier.name} would run first. Register ${part.name} before it, or register both through the meta-plugin portcullis, which keeps the recommended order`)
    }
  }
  holder[kChain] = [...claimed, Object.freeze({ step: part.step, name: part.name, hooks: Object.freeze([...part.hooks]) })]
}

/** The parts registered in `app`'s context so far, in registration order. */
export function chainOf (app: FastifyInstance): readonly ChainPart[] {
  return (app as unknown as Claims)[kChain] ?? []
}
