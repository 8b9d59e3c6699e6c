import { readFile } from 'node:fs/promises'
import { isAbsolute, resolve } from 'node:path'
import { checkKnownKeys, InvalidOption, invalidOption } from '@portcullis/core'
import { mtlsServerOptions } from '@portcullis/mtls'

/** The gateway's own TLS listener: files in PEM. */
export interface ServerTlsConfig {
  /** The server's private key. */
  key: string
  /** The server's certificate chain. */
  cert: string
  /**
   * CAs of the client certificates to ask for (mutual TLS, `@portcullis/mtls`). Without it, the
   * listener is plain TLS and asks for none.
   */
  clientCa?: string
  /** @default 'TLSv1.2' */
  minVersion?: 'TLSv1.2' | 'TLSv1.3'
}

/** TLS toward one upstream: its CA, and the gateway's client certificate when the upstream asks for one. */
export interface UpstreamTlsConfig {
  /** CAs the upstream's certificate must chain to, instead of Node's default ones. */
  ca?: string
  /** The gateway's client certificate for this upstream, with `key`. */
  cert?: string
  key?: string
  /** The name the upstream's certificate must carry, when it is not the URL's host. */
  servername?: string
}

const PATHS = ['key', 'cert', 'clientCa', 'ca'] as const

export function validateServerTls (input: unknown): ServerTlsConfig {
  const tls = checkKnownKeys(input, ['key', 'cert', 'clientCa', 'minVersion'], 'server.tls')
  for (const name of ['key', 'cert'] as const) checkPath(tls[name], `server.tls.${name}`)
  if (tls.clientCa !== undefined) checkPath(tls.clientCa, 'server.tls.clientCa')
  if (tls.minVersion !== undefined && tls.minVersion !== 'TLSv1.2' && tls.minVersion !== 'TLSv1.3') throw invalidOption('server.tls.minVersion', 'TLSv1.2 or TLSv1.3', tls.minVersion)
  return tls as unknown as ServerTlsConfig
}

export function validateUpstreamTls (input: unknown, path: string, url: string): UpstreamTlsConfig {
  const tls = checkKnownKeys(input, ['ca', 'cert', 'key', 'servername'], path)
  if (!url.startsWith('https:')) throw invalidOption(path, 'used with an https:// upstream url', url)
  for (const name of ['ca', 'cert', 'key'] as const) if (tls[name] !== undefined) checkPath(tls[name], `${path}.${name}`)
  if ((tls.cert === undefined) !== (tls.key === undefined)) throw invalidOption(path, 'given both cert and key, or neither')
  if (tls.servername !== undefined && (typeof tls.servername !== 'string' || tls.servername === '')) throw invalidOption(`${path}.servername`, 'a host name', tls.servername)
  return tls as UpstreamTlsConfig
}

/** Resolves the files a TLS section names against the configuration file's directory. */
export function resolveTlsPaths<T extends Partial<Record<(typeof PATHS)[number], string>>> (tls: T | undefined, dir: string): void {
  if (tls === undefined) return
  for (const name of PATHS) {
    const file = tls[name]
    if (file !== undefined && !isAbsolute(file)) (tls as Record<string, string>)[name] = resolve(dir, file)
  }
}

/** Fastify's `https` options for the listener; with `clientCa`, those of `mtlsServerOptions`. */
export async function serverHttpsOptions (tls: ServerTlsConfig): Promise<Record<string, unknown>> {
  const key = await readPem(tls.key, 'server.tls.key')
  const cert = await readPem(tls.cert, 'server.tls.cert')
  const minVersion = tls.minVersion ?? 'TLSv1.2'
  if (tls.clientCa === undefined) return { key, cert, minVersion }
  return { ...mtlsServerOptions({ key, cert, ca: await readPem(tls.clientCa, 'server.tls.clientCa'), minVersion }) }
}

/** undici's `connect` options toward an upstream. */
export async function upstreamConnectOptions (tls: UpstreamTlsConfig, path: string): Promise<Record<string, unknown>> {
  return {
    ...(tls.ca === undefined ? {} : { ca: await readPem(tls.ca, `${path}.ca`) }),
    ...(tls.cert === undefined ? {} : { cert: await readPem(tls.cert, `${path}.cert`), key: await readPem(tls.key as string, `${path}.key`) }),
    ...(tls.servername === undefined ? {} : { servername: tls.servername })
  }
}

function checkPath (value: unknown, path: string): void {
  if (typeof value !== 'string' || value === '') throw invalidOption(path, 'the path of a PEM file', value)
}

/** Reads a PEM file an option names; a failure names the option. */
export async function readPem (file: string, path: string): Promise<Buffer> {
  try {
    return await readFile(file)
  } catch (err) {
    throw new InvalidOption(`${path} must be a readable PEM file: ${file} cannot be read (${String((err as NodeJS.ErrnoException).code)})`)
  }
}
