import { WaitError } from './errors/wait-error.js';
import { custom, integer, MAX_TIMER_MS, oneOf, optionsSchema } from './options-schema.js';
import type { AckPort, MessageState, MessageStatus, OutboxStore } from './ports.js';

/** Options of `outbox.waitFor()`. */
export interface WaitForOptions {
  /**
   * `delivered`: the transport confirmed the message. `acknowledged`: the receiver acknowledged
   * it (messages sent with `ack`).
   *
   * @default 'delivered'
   */
  until?: 'delivered' | 'acknowledged';
  /** Stop waiting when this aborts (rejects with a `WaitError`, code `aborted`). */
  signal?: AbortSignal;
  /**
   * Longest wait; then a `WaitError` with code `timeout`. Nothing waits forever: pass a larger
   * value (up to about 24 days) for long acknowledgement timeouts.
   *
   * @default 30000
   */
  timeoutMs?: number;
  /**
   * Longest pause between two reads of the state. Reads start 50 ms apart and slow down to this;
   * a store notification (PostgreSQL, for messages with `ack` or `callback`) wakes the waiter at
   * once.
   *
   * @default 1000
   */
  pollIntervalMs?: number;
}

const waitForSchema = optionsSchema<WaitForOptions>()('waitFor', {
  until: oneOf(['delivered', 'acknowledged'], { default: 'delivered' }),
  signal: custom('an AbortSignal', (v): v is AbortSignal => v instanceof AbortSignal),
  timeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 30_000 }),
  pollIntervalMs: integer({ min: 10, max: MAX_TIMER_MS, default: 1000 }),
});

const IN_OUTBOX: ReadonlySet<MessageState> = new Set(['pending', 'in-flight']);

/**
 * What a status means for a waiter: resolve, reject, or go on waiting. `seen` is true once the
 * message was read in the outbox. A message without `ack` is deleted once delivered, so for
 * `delivered` an unknown id counts as delivered (the caller waits for a message it committed).
 */
function verdict(
  status: MessageStatus,
  until: 'delivered' | 'acknowledged',
  seen: boolean,
): 'resolve' | WaitError | 'wait' {
  const { id, state } = status;
  const details = { status };
  if (state === 'dead') {
    return new WaitError(
      'dead',
      `message ${id} became a dead letter${status.lastError ? `: ${status.lastError}` : ''}; ` +
        'see `mailroom dlq list`, fix the cause and replay it',
      { details },
    );
  }
  if (until === 'delivered') {
    if (state === 'awaiting-ack' || state === 'acknowledged' || state === 'expired') return 'resolve';
    if (state === 'unknown') return 'resolve';
    return 'wait';
  }
  if (state === 'acknowledged') return 'resolve';
  if (state === 'expired') {
    return new WaitError(
      'expired',
      `message ${id} expired: no acknowledgement after ${(status.resends ?? 0) + 1} deliveries`,
      { details },
    );
  }
  if (state === 'unknown' && seen) {
    return new WaitError(
      'not_tracked',
      `message ${id} was delivered without ack, so no acknowledgement will come; ` +
        "enqueue it with ack: { timeoutMs } to wait for one, or wait with until: 'delivered'",
      { details },
    );
  }
  return 'wait';
}

/** `outbox.waitFor()`: reads the state until it is reached, woken early by the store's notifications. */
export async function waitForState(
  store: AckPort & Pick<OutboxStore, 'subscribeState'>,
  id: string,
  options: WaitForOptions,
): Promise<MessageStatus> {
  const { until, signal, timeoutMs, pollIntervalMs } = waitForSchema.resolve(options);
  const deadline = Date.now() + timeoutMs;
  let wake: (() => void) | undefined;
  let woken = false;
  const onAbort = () => wake?.();
  signal?.addEventListener('abort', onAbort);
  let unsubscribe: (() => Promise<void>) | undefined;
  if (typeof store.subscribeState === 'function') {
    try {
      unsubscribe = await store.subscribeState(
        (changed) => {
          if (changed === id) {
            woken = true;
            wake?.();
          }
        },
        // A lost subscription leaves the poll, which reaches the same answer a little later.
        () => undefined,
      );
    } catch {
      // As above: polling alone.
    }
  }
  let last: MessageStatus | undefined;
  try {
    let seen = false;
    let pause = 50;
    for (;;) {
      if (signal?.aborted) {
        throw new WaitError('aborted', `stopped waiting for message ${id}: the signal aborted`, {
          details: { status: last },
        });
      }
      woken = false;
      const [status] = await store.status([id]);
      last = status ?? { id, state: 'unknown' };
      if (IN_OUTBOX.has(last.state)) seen = true;
      const v = verdict(last, until, seen);
      if (v === 'resolve') return last;
      if (v instanceof WaitError) throw v;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new WaitError(
          'timeout',
          `message ${id} was not ${until} within ${timeoutMs} ms (last state: ${last.state}); ` +
            'raise timeoutMs, or check the relay with `mailroom status`',
          { details: { status: last, timeoutMs } },
        );
      }
      if (!woken) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(finish, Math.min(pause, left));
          function finish() {
            clearTimeout(timer);
            wake = undefined;
            resolve();
          }
          wake = finish;
        });
      }
      pause = Math.min(pollIntervalMs, pause * 2);
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await unsubscribe?.().catch(() => undefined);
  }
}
