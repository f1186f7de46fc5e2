/**
 * One batch on the publishing connection: every message a SEND with a `receipt`, written back to
 * back (waiting for `drain` when the socket's buffer is full), then the RECEIPTs awaited under
 * `receiptTimeoutMs` and the caller's signal; and the outcome of each failure.
 *
 * @module
 */
import { isPermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import type { PublishOutcome } from '../../core/ports.js';
import type { OutboxMessage } from '../../core/types.js';
import type { StompConnection } from './stomp-connection.js';
import {
  isStompRefusal,
  messageTooLargeError,
  publishAbortedError,
  receiptLostError,
  receiptTimeoutError,
  refusedMessageError,
} from './stomp-errors.js';
import { destinationFor, type ResolvedStompTransportOptions } from './stomp-options.js';
import { sendHeaders } from './stomp-wire.js';

/** What a batch came to: an outcome per message, and whether the broker left some unanswered. */
export interface BatchResult {
  outcomes: PublishOutcome[];
  /** True when the wait ended (deadline or signal) with RECEIPTs missing: drop the connection. */
  unanswered: boolean;
}

/** The outcome of a message the broker answered with an ERROR frame, or never answered. */
export function failedOutcome(
  options: Readonly<ResolvedStompTransportOptions>,
  message: OutboxMessage,
  err: unknown,
  sent: boolean,
  connection: StompConnection,
): PublishOutcome {
  const { safeUrl } = options.endpoint;
  if (isStompRefusal(err)) {
    const error = refusedMessageError(
      safeUrl,
      message,
      destinationFor(options.destination, message.topic),
      err,
    );
    return isPermanentDeliveryError(error) ? { status: 'permanent', error } : { status: 'retry', error };
  }
  const lost = connection.lostReason ?? (err instanceof Error ? err : new Error(String(err)));
  return { status: 'unavailable', error: receiptLostError(safeUrl, message, lost, sent) };
}

/**
 * Sends the batch on `connection` and waits for its RECEIPTs. Never throws. Messages the
 * transport refuses itself (too large, a reserved header) are `permanent` and not sent.
 */
export async function publishBatch(
  connection: StompConnection,
  messages: readonly OutboxMessage[],
  options: Readonly<ResolvedStompTransportOptions>,
  signal: AbortSignal | undefined,
): Promise<BatchResult> {
  const outcomes: Array<PublishOutcome | undefined> = new Array<PublishOutcome | undefined>(messages.length);
  const sent: boolean[] = new Array<boolean>(messages.length).fill(false);
  const answers: Array<Promise<void>> = [];
  const stop = AbortSignal.any([connection.ended, ...(signal ? [signal] : [])]);

  for (const [i, message] of messages.entries()) {
    if (stop.aborted) break;
    if (message.payload.length > options.maxMessageBytes) {
      outcomes[i] = { status: 'permanent', error: messageTooLargeError(message, options.maxMessageBytes) };
      continue;
    }
    let headers;
    try {
      headers = sendHeaders(message, destinationFor(options.destination, message.topic), options.persistent);
    } catch (err) {
      outcomes[i] = { status: 'permanent', error: err as Error };
      continue;
    }
    const request = connection.request('SEND', headers, message.payload);
    sent[i] = true;
    answers.push(
      request.answered.then(
        () => {
          outcomes[i] ??= { status: 'ok' };
        },
        (err: unknown) => {
          outcomes[i] ??= failedOutcome(options, message, err, true, connection);
        },
      ),
    );
    // Backpressure: the next frame waits while the socket's buffer is full.
    if (!(await settledBefore(request.written, stop))) break;
  }

  const timedOut = new AbortController();
  const timer = setTimeout(() => timedOut.abort(), options.receiptTimeoutMs);
  const done = await settledBefore(
    Promise.all(answers),
    AbortSignal.any([timedOut.signal, ...(signal ? [signal] : [])]),
  );
  clearTimeout(timer);

  const { safeUrl } = options.endpoint;
  const result = messages.map((message, i): PublishOutcome => {
    const outcome = outcomes[i];
    if (outcome !== undefined) return outcome;
    if (signal?.aborted) {
      return {
        status: 'unavailable',
        error: publishAbortedError(safeUrl, message, signal, sent[i] ? 'unanswered' : 'unsent'),
      };
    }
    if (!done && sent[i] && connection.open) {
      return {
        status: 'unavailable',
        error: receiptTimeoutError(safeUrl, options.receiptTimeoutMs, message),
      };
    }
    return failedOutcome(options, message, connection.lostReason, sent[i] ?? false, connection);
  });
  return { outcomes: result, unanswered: !done };
}

/** True when `promise` settled (either way) before `signal` aborted; false otherwise. Never rejects. */
export function settledBefore(promise: Promise<unknown>, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise<boolean>((resolve) => {
    const onAbort = () => resolve(false);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      () => {
        signal.removeEventListener('abort', onAbort);
        resolve(true);
      },
      () => {
        signal.removeEventListener('abort', onAbort);
        resolve(true);
      },
    );
  });
}
