/**
 * One batch on a confirm channel: the send loop with backpressure, the AMQP properties of each
 * message, and the reading of each confirm as an outcome.
 *
 * @module
 */
import type { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import type { PublishOutcome } from '../../core/ports.js';
import type { OutboxMessage } from '../../core/types.js';
import type { AmqpPublishOptions } from './amqp-client.js';
import {
  channelClosedError,
  channelExceptionError,
  confirmLostError,
  confirmTimeoutError,
  distributionHeaderError,
  messageTooLargeError,
  nackedError,
  publishAbortedError,
  unencodableError,
  unroutableError,
} from './rabbitmq-errors.js';
import type { ResolvedRabbitMqTransportOptions } from './rabbitmq-options.js';
import type { Session } from './rabbitmq-session.js';

/** Header carrying the message key (absent for keyless messages). */
export const KEY_HEADER = 'mailroom-key';
/** Header carrying the delivery attempt, `'1'` for the first, as a decimal string. */
export const ATTEMPT_HEADER = 'mailroom-attempt';

/** Per-call state of a batch, shared by the send loop, the confirm callbacks and the timer. */
interface BatchState {
  outcomes: Array<PublishOutcome | undefined>;
  pending: number;
  finished: boolean;
  /** True when the batch ended with messages the broker never answered (timeout, abort). */
  unanswered: boolean;
  done: () => void;
  /** Wakes the send loop when it waits for 'drain' and the batch ends early. */
  wake: (() => void) | undefined;
}

/** What a batch came to. */
export interface BatchResult {
  /** One per message, in batch order. */
  outcomes: PublishOutcome[];
  /**
   * Some messages got no answer from the broker in time (confirm timeout, aborted signal): the
   * session is not worth keeping (unless the broker said it blocks publishers), and the caller
   * drops it.
   */
  unanswered: boolean;
}

/**
 * Publishes the batch pipelined on the session's confirm channel and waits for the broker's
 * confirms, at most `confirmTimeoutMs` and until `signal` aborts. Never rejects; one outcome per
 * message, in order. Confirms that arrive after the batch ended are ignored.
 *
 * How each failure is read (the relay spends an attempt on `retry`, none on `unavailable`):
 * - the connection is lost (socket error, heartbeat timeout, broker closed it) or the broker
 *   does not confirm in time: `unavailable`. That says nothing about the messages.
 * - the broker closes only the channel with a channel-level exception (404 NOT_FOUND exchange,
 *   403 ACCESS_REFUSED, 406 PRECONDITION_FAILED) and keeps the connection: `retry`. The broker
 *   is up and answering; what was published (or where) is refused, and publishing again after a
 *   reconnect fails the same way. Reading it as an outage would make the relay probe (which
 *   succeeds: it connects), publish, fail, and probe again forever, without any message ever
 *   spending an attempt or reaching the dead letters. As `retry`, the messages follow their
 *   backoff and end as dead letters an operator can see and replay once the cause is fixed.
 *   AMQP does not say which message caused the exception, so every message of the channel
 *   without a confirm pays: the cost of one poisoned batch, which the checks before sending
 *   (`maxMessageBytes`, `CC`/`BCC` headers) avoid for the causes known to be about one message.
 * - a nack: `retry`; returned as unroutable (mandatory) or not encodable: `permanent`.
 */
export function publishBatch(
  session: Session,
  messages: readonly OutboxMessage[],
  options: Readonly<ResolvedRabbitMqTransportOptions>,
  signal: AbortSignal | undefined,
): Promise<BatchResult> {
  const { exchange, mandatory, confirmTimeoutMs, maxMessageBytes, safeUrl } = options;
  return new Promise<BatchResult>((resolve) => {
    const batch: BatchState = {
      outcomes: new Array<PublishOutcome | undefined>(messages.length).fill(undefined),
      pending: messages.length,
      finished: false,
      unanswered: false,
      wake: undefined,
      done: () => {
        batch.finished = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        batch.wake?.();
        resolve({ outcomes: batch.outcomes as PublishOutcome[], unanswered: batch.unanswered });
      },
    };
    const settle = (index: number, outcome: PublishOutcome): void => {
      if (batch.outcomes[index] !== undefined) return; // a late confirm after a timeout or abort
      batch.outcomes[index] = outcome;
      if (--batch.pending === 0) batch.done();
    };
    /** A message the channel closed on before it was sent. */
    const notSent = (message: OutboxMessage, cause?: unknown): PublishOutcome => {
      const exception = session.state.channelException;
      if (exception) {
        return {
          status: 'retry',
          error: channelExceptionError(safeUrl, exchange, message, exception, false),
        };
      }
      return {
        status: 'unavailable',
        error: channelClosedError(safeUrl, message, session.state.lostReason, cause),
      };
    };

    const timer = setTimeout(() => {
      batch.unanswered = true;
      messages.forEach((message, index) => {
        settle(index, {
          status: 'unavailable',
          error: confirmTimeoutError(safeUrl, confirmTimeoutMs, message, session.state.blockedReason),
        });
      });
    }, confirmTimeoutMs);
    // Messages before this index were handed to the client (or refused); an abort reports the
    // others as never sent. Exact when an abort arrives: the loop only yields waiting for drain.
    let sentUpTo = 0;
    const onAbort = (): void => {
      if (batch.finished || signal === undefined) return;
      batch.unanswered = sentUpTo > 0;
      const blocked = session.state.blockedReason;
      messages.forEach((message, index) => {
        const stage = index < sentUpTo ? 'unconfirmed' : 'unsent';
        settle(index, {
          status: 'unavailable',
          error: publishAbortedError(safeUrl, message, signal, stage, blocked),
        });
      });
    };
    if (signal?.aborted) {
      onAbort();
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });

    const send = async (): Promise<void> => {
      for (let index = 0; index < messages.length; index++) {
        const message = messages[index] as OutboxMessage;
        if (batch.finished) return;
        sentUpTo = index + 1;
        const refused = refuseBeforeSending(message, maxMessageBytes);
        if (refused) {
          settle(index, refused);
          continue;
        }
        if (!session.open) {
          settle(index, notSent(message));
          continue;
        }
        let writable: boolean;
        try {
          writable = session.channel.publish(
            exchange,
            message.topic,
            message.payload,
            messageProperties(message, mandatory),
            (err) => settle(index, confirmOutcome(session, message, err, options)),
          );
        } catch (err) {
          settle(index, unencodable(message, err) ?? notSent(message, err));
          continue;
        }
        // Backpressure: the client buffers frames until the socket takes them. Stop when it
        // says its buffer is full, instead of queueing the whole batch in memory.
        if (!writable && index < messages.length - 1) await drained(session, batch);
      }
    };
    send().catch((err: unknown) => {
      // Not expected (the loop catches per message), but a batch must never hang or reject.
      messages.forEach((message, index) => settle(index, notSent(message, err)));
    });
  });
}

