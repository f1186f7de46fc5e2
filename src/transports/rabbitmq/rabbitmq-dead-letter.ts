/**
 * Dead letters of {@link RabbitMqConsumer}: the failed delivery republished, body and properties
 * unchanged, to the dead-letter queue through the default exchange, on a confirm channel, with
 * headers saying why. The original is acknowledged only after the broker confirmed the copy.
 *
 * @module
 */
import type {
  AmqpDeadLetterChannel,
  AmqpDeadLetterProperties,
  AmqpDelivery,
  AmqpReturn,
} from './amqp-consumer-client.js';
import { deadLetterFailedError } from './rabbitmq-consumer-errors.js';
import { describe } from './rabbitmq-errors.js';

/** The error of the last failed run (or why the message could not be decoded), truncated. */
export const ERROR_HEADER = 'mailroom-error';
/** Handler runs that failed, as a decimal string; `'0'` for a message that could not be decoded. */
export const FAILED_ATTEMPTS_HEADER = 'mailroom-failed-attempts';
/** When it was dead-lettered, ISO 8601. */
export const DEAD_AT_HEADER = 'mailroom-dead-at';
/** `handler_failed` or `malformed`. */
export const DEAD_REASON_HEADER = 'mailroom-dead-reason';
/** The queue it was consumed from. */
export const DEAD_QUEUE_HEADER = 'mailroom-dead-queue';
/** The routing key it arrived with (its topic): the dead letter itself is routed by queue name. */
export const DEAD_TOPIC_HEADER = 'mailroom-dead-topic';

/** Longest `mailroom-error` value, in characters; longer messages end with `…`. */
export const MAX_ERROR_HEADER_CHARS = 1000;

/**
 * How long to wait for the broker's confirm of a dead letter. A broker that does not confirm in
 * that time leaves the original unacknowledged; it is dead-lettered again later.
 */
const CONFIRM_TIMEOUT_MS = 30_000;

/** Why a message is dead-lettered. */
export interface DeadLetterReason {
  reason: 'handler_failed' | 'malformed';
  error: Error;
  failedAttempts: number;
  /** The queue it was consumed from. */
  queue: string;
  deadAt: Date;
}

/** The error as a header value: its message, cut to {@link MAX_ERROR_HEADER_CHARS}. */
export function errorHeader(error: Error): string {
  const text = error.message || error.name || String(error);
  return text.length <= MAX_ERROR_HEADER_CHARS ? text : `${text.slice(0, MAX_ERROR_HEADER_CHARS - 1)}…`;
}

/**
 * The properties of the dead letter: the original's (minus `expiration`, so it does not vanish
 * from the dead-letter queue, and `user-id`, which the broker checks against this connection's
 * user), persistent, with the original headers and the dead-letter headers.
 */
export function deadLetterProperties(
  delivery: AmqpDelivery,
  why: DeadLetterReason,
): AmqpDeadLetterProperties {
  const p = delivery.properties;
  const properties: AmqpDeadLetterProperties = {
    mandatory: true,
    persistent: true,
    headers: {
      ...p.headers,
      [ERROR_HEADER]: errorHeader(why.error),
      [FAILED_ATTEMPTS_HEADER]: String(why.failedAttempts),
      [DEAD_AT_HEADER]: why.deadAt.toISOString(),
      [DEAD_REASON_HEADER]: why.reason,
      [DEAD_QUEUE_HEADER]: why.queue,
      [DEAD_TOPIC_HEADER]: delivery.fields.routingKey,
    },
  };
  if (typeof p.messageId === 'string') properties.messageId = p.messageId;
  if (typeof p.contentType === 'string') properties.contentType = p.contentType;
  if (typeof p.contentEncoding === 'string') properties.contentEncoding = p.contentEncoding;
  if (typeof p.type === 'string') properties.type = p.type;
  if (typeof p.timestamp === 'number') properties.timestamp = p.timestamp;
  if (typeof p.correlationId === 'string') properties.correlationId = p.correlationId;
  if (typeof p.replyTo === 'string') properties.replyTo = p.replyTo;
  if (typeof p.appId === 'string') properties.appId = p.appId;
  if (typeof p.priority === 'number') properties.priority = p.priority;
  return properties;
}

/**
 * Publishes dead letters one at a time on a confirm channel. One at a time because a
 * `basic.return` names no delivery tag: with a single publish in flight, a return belongs to it
 * (RabbitMQ sends it before that publish's confirm). Dead letters are rare; the cost is nil.
 */
export class DeadLetterPublisher {
  readonly #channel: AmqpDeadLetterChannel;
  readonly #queue: string;
  #tail: Promise<void> = Promise.resolve();
  /** The return of the publish in flight, when the broker returned it. */
  #returned: AmqpReturn | undefined;

  constructor(channel: AmqpDeadLetterChannel, queue: string) {
    this.#channel = channel;
    this.#queue = queue;
    channel.on('return', (message) => {
      this.#returned = message;
    });
  }

  /**
   * Resolves once the broker confirmed the dead letter; rejects with a `dead_letter_failed`
   * TransportError when it nacked or returned it, did not confirm in time, or the channel closed.
   */
  publish(delivery: AmqpDelivery, why: DeadLetterReason): Promise<void> {
    const run = this.#tail.then(() => this.#publishOne(delivery, why));
    this.#tail = run.catch(() => {});
    return run;
  }

  #publishOne(delivery: AmqpDelivery, why: DeadLetterReason): Promise<void> {
    const queue = this.#queue;
    const id = typeof delivery.properties.messageId === 'string' ? delivery.properties.messageId : null;
    return new Promise<void>((resolve, reject) => {
      let done = false;
      const finish = (err?: Error): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(() => {
        finish(
          deadLetterFailedError(queue, id, `the broker did not confirm it within ${CONFIRM_TIMEOUT_MS} ms`),
        );
      }, CONFIRM_TIMEOUT_MS);
      this.#returned = undefined;
      try {
        this.#channel.publish('', queue, delivery.content, deadLetterProperties(delivery, why), (err) => {
          const returned = this.#returned;
          this.#returned = undefined;
          if (err !== null && err !== undefined) {
            const nacked = (err as { message?: unknown }).message === 'message nacked';
            const text = nacked
              ? 'the broker nacked it (a full queue with overflow reject-publish?)'
              : `the channel closed before the broker confirmed it (${describe(err)})`;
            finish(deadLetterFailedError(queue, id, text, err));
          } else if (returned !== undefined) {
            const code = returned.fields.replyCode ?? 312;
            const text = returned.fields.replyText ?? 'NO_ROUTE';
            finish(
              deadLetterFailedError(
                queue,
                id,
                `the broker returned it as unroutable (${code} ${text}): the queue does not exist; ` +
                  'create it, or set declare: true',
              ),
            );
          } else {
            finish();
          }
        });
      } catch (err) {
        finish(deadLetterFailedError(queue, id, `the client refused to send it (${describe(err)})`, err));
      }
    });
  }
}
