import type { Clock } from './clock.js';
import type { Logger } from './logger.js';
import type { OutboxStore, Unsubscribe, WakeGate } from './ports.js';
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

  /** As {@link wake}, for the relay's own bookkeeping (the wake gate was taken): no event. */
  nudge(): void {
    this.#count++;
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
          this.#logger.warn('LISTEN connection lost; polling until it is back', {
            event: 'listen_lost',
            error: err,
          });
          this.#retry();
        },
      );
    } catch (err) {
      this.#emit('relay:error', { phase: 'listen', error: err });
      this.#logger.warn('cannot LISTEN; polling until it works', { event: 'listen_lost', error: err });
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

/** Whether an error is a deadline passing (statement_timeout, a driver's read timeout). */
function isTimeout(err: unknown): boolean {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    if ((e as { code?: unknown }).code === '57014') return true;
    const message = (e as { message?: unknown }).message;
    if (typeof message === 'string' && /timeout/i.test(message)) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * Holds the store's {@link WakeGate} while the relay is idle and gives it back while it is
 * busy, so writers send wake-ups only when a relay sleeps (docs/design.md, "Wake-ups").
 *
 * The loop calls {@link request} after a short claim, before it sleeps. Taking the gate may
 * wait for writers that skipped their wake-up; the loop does not wait for it. It sleeps as
 * usual (a NOTIFY, `stop()`, the poll end the sleep), and when the gate is taken `onArmed`
 * wakes it, so it claims once more with the gate held before it sleeps for good. That last
 * claim is what sees the messages of the writers the gate waited for. The loop calls
 * {@link release} when a claim comes back full. A gate lost (its connection broke) is taken
 * again at once; while a gate cannot be taken, the poll finds the work.
 */
export class IdleGate {
  readonly #gate: WakeGate;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #emit: RelayEmit;
  readonly #onArmed: () => void;
  readonly #stopped = new AbortController();
  #state: 'open' | 'arming' | 'armed' | 'disarming' = 'open';
  #want = false;
  #driving: Promise<void> | undefined;
  #failures = 0;

  constructor(options: {
    gate: WakeGate;
    clock: Clock;
    logger: Logger;
    emit: RelayEmit;
    onArmed: () => void;
  }) {
    this.#gate = options.gate;
    this.#clock = options.clock;
    this.#logger = options.logger;
    this.#emit = options.emit;
    this.#onArmed = options.onArmed;
  }

  /** True while the gate is held: writers send wake-ups. */
  get armed(): boolean {
    return this.#state === 'armed';
  }

  /** The relay is about to sleep: take the gate (in the background) unless it holds it. */
  request(): void {
    this.#want = true;
    this.#drive();
  }

  /** The relay is busy: give the gate back, so writers stop sending wake-ups. */
  release(): void {
    if (!this.#want) return;
    this.#want = false;
    this.#drive();
  }

  /** Idempotent: stops taking the gate (an arm under way is aborted) and gives it back. */
  async stop(): Promise<void> {
    this.#want = false;
    this.#stopped.abort();
    await this.#driving;
    if (this.#state === 'armed') {
      this.#state = 'disarming';
      await this.#gate.disarm();
      this.#state = 'open';
    }
  }

  #drive(): void {
    if (this.#driving || this.#stopped.signal.aborted) return;
    this.#driving = this.#run().finally(() => {
      this.#driving = undefined;
      // A request or release that came while the last step ran.
      if (this.#want !== this.armed && !this.#stopped.signal.aborted) this.#drive();
    });
  }

  async #run(): Promise<void> {
    const stopped = this.#stopped.signal;
    while (!stopped.aborted) {
      if (this.#want && this.#state === 'open') {
        this.#state = 'arming';
        try {
          await this.#gate.arm({ signal: stopped, onLost: (err) => this.#lost(err) });
        } catch (err) {
          this.#state = 'open';
          if (stopped.aborted) return;
          // A deadline of the store ended a long wait (writers with long transactions, or
          // another relay holding the gate): ask again. Anything else: report, back off.
          if (isTimeout(err)) continue;
          this.#failures++;
          this.#emit('relay:error', { phase: 'listen', error: err });
          this.#logger.warn(
            'cannot take the wake gate; writers may skip wake-ups, polling finds their messages',
            { event: 'wake_gate_failed', error: err },
          );
          await this.#clock.sleep(Math.min(30_000, 250 * 2 ** Math.min(this.#failures, 8)), stopped);
          continue;
        }
        this.#failures = 0;
        this.#state = 'armed';
        // The loop claims once more, now that every writer that skipped its wake-up has ended.
        this.#onArmed();
        continue;
      }
      if (!this.#want && this.#state === 'armed') {
        this.#state = 'disarming';
        await this.#gate.disarm();
        this.#state = 'open';
        continue;
      }
      return;
    }
  }

  #lost(err: unknown): void {
    if (this.#state !== 'armed') return;
    this.#state = 'open';
    this.#emit('relay:error', { phase: 'listen', error: err });
    this.#logger.warn('wake gate connection lost; taking the gate again', {
      event: 'wake_gate_failed',
      error: err,
    });
    this.#drive();
  }
}
