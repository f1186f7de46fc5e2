/**
 * The errors of {@link RabbitMqConsumer} that the transport's (`rabbitmq-errors.ts`, which also
 * explains connect failures for the consumer) do not cover. URLs passed in are the redacted ones.
 *
 * @module
 */
import { ConfigError } from '../../core/errors/config-error.js';
import { TransportError } from '../../core/errors/transport-error.js';
import { describe } from './rabbitmq-errors.js';

export function consumerChannelError(safeUrl: string, err: unknown): TransportError {
  return new TransportError(
    'channel_failed',
    `connected to RabbitMQ at ${safeUrl} but could not open the consumer's channels: ${describe(err)}; ` +
      'check the broker logs (channel_max reached?)',
    { cause: err, details: { url: safeUrl } },
  );
}

/** What was being declared when the broker refused, in words and by name. */
export type DeclaredThing =
  | { kind: 'exchange'; name: string; type: string }
  | { kind: 'queue' | 'dead-letter queue'; name: string }
  | { kind: 'binding'; name: string; exchange: string; pattern: string };

export function declareRefusedError(safeUrl: string, thing: DeclaredThing, err: unknown): TransportError {
  const what =
    thing.kind === 'exchange'
      ? `exchange ${JSON.stringify(thing.name)} (type ${thing.type}, durable)`
      : thing.kind === 'binding'
        ? `binding of queue ${JSON.stringify(thing.name)} to exchange ${JSON.stringify(thing.exchange)} with pattern ${JSON.stringify(thing.pattern)}`
        : `${thing.kind} ${JSON.stringify(thing.name)} (durable)`;
  const fix =
    thing.kind === 'exchange'
      ? 'if the exchange exists with another type, set exchangeType to match'
      : thing.kind === 'binding'
        ? 'check that the exchange exists and the user may read from it'
        : 'if the queue exists with other arguments (type, TTL, dead-lettering), set queueArguments to ' +
          'match or delete the queue';
  return new TransportError(
    'declare_failed',
    `RabbitMQ at ${safeUrl} refused to declare ${what}: ${describe(err)}; ${fix}; if the user may ` +
      'not configure it, create it elsewhere and set declare: false',
    { cause: err, details: { url: safeUrl, ...thing } },
  );
}

export function consumeRefusedError(safeUrl: string, queue: string, err: unknown): TransportError {
  return new TransportError(
    'consume_failed',
    `RabbitMQ at ${safeUrl} refused to let this consumer read queue ${JSON.stringify(queue)}: ` +
      `${describe(err)}; check that the queue exists (declare: true declares it), that the user may ` +
      'read it, and that no other connection holds it exclusively',
    { cause: err, details: { url: safeUrl, queue } },
  );
}

/** The broker cancelled the consumer (`basic.cancel`): its queue was deleted, or it failed over. */
export function consumerCancelledError(safeUrl: string, queue: string): TransportError {
  return new TransportError(
    'consumer_cancelled',
    `RabbitMQ at ${safeUrl} cancelled the consumer of queue ${JSON.stringify(queue)} (the queue was ` +
      'deleted, or its leader moved); reconnecting, which declares it again unless declare is false',
    { details: { url: safeUrl, queue } },
  );
}

export function connectionLostError(safeUrl: string, reason: Error | undefined): TransportError {
  return new TransportError(
    'connection_lost',
    `the connection to RabbitMQ at ${safeUrl} was lost${reason ? ` (${reason.message})` : ''}; ` +
      'reconnecting; messages not yet acknowledged are redelivered by the broker',
    { ...(reason === undefined ? {} : { cause: reason }), details: { url: safeUrl } },
  );
}

/** The dead-letter publish was nacked, returned as unroutable, not confirmed in time, or cut off. */
export function deadLetterFailedError(
  deadLetterQueue: string,
  messageId: string | null,
  why: string,
  cause?: unknown,
): TransportError {
  return new TransportError(
    'dead_letter_failed',
    `could not dead-letter message ${messageId ?? '(no message-id)'} to queue ` +
      `${JSON.stringify(deadLetterQueue)}: ${why}; the message stays unacknowledged and is dead-lettered ` +
      'again after a pause (or redelivered, if the connection was lost)',
    { ...(cause === undefined ? {} : { cause }), details: { deadLetterQueue, messageId } },
  );
}

/** `context.ack()` on a consumer without an inbox. */
export function ackNeedsInboxError(messageId: string): ConfigError {
  return new ConfigError(
    'inbox',
    `context.ack() for message ${messageId} needs an inbox: an acknowledgement is enqueued in the ` +
      "inbox transaction, so it is sent only if the handler's effects commit; give the RabbitMqConsumer " +
      'an inbox (new Inbox({ store, consumer })), or do not acknowledge from this handler',
  );
}

/** Start on a consumer that is stopping, or one whose connect was interrupted by stop(). */
export function consumerStoppedError(safeUrl: string, queue: string): TransportError {
  return new TransportError(
    'closed',
    `RabbitMqConsumer of queue ${JSON.stringify(queue)} at ${safeUrl} was stopped while starting`,
    { details: { url: safeUrl, queue } },
  );
}
