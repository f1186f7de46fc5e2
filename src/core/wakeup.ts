import type { Clock } from './clock.js';
import type { Logger } from './logger.js';
import type { OutboxStore, Unsubscribe } from './ports.js';
import type { RelayEmit, RelayEvents } from './relay-events.js';

export type WakeSource = RelayEvents['relay:wakeup']['source'];

/**
 * How the relay learns there is work: a counter of wake-ups (NOTIFY, a settled batch, a
 * transport back from an outage, `relay.wake()`) and an idle wait that any of them ends early.
 * Counting, not flagging, is what keeps a wake-up that arrives while the relay is busy claiming
 * from being lost: the loop compares the count before and after.
 */
export class WakeUp {
  readonly #clock: Clock;
  readonly #emit: RelayEmit;
  readonly #listens: () => boolean;
  #count = 0;
  #cut: AbortController | undefined;

  constructor(clock: Clock, emit: RelayEmit, listens: () => boolean) {
    this.#clock = clock;
    this.#emit = emit;
    this.#listens = listens;
  }

  get count(): number {
    return this.#count;
  }

  wake(source: WakeSource): void {
    this.#count++;
    if (this.#listens()) this.#emit('relay:wakeup', { source });
    this.#cut?.abort();
  }

  /**
   * Waits `ms`, or less when a wake-up arrives or `signal` aborts. `seen` is the count the
   * caller read before it last looked for work: a wake-up since then ends the wait at once.
   * Returns true when the full time passed.
   */
  async idle(ms: number, seen: number, signal: AbortSignal): Promise<boolean> {
    if (signal.aborted || this.#count !== seen) return false;
    const cut = new AbortController();
    const onAbort = () => cut.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    this.#cut = cut;
    try {
      return await this.#clock.sleep(ms, cut.signal);
    } finally {
      if (this.#cut === cut) this.#cut = undefined;
      signal.removeEventListener('abort', onAbort);
    }
  }
}

/**
 * Keeps a LISTEN subscription (store.subscribe) open for the relay's lifetime, subscribing
 * again with backoff when the connection is lost. Safe against `stop()` at any moment: a
 * subscription that completes after `stop()` is closed at once, so its pooled connection is
 * never leaked.
 */
export class NotifyListener {
  readonly #store: OutboxStore;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #emit: RelayEmit;
  readonly #onWake: () => void;
  readonly #stopped = new AbortController();
  #unsubscribe: Unsubscribe | undefined;
  /** The subscribe call or backoff under way, awaited by stop(). */
  #pending: Promise<void> | undefined;
  #failures = 0;

  constructor(options: {
    store: OutboxStore;
    clock: Clock;
    logger: Logger;
    emit: RelayEmit;
    onWake: () => void;
  }) {
    this.#store = options.store;
    this.#clock = options.clock;
    this.#logger = options.logger;
    this.#emit = options.emit;
    this.#onWake = options.onWake;
  }

  /** Subscribes once (errors are reported and retried in the background). */
  async start(): Promise<void> {
    this.#pending = this.#attempt();
    await this.#pending;
  }

  /** Idempotent. Waits for a subscribe under way, then unsubscribes. */
  async stop(): Promise<void> {
    this.#stopped.abort();
    await this.#pending?.catch(() => undefined);
    const unsubscribe = this.#unsubscribe;
    this.#unsubscribe = undefined;
    await unsubscribe?.().catch(() => undefined);
  }

  async #attempt(): Promise<void> {
    const subscribe = this.#store.subscribe?.bind(this.#store);
    if (!subscribe || this.#stopped.signal.aborted) return;
    let unsubscribe: Unsubscribe;
    try {
      unsubscribe = await subscribe(
        () => this.#onWake(),
        (err) => {
          this.#unsubscribe = undefined;
          this.#emit('relay:error', { phase: 'listen', error: err });
          this.#logger.warn('LISTEN connection lost; polling until it is back', { error: String(err) });
          this.#retry();
        },
      );
    } catch (err) {
      this.#emit('relay:error', { phase: 'listen', error: err });
      this.#logger.warn('cannot LISTEN; polling until it works', { error: String(err) });
      this.#retry();
      return;
    }
    if (this.#stopped.signal.aborted) {
      // stop() ran while we subscribed: nobody else will close this one.
      await unsubscribe().catch(() => undefined);
      return;
    }
    this.#unsubscribe = unsubscribe;
    this.#failures = 0;
    // Notifications sent while we were not listening are gone: look for work now.
    this.#onWake();
  }

  #retry(): void {
    if (this.#stopped.signal.aborted) return;
    this.#failures++;
    const delay = Math.min(30_000, 250 * 2 ** Math.min(this.#failures, 8));
    this.#pending = this.#clock.sleep(delay, this.#stopped.signal).then((full) => {
      if (full) return this.#attempt();
    });
  }
}
