/** Rejects when `promise` does not settle within `ms`: a slow store must not hold requests. */
export async function within<T> (promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`no answer within ${ms} ms`)) }, ms) })
    ])
  } finally {
    clearTimeout(timer)
  }
}
