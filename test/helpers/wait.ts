/**
 * Polls `check` until it returns a truthy value or the time runs out (then throws `what`).
 * The timeout only bounds a failure; no test asserts on how long the wait took.
 */
export async function waitUntil<T>(
  check: () => T | Promise<T>,
  what: string,
  timeoutMs = 15_000,
  everyMs = 20,
): Promise<T> {
  // Monotonic: a wall-clock step (NTP) must neither cut the wait short nor stretch it.
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
