import type { Socket } from 'node:net'
import { BadRequest, catalogEntry, HeadersTooLarge, RequestTimeout, type PortcullisError, type PortcullisErrorConstructor } from './errors.js'
import { DEFAULT_PROBLEM_TYPE_BASE, PROBLEM_CONTENT_TYPE } from './problem.js'

/**
 * A Fastify `clientErrorHandler` that answers what the HTTP server refuses before any route runs
 * with problem details too: a request not received within `requestTimeout` (408), a request line
 * and headers over `maxHeaderSize` (431), and anything Node's parser cannot read (400).
 *
 * @example
 * const app = Fastify({ requestTimeout: 30_000, clientErrorHandler: problemClientErrorHandler() })
 */
export function problemClientErrorHandler (typeBase = DEFAULT_PROBLEM_TYPE_BASE): (error: Error & { code?: string }, socket: Socket) => void {
  // Three answers, made once.
  const answers = new Map([RequestTimeout, HeadersTooLarge, BadRequest].map((type) => [type, answerOf(type, typeBase)]))
  return (error, socket) => {
    // A reset connection has nobody left to answer.
    if (error.code === 'ECONNRESET' || socket.destroyed) return
    const type = error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? RequestTimeout : error.code === 'HPE_HEADER_OVERFLOW' ? HeadersTooLarge : BadRequest
    // Only before any answer has started on this connection, as Node does.
    if (socket.writable && socket.bytesWritten === 0) socket.write(answers.get(type) as string)
    socket.destroy()
  }
}

function answerOf (Type: PortcullisErrorConstructor, typeBase: string): string {
  const error = new Type() as PortcullisError
  const { title } = catalogEntry(error.code) as { title: string }
  const body = JSON.stringify({ type: typeBase + error.code, title, status: error.statusCode, detail: error.message, code: error.code })
  return `HTTP/1.1 ${error.statusCode} ${title}\r\nContent-Type: ${PROBLEM_CONTENT_TYPE}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
}
