/**
 * One batch on a confirm channel: the send loop with backpressure, the AMQP properties of each
 * message, and the reading of each confirm as an outcome.
 *
 * @module
 */
import type { PublishOutcome } from '../../core/ports.js';
import type { OutboxMessage } from '../../core/types.js';
import type { AmqpPublishOptions } from './amqp-client.js';
import {
  channelClosedError,
  confirmLostError,
  confirmTimeoutError,
  nackedError,
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
  done: () => void;
  /** Wakes the send loop when it waits for 'drain' and the batch ends early. */
  wake: (() => void) | undefined;
}

/**
 * Publishes the batch pipelined on the session's confirm channel and waits for the broker's
 * confirms, at most `confirmTimeoutMs`. Never rejects; one outcome per message, in order.
 */
export function publishBatch(
  session: Session,
  messages: readonly OutboxMessage[],
  options: Readonly<ResolvedRabbitMqTransportOptions>,
): Promise<PublishOutcome[]> {
  const { exchange, mandatory, confirmTimeoutMs, safeUrl } = options;
  return new Promise<PublishOutcome[]>((resolve) => {
    const batch: BatchState = {
      outcomes: new Array<PublishOutcome | undefined>(messages.length).fill(undefined),
      pending: messages.length,
      finished: false,
      wake: undefined,
      done: () => {
        batch.finished = true;
        clearTimeout(timer);
        batch.wake?.();
        resolve(batch.outcomes as PublishOutcome[]);
      },
    };
    const settle = (index: number, outcome: PublishOutcome): void => {
      if (batch.outcomes[index] !== undefined) return; // a late confirm after the timeout
      batch.outcomes[index] = outcome;
      if (--batch.pending === 0) batch.done();
    };
    const channelClosed = (message: OutboxMessage, cause?: unknown): PublishOutcome => ({
      status: 'retry',
      error: channelClosedError(safeUrl, message, session.state.lostReason, cause),
    });

    const timer = setTimeout(() => {
      messages.forEach((message, index) => {
        settle(index, {
          status: 'retry',
          error: confirmTimeoutError(safeUrl, confirmTimeoutMs, message, session.state.blockedReason),
        });
      });
    }, confirmTimeoutMs);

    const send = async (): Promise<void> => {
      for (let index = 0; index < messages.length; index++) {
        const message = messages[index] as OutboxMessage;
        if (batch.finished) return;
        if (!session.open) {
          settle(index, channelClosed(message));
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
          settle(index, sendFailure(message, err) ?? channelClosed(message, err));
          continue;
        }
        // Backpressure: the client buffers frames until the socket takes them. Stop when it
        // says its buffer is full, instead of queueing the whole batch in memory.
        if (!writable && index < messages.length - 1) await drained(session, batch);
      }
    };
    send().catch((err: unknown) => {
      // Not expected (the loop catches per message), but a batch must never hang or reject.
      messages.forEach((message, index) => settle(index, channelClosed(message, err)));
    });
  });
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
  // amqplib reports a nack as 'message nacked' and a channel lost with messages unconfirmed as
  // 'channel closed'; anything else is treated as lost too, which is the safe reading (retry).
  if ((err as { message?: unknown }).message === 'message nacked') {
    return { status: 'retry', error: nackedError(message, options.exchange, err) };
  }
  return {
    status: 'retry',
    error: confirmLostError(options.safeUrl, message, session.state.lostReason, err),
  };
}

/**
 * The client checks the message before writing anything: a RangeError or TypeError means this
 * message can never be encoded (headers over the 64 KiB table limit…), so retrying is useless.
 * Anything else means the channel is closing or closed (amqplib's IllegalOperationError): the
 * caller reads it as such (undefined here).
 */
function sendFailure(message: OutboxMessage, err: unknown): PublishOutcome | undefined {
  if (err instanceof RangeError || err instanceof TypeError) {
    return { status: 'permanent', error: unencodableError(message, err) };
  }
  return undefined;
}
