import { setMaxListeners } from 'node:events';
import type { Clock } from '../core/clock.js';
import { RelayStateError } from '../core/errors/relay-state-error.js';
import { silentLogger } from '../core/logger.js';
import type { CallbackEvent, CallbackPort } from '../core/ports.js';
import { redactUrl } from '../core/redact.js';
import { retryDelayMs } from '../core/retry-policy.js';
import { TypedEmitter } from '../core/typed-emitter.js';
import {
  resolveCallbackDispatcherOptions,
  type CallbackDispatcherOptions,
  type ResolvedCallbackDispatcherOptions,
} from './callback-dispatcher-options.js';
import { postCallback, type PostContext, type PostOutcome } from './callback-post.js';

/** Events a dispatcher emits. Listeners that throw are logged and ignored. */
export interface CallbackDispatcherEvents {
  'callback:delivered': { callback: CallbackEvent; status: number };
  'callback:retry': { callback: CallbackEvent; error: string; delayMs: number };
  'callback:dead': { callback: CallbackEvent; error: string };
  'callback:error': { phase: 'claim' | 'settle'; error: unknown };
}

type Settlement = Parameters<CallbackPort['settleCallbacks']>[0];

/** A claim between its POSTs and its settle. */
interface Batch {
  done: Promise<void>;
}

/** How long POSTs aborted at the stop deadline get to be settled before `stop()` returns. */
const ABORT_GRACE_MS = 1000;

/**
 * POSTs the outcomes of messages that asked for a `callback` (`delivered`, `acknowledged`,
 * `expired`, `dead`) to their URLs, signed with Standard Webhooks headers, from a loop of its own:
 * a slow or dead receiver never holds up messages.
 *
 * Each claim takes due callbacks under a lease, up to the free POST slots; each callback is
 * POSTed once per attempt with the same `webhook-id` (receivers deduplicate on it). A 2xx
 * delivers it; a 4xx other than 408 and 429 makes it dead at once (the receiver refuses it);
 * anything else (5xx, 408, 429, a redirect, a timeout, a refused connection, a name that does not
 * resolve) is retried with exponential backoff and full jitter until `maxAttempts`, then it is
 * dead. Delivery is at least once: a dispatcher that dies after the POST and before the settle
 * leaves the callback to be POSTed again after its lease.
 *
 * @example
 * ```ts
 * const dispatcher = new CallbackDispatcher({ store, secret: process.env.MAILROOM_CALLBACK_SECRET! });
 * dispatcher.start();
 * // … on shutdown:
 * await dispatcher.stop();
 * ```
 */
export class CallbackDispatcher extends TypedEmitter<CallbackDispatcherEvents> {
  readonly options: ResolvedCallbackDispatcherOptions;
  readonly #store: CallbackPort;
  readonly #clock: Clock;
  readonly #post: Omit<PostContext, 'signal'>;
  readonly #maxAttempts: number;
  readonly #batches = new Set<Batch>();
  /** Stops the loop (stop() called). */
  readonly #abort = new AbortController();
  /** Aborts the POSTs in flight (stop()'s deadline passed). */
  readonly #abortPosts = new AbortController();
  #posting = 0;
  /** The loop waits for a free POST slot: a finished POST wakes it. */
  #full = false;
  #wakes = 0;
  #waker: AbortController | undefined;
  #loop: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #externalSignal: AbortSignal | undefined;
  #onExternalAbort = (): void => void this.stop();

  constructor(options: CallbackDispatcherOptions) {
    super(options.logger ?? silentLogger);
    const {
      store,
      secret,
      fetch: fetchFn,
      logger: _logger,
      signal,
      ...resolved
    } = resolveCallbackDispatcherOptions(options);
    this.options = resolved;
    this.#store = store;
    this.#clock = resolved.clock;
    this.#externalSignal = signal;
    this.#maxAttempts = resolved.maxAttempts;
    // Every POST in flight listens on it: up to `concurrency`, which may pass Node's default of 10.
    setMaxListeners(resolved.concurrency + 10, this.#abortPosts.signal);
    this.#post = {
      // Looked up at construction, not import: a fetch patched by the application still counts.
      fetch: fetchFn ?? globalThis.fetch.bind(globalThis),
      keys: secret,
      timeoutMs: resolved.timeoutMs,
      clock: resolved.clock,
    };
  }

  /** True between `start()` and the end of `stop()`. */
  get running(): boolean {
    return this.#loop !== undefined && this.#stopping === undefined;
  }

  /** POSTs waiting for an answer right now. */
  get inFlight(): number {
    return this.#posting;
  }