/**
 * Headers RabbitMQ reads as sender-selected distribution lists; it requires an array of strings
 * there and closes the channel (406 PRECONDITION_FAILED, `unacceptable_type_in_header`) for
 * anything else. Mailroom header values are always strings, so such a message can never be sent.
 */
const DISTRIBUTION_HEADERS = ['CC', 'BCC'] as const;

/**
 * A `permanent` outcome for a message the broker is certain to refuse by closing the channel:
 * refusing it here keeps it from failing every other message in flight on that channel.
 */
export function refuseBeforeSending(
  message: OutboxMessage,
  maxMessageBytes: number,
): { status: 'permanent'; error: PermanentDeliveryError } | undefined {
  if (message.payload.length > maxMessageBytes) {
    return { status: 'permanent', error: messageTooLargeError(message, maxMessageBytes) };
  }
  const header = DISTRIBUTION_HEADERS.find((name) => Object.hasOwn(message.headers, name));
  if (header !== undefined) {
    return { status: 'permanent', error: distributionHeaderError(message, header) };
  }
  return undefined;
}

/** The AMQP properties of one message: id, type, content type, timestamp and Mailroom headers. */
export function messageProperties(message: OutboxMessage, mandatory: boolean): AmqpPublishOptions {
  const headers: Record<string, unknown> = {
    ...message.headers,
    [ATTEMPT_HEADER]: String(message.attempts),
  };
  if (message.key !== null) headers[KEY_HEADER] = message.key;
  else delete headers[KEY_HEADER]; // a user header must not pose as the key
  const properties: AmqpPublishOptions = {
    mandatory,
    persistent: true,
    messageId: message.id,
    contentType: message.contentType,
    timestamp: Math.floor(message.createdAt.getTime() / 1000),
    headers,
  };
  if (message.type !== null) properties.type = message.type;
  return properties;
}

function drained(session: Session, batch: BatchState): Promise<void> {
  if (!session.open) return Promise.resolve();
  return new Promise((resolve) => {
    const finish = (): void => {
      session.channel.removeListener('drain', finish);
      session.channel.removeListener('close', finish);
      batch.wake = undefined;
      resolve();
    };
    session.channel.on('drain', finish);
    session.channel.on('close', finish);
    batch.wake = finish;
  });
}

function confirmOutcome(
  session: Session,
  message: OutboxMessage,
  err: unknown,
  options: Readonly<ResolvedRabbitMqTransportOptions>,
): PublishOutcome {
  // Take the return even when the outcome is already settled, so the map does not grow.
  const returns = session.returned.get(message.id);
  const returned = returns?.shift();
  if (returns?.length === 0) session.returned.delete(message.id);

  if (err === null || err === undefined) {
    if (returned === undefined) return { status: 'ok' };
    return { status: 'permanent', error: unroutableError(message, options.exchange, returned) };
  }
  // amqplib reports a nack as 'message nacked' and a channel that closed with messages
  // unconfirmed as 'channel closed'; the session state says why it closed.
  if ((err as { message?: unknown }).message === 'message nacked') {
    return { status: 'retry', error: nackedError(message, options.exchange, err) };
  }
  const exception = session.state.channelException;
  if (exception) {
    return {
      status: 'retry',
      error: channelExceptionError(options.safeUrl, options.exchange, message, exception, true),
    };
  }
  // A lost connection, or anything unexpected: the safe reading is that the broker may not
  // have the message, and that it says nothing about the message itself.
  return {
    status: 'unavailable',
    error: confirmLostError(options.safeUrl, message, session.state.lostReason, err),
  };
}

/**
 * The client checks the message before writing anything: a RangeError or TypeError means this
 * message can never be encoded (headers over the 64 KiB table limit…), so retrying is useless.
 * Anything else means the channel is closing or closed (amqplib's IllegalOperationError): not
 * this function's to answer (undefined).
 */
function unencodable(message: OutboxMessage, err: unknown): PublishOutcome | undefined {
  if (err instanceof RangeError || err instanceof TypeError) {
    return { status: 'permanent', error: unencodableError(message, err) };
  }
  return undefined;
}
