import { request as httpsRequest, type Agent } from 'node:https'
import { request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import { portcullisCore, type CoreOptions } from '@portcullis/core'
import { mtlsServerOptions, portcullisMtls, type MtlsOptions, type RouteMtls } from '../src/index.js'
import type { Test } from 'tap'
import type { Issued, Pki } from './pki.js'

export interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: any
}

/** An mTLS server on a real TLS socket, with `GET /whoami` under each route setting given. */
export async function serve (pki: Pki, options: MtlsOptions = {}, routes: Record<string, RouteMtls | undefined> = { '/whoami': undefined }, core: CoreOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({ https: mtlsServerOptions({ key: pki.server.key, cert: pki.server.cert, ca: pki.ca.cert }) })
  await app.register(portcullisCore, core)
  await app.register(portcullisMtls, options)
  for (const [url, mtls] of Object.entries(routes)) {
    app.get(url, mtls === undefined ? {} : { config: { mtls } }, async (request) => ({
      principal: request.principal,
      certificate: request.clientCertificate,
      decisions: request.decisions,
      forwarded: request.headers['x-forwarded-client-cert'] ?? null
    }))
  }
  await app.listen({ port: 0, host: '127.0.0.1' })
  return app
}

export function portOf (app: FastifyInstance): number {
  return (app.server.address() as AddressInfo).port
}

/** A request over TLS, with `client`'s certificate when given; a fresh connection unless an agent keeps one. */
export async function call (app: FastifyInstance, pki: Pki, path: string, client?: Issued, headers: Record<string, string> = {}, agent: Agent | false = false): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const req = httpsRequest({
      host: '127.0.0.1',
      port: portOf(app),
      path,
      headers,
      servername: 'localhost',
      ca: pki.ca.cert,
      agent,
      ...(client === undefined ? {} : { cert: client.cert, key: client.key })
    }, (res) => answer(res, resolve, reject))
    req.on('error', reject)
    req.end()
  })
}

/** A plain HTTP request to an app listening without TLS (behind a TLS-terminating proxy). */
export async function callPlain (port: number, path: string, headers: Record<string, string | string[]> = {}, localAddress = '127.0.0.1'): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers, localAddress, agent: false }, (res) => answer(res, resolve, reject))
    req.on('error', reject)
    req.end()
  })
}

function answer (res: import('node:http').IncomingMessage, resolve: (a: Answer) => void, reject: (e: Error) => void): void {
  let text = ''
  res.setEncoding('utf8')
  res.on('data', (chunk: string) => { text += chunk })
  res.on('end', () => { resolve({ status: res.statusCode as number, headers: res.headers, body: text === '' ? null : JSON.parse(text) }) })
  res.on('error', reject)
}

/** Each set of options fails `app.ready()` with the core's invalid-option error and the message given. */
export async function rejectsOptions (t: Test, cases: Array<[MtlsOptions, RegExp]>): Promise<void> {
  for (const [options, message] of cases) {
    const app = Fastify()
    await app.register(portcullisCore)
    app.register(portcullisMtls, options)
    await t.rejects(async () => await app.ready(), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, message.source)
  }
}