  /** Starts the loop. Idempotent; throws after `stop()` (make a new dispatcher instead). */
  start(): void {
    if (this.#stopping) {
      throw new RelayStateError(
        'stopped',
        'this callback dispatcher was stopped; create a new CallbackDispatcher to start again',
      );
    }
    if (this.#loop) return;
    this.#loop = this.#run();
    this.#externalSignal?.addEventListener('abort', this.#onExternalAbort, { once: true });
    if (this.#externalSignal?.aborted) void this.stop();
    this.logger.info('callback dispatcher started', {
      event: 'callbacks_started',
      owner: this.options.owner,
    });
  }

  /**
   * Stops claiming and waits for the POSTs in flight and their settles, at most
   * `shutdownTimeoutMs`; then aborts the POSTs still waiting (settled as retries, due at once,
   * when the store answers within a second) and returns. Idempotent.
   */
  stop(): Promise<void> {
    this.#stopping ??= this.#shutdown();
    return this.#stopping;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** Look for due callbacks now: e.g. after a settle that queued some. Cheap; safe at any time. */
  wake(): void {
    this.#wakes++;
    this.#waker?.abort();
  }

  async #shutdown(): Promise<void> {
    this.#externalSignal?.removeEventListener('abort', this.#onExternalAbort);
    this.#abort.abort();
    this.#waker?.abort();
    const drained = async (): Promise<void> => {
      await this.#loop?.catch(() => undefined);
      while (this.#batches.size > 0) await Promise.allSettled([...this.#batches].map((b) => b.done));
    };
    const finished = new AbortController();
    const drain = drained().then(() => finished.abort());
    await this.#clock.sleep(this.options.shutdownTimeoutMs, finished.signal);
    let aborted = 0;
    if (!finished.signal.aborted) {
      aborted = this.#posting;
      this.#abortPosts.abort();
      const grace = new AbortController();
      await Promise.race([drain, this.#clock.sleep(ABORT_GRACE_MS, grace.signal)]);
      grace.abort();
      this.logger.warn('callback dispatcher stop deadline passed with POSTs in flight; they were aborted', {
        event: 'callbacks_stop_deadline_passed',
        aborted,
      });
    }
    this.logger.info('callback dispatcher stopped', {
      event: 'callbacks_stopped',
      owner: this.options.owner,
      aborted,
    });
  }

  async #run(): Promise<void> {
    const signal = this.#abort.signal;
    let claimFailures = 0;
    while (!signal.aborted) {
      const wakesBefore = this.#wakes;
      const free = this.options.concurrency - this.#posting;
      if (free <= 0) {
        // Every slot is busy: a finished POST wakes the loop.
        this.#full = true;
        await this.#sleep(this.options.pollIntervalMs, signal, wakesBefore);
        this.#full = false;
        continue;
      }
      const limit = Math.min(this.options.batchSize, free);
      let claimed: { leaseToken: string; callbacks: CallbackEvent[] };
      try {
        claimed = await this.#store.claimCallbacks({
          owner: this.options.owner,
          limit,
          leaseMs: this.options.leaseMs,
        });
        claimFailures = 0;
      } catch (err) {
        claimFailures++;
        this.emit('callback:error', { phase: 'claim', error: err });
        // The first failure of a run at warn, the retries with backoff at debug.
        this.logger[claimFailures === 1 ? 'warn' : 'debug']('callback claim failed; retrying', {
          event: 'callback_claim_failed',
          error: err,
          attempt: claimFailures,
        });
        await this.#clock.sleep(Math.min(5000, 100 * 2 ** Math.min(claimFailures, 6)), signal);
        continue;
      }
      if (claimed.callbacks.length > 0) {
        this.#startBatch(claimed.leaseToken, claimed.callbacks);
        // A full claim means there is probably more: claim again at once.
        if (claimed.callbacks.length === limit) continue;
      }
      if (signal.aborted) break;
      if (this.#wakes !== wakesBefore) continue;
      await this.#idle(signal, wakesBefore);
    }
  }

  /** Waits for a wake-up, the next due callback or the poll interval. */
  async #idle(signal: AbortSignal, seen: number): Promise<void> {
    let wait = this.options.pollIntervalMs;
    try {
      const due = await this.#store.nextCallbackDueInMs();
      if (due !== null && due < wait) wait = Math.max(1, Math.ceil(due));
    } catch {
      // The next claim meets the same problem and reports it.
    }
    await this.#sleep(wait, signal, seen);
  }

  /** Sleeps `ms`, cut short by stop() or by a wake-up after `seen` (also one that already came). */
  async #sleep(ms: number, signal: AbortSignal, seen: number): Promise<void> {
    if (signal.aborted || this.#wakes !== seen) return;
    const waker = new AbortController();
    this.#waker = waker;
    const onAbort = (): void => waker.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await this.#clock.sleep(ms, waker.signal);
    } finally {
      signal.removeEventListener('abort', onAbort);
      if (this.#waker === waker) this.#waker = undefined;
    }
  }

  #startBatch(leaseToken: string, callbacks: CallbackEvent[]): void {
    const batch: Batch = { done: Promise.resolve() };
    batch.done = this.#process(leaseToken, callbacks)
      .catch((err: unknown) => {
        // Not expected: #process reports its own failures. A batch must never reject.
        this.emit('callback:error', { phase: 'settle', error: err });
        this.logger.error('callback batch failed unexpectedly; its leases will expire', {
          event: 'callback_batch_failed',
          error: err,
        });
      })
      .finally(() => {
        this.#batches.delete(batch);
        // Its settle may have made retries due soon, and its slots are free.
        this.wake();
      });
    this.#batches.add(batch);
  }

  async #process(leaseToken: string, callbacks: CallbackEvent[]): Promise<void> {
    const claimedAt = this.#clock.now();
    const settlement: Settlement = { leaseToken, delivered: [], retry: [], dead: [] };
    const context: PostContext = { ...this.#post, signal: this.#abortPosts.signal };
    await Promise.all(
      callbacks.map(async (callback) => {
        // Attempts are counted at claim: one claimed more often than allowed never got an
        // answer (each dispatcher holding it stopped or died first). It is dead rather than
        // POSTed once more than asked.
        if (callback.attempts > this.#maxAttempts) {
          this.#dead(
            settlement,
            callback,
            `claimed ${callback.attempts - 1} times (maxAttempts ${this.#maxAttempts}) without an answer: ` +
              'each time the dispatcher holding it stopped or died before the receiver answered',
          );
          return;
        }
        this.#posting++;
        let outcome: PostOutcome;
        try {
          outcome = await postCallback(callback, context);
        } catch (err) {
          // postCallback does not throw; a failure here is a bug, and a retry is the safe answer.
          outcome = { kind: 'retry', error: `POST ${redactUrl(callback.url)} failed: ${String(err)}` };
        } finally {
          this.#posting--;
        }
        // Otherwise the batch's settle wakes the loop: one claim per batch, not per POST.
        if (this.#full) this.wake();
        this.#record(settlement, callback, outcome);
      }),
    );
    await this.#settle(settlement, claimedAt);
  }

  #record(settlement: Settlement, callback: CallbackEvent, outcome: PostOutcome): void {
    switch (outcome.kind) {
      case 'delivered':
        settlement.delivered.push(callback.id);
        this.logger.debug('callback delivered', this.#fields(callback, { status: outcome.status }));
        this.emit('callback:delivered', { callback, status: outcome.status });
        return;
      case 'dead':
        this.#dead(settlement, callback, outcome.error);
        return;
      case 'aborted':
        // Not the receiver's fault: due again at once, for the next dispatcher.
        settlement.retry.push({ id: callback.id, delayMs: 0, error: outcome.error });
        return;
      case 'retry': {
        if (callback.attempts >= this.#maxAttempts) {
          this.#dead(settlement, callback, `gave up after ${callback.attempts} attempts: ${outcome.error}`);
          return;
        }
        const { retry } = this.options;
        const backoff = retryDelayMs({ ...retry, maxAttempts: this.#maxAttempts }, callback.attempts);
        const delayMs = Math.min(retry.maxDelayMs, Math.max(backoff, outcome.retryAfterMs ?? 0));
        settlement.retry.push({ id: callback.id, delayMs, error: outcome.error });
        this.logger.debug(
          'callback failed; retrying',
          this.#fields(callback, { error: outcome.error, delayMs }),
        );
        this.emit('callback:retry', { callback, error: outcome.error, delayMs });
        return;
      }
    }
  }

  #dead(settlement: Settlement, callback: CallbackEvent, error: string): void {
    settlement.dead.push({ id: callback.id, error });
    this.logger.warn('callback dead', this.#fields(callback, { event: 'callback_dead', error }));
    this.emit('callback:dead', { callback, error });
  }

  #fields(callback: CallbackEvent, extra: Record<string, unknown>): Record<string, unknown> {
    return {
      id: callback.id,
      messageId: callback.messageId,
      event: callback.event,
      url: redactUrl(callback.url),
      attempts: callback.attempts,
      ...extra,
    };
  }

  /**
   * Settles, retrying while the claim's lease surely holds: past it another dispatcher may have
   * claimed the callbacks, and they are POSTed again (receivers deduplicate on webhook-id).
   */
  async #settle(settlement: Settlement, claimedAt: number): Promise<void> {
    const until = claimedAt + this.options.leaseMs;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#store.settleCallbacks(settlement);
        return;
      } catch (err) {
        this.emit('callback:error', { phase: 'settle', error: err });
        const delay = Math.min(1000, 50 * 2 ** attempt);
        if (this.#abortPosts.signal.aborted || this.#clock.now() + delay >= until) {
          this.logger.error('cannot settle callbacks; they will be POSTed again after their lease', {
            event: 'callback_settle_failed',
            error: err,
            attempt,
            count: settlement.delivered.length + settlement.retry.length + settlement.dead.length,
          });
          return;
        }
        await this.#clock.sleep(delay);
      }
    }
  }
}
