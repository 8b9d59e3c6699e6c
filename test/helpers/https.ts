import { request } from 'node:https'

export interface TlsCredentials {
  /** The CA bundle that signs the server's certificate. */
  ca: string | Buffer
  /** The client's certificate and key, for mutual TLS. */
  cert?: string | Buffer
  key?: string | Buffer
}

/** A GET over TLS on a fresh connection, answered with JSON: its status and parsed body. */
export async function getJson (url: string, credentials: TlsCredentials): Promise<{ status: number, body: any }> {
  return await new Promise((resolve, reject) => {
    const req = request(url, { agent: false, ...credentials }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { text += chunk })
      res.on('end', () => { resolve({ status: res.statusCode as number, body: JSON.parse(text) }) })
    })
    req.on('error', reject)
    req.end()
  })
}
