/**
 * Time as the relay sees it. Every wait of the relay (idle polls, backoffs, the lease heartbeat,
 * publish and shutdown deadlines) goes through one of these, so tests can run the relay on a
 * clock they move by hand instead of sleeping, and assert on the delays it asked for.
 */
export interface Clock {
  /** Milliseconds on a monotonic scale (only differences matter). */
  now(): number;
  /**
   * Resolves after `ms`, or at once when `signal` aborts (never rejects). `true` when the full
   * time passed, `false` when the signal cut it short.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<boolean>;
  /**
   * Calls `fn` every `ms` until the returned function is called. The system clock's timer does
   * not keep the process alive on its own: a lease heartbeat is worth running only while
   * something else (a connection, the loop's wait) does.
   */
  every(ms: number, fn: () => void): () => void;
}

/** The real clock: `performance.now()` and Node's timers. */
export const systemClock: Clock = {
  now: () => performance.now(),
  sleep(ms, signal) {
    if (signal?.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const finish = (full: boolean): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', cut);
        resolve(full);
      };
      const cut = (): void => finish(false);
      const timer = setTimeout(() => finish(true), ms);
      signal?.addEventListener('abort', cut, { once: true });
    });
  },
  every(ms, fn) {
    const timer = setInterval(fn, ms);
    timer.unref();
    return () => clearInterval(timer);
  },
};
