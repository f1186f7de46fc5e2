/**
 * Every error the RabbitMQ transport reports, built in one place so that each says what went
 * wrong, with which value, and what to do. The URLs passed in are the redacted ones.
 *
 * @module
 */
import { ConfigError } from '../../core/errors/config-error.js';
import { isMailroomError } from '../../core/errors/mailroom-error.js';
import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { OutboxMessage } from '../../core/types.js';
import type { AmqpReturnedMessage } from './amqp-client.js';

/** The message of an error, or the value itself as text. */
export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function messageDetails(message: OutboxMessage): Record<string, unknown> {
  return { messageId: message.id, topic: message.topic };
}

/** Turns a client's connect failure into an error that says what went wrong and what to do. */
export function connectError(err: unknown, url: string, safeUrl: string): Error {
  if (isMailroomError(err)) return err; // already explained (amqplib missing…)
  const message = describe(err);
  const details = { url: safeUrl };
  if (/ACCESS[-_]REFUSED|\b403\b/.test(message)) {
    return new TransportError(
      'auth_failed',
      `RabbitMQ at ${safeUrl} refused the login (${message}); check the user name and password in the ` +
        'URL (percent-encode special characters) and that the user exists: rabbitmqctl list_users',
      { cause: err, details },
    );
  }
  if (/ConnectionOpenOk; got <ConnectionClose|NOT[-_]ALLOWED|\b530\b/.test(message)) {
    let vhost = '/';
    try {
      vhost = decodeURIComponent(new URL(url).pathname.slice(1)) || '/';
    } catch {
      // keep the default
    }
    return new TransportError(
      'vhost_refused',
      `RabbitMQ at ${safeUrl} refused access to virtual host ${JSON.stringify(vhost)}; check that it exists ` +
        `and that the user has permissions on it: rabbitmqctl set_permissions -p ${JSON.stringify(vhost)} <user> ".*" ".*" ".*"`,
      { cause: err, details: { ...details, vhost } },
    );
  }
  // Thrown synchronously by the client for a URL it cannot use; options validation should have
  // caught it, but a custom connect function may have stricter rules.
  if (/Expected amqp: or amqps:/.test(message)) {
    return new ConfigError(
      'url',
      `RabbitMQ client rejected url ${JSON.stringify(safeUrl)}: ${message}`,
      {},
      err,
    );
  }
  return new TransportError(
    'unreachable',
    `cannot connect to RabbitMQ at ${safeUrl}: ${message}; check that the broker is running and reachable ` +
      'from this host, and the host, port and scheme (amqp/amqps) in the URL',
    { cause: err, details },
  );
}

export function connectTimeoutError(safeUrl: string, connectTimeoutMs: number): TransportError {
  return new TransportError(
    'unreachable',
    `cannot connect to RabbitMQ at ${safeUrl}: no answer within ${connectTimeoutMs} ms; check that ` +
      'the broker is running and reachable from this host (host, port, firewall, TLS)',
    { details: { url: safeUrl, connectTimeoutMs } },
  );
}

export function channelFailedError(safeUrl: string, err: unknown): TransportError {
  return new TransportError(
    'channel_failed',
    `connected to RabbitMQ at ${safeUrl} but could not open a confirm channel: ${describe(err)}; ` +
      'check the broker logs (channel_max reached?)',
    { cause: err, details: { url: safeUrl } },
  );
}

export function declareFailedError(
  safeUrl: string,
  exchange: string,
  exchangeType: string,
  err: unknown,
): TransportError {
  return new TransportError(
    'declare_failed',
    `RabbitMQ at ${safeUrl} refused to declare exchange ${JSON.stringify(exchange)} ` +
      `(type ${exchangeType}, durable): ${describe(err)}; if the exchange exists with another ` +
      'type or durability, set exchangeType to match or delete it; if the user may not configure ' +
      'exchanges, create it elsewhere and set declareExchange: false',
    { cause: err, details: { url: safeUrl, exchange } },
  );
}

export function closedError(safeUrl: string): TransportError {
  return new TransportError(
    'closed',
    `RabbitMqTransport for ${safeUrl} is closed; call start() to open it again`,
  );
}

export function closedWhileConnectingError(safeUrl: string): TransportError {
  return new TransportError('closed', `RabbitMqTransport for ${safeUrl} was closed while connecting`);
}

/** The last connect failure, repeated while the reconnect backoff runs. */
export function backoffError(last: Error, waitMs: number): TransportError {
  return new TransportError(
    isMailroomError(last) ? last.code : 'unreachable',
    `${last.message} (next reconnect attempt in ${waitMs} ms)`,
    { cause: last },
  );
}

export function blockedError(safeUrl: string, reason: string): TransportError {
  return new TransportError('blocked', `RabbitMQ at ${safeUrl} is blocking publishers (${reason})`, {
    details: { url: safeUrl, reason },
  });
}

export function unroutableError(
  message: OutboxMessage,
  exchange: string,
  returned: AmqpReturnedMessage,
): PermanentDeliveryError {
  const code = returned.fields.replyCode ?? 312;
  const text = returned.fields.replyText ?? 'NO_ROUTE';
  return new PermanentDeliveryError(
    `RabbitMQ returned message ${message.id} as unroutable (${code} ${text}): exchange ` +
      `${JSON.stringify(exchange)} has no queue bound for topic ${JSON.stringify(message.topic)}; ` +
      'bind a queue to the exchange for this topic and replay the dead letter, ' +
      'or set mandatory: false to let the broker drop unroutable messages',
    { details: { ...messageDetails(message), exchange, replyCode: code, replyText: text } },
  );
}

export function nackedError(message: OutboxMessage, exchange: string, err: unknown): TransportError {
  return new TransportError(
    'nacked',
    `RabbitMQ nacked message ${message.id} (topic ${JSON.stringify(message.topic)}) on exchange ` +
      `${JSON.stringify(exchange)}: the broker did not take it (a full queue with ` +
      'overflow reject-publish, or an internal error); it will be published again',
    { cause: err, details: messageDetails(message) },
  );
}

export function confirmLostError(
  safeUrl: string,
  message: OutboxMessage,
  reason: Error | undefined,
  err: unknown,
): TransportError {
  return new TransportError(
    'confirm_lost',
    `the channel to RabbitMQ at ${safeUrl} closed before the broker confirmed message ` +
      `${message.id} (topic ${JSON.stringify(message.topic)})${reason ? `: ${reason.message}` : ''}; ` +
      'it will be published again with the same message id, so consumers may see it twice',
    { cause: reason ?? err, details: messageDetails(message) },
  );
}

export function channelClosedError(
  safeUrl: string,
  message: OutboxMessage,
  reason: Error | undefined,
  cause?: unknown,
): TransportError {
  return new TransportError(
    'channel_closed',
    `message ${message.id} was not sent: the channel to RabbitMQ at ${safeUrl} closed ` +
      `during the batch${reason ? ` (${reason.message})` : ''}; the next publish reconnects`,
    { cause: reason ?? cause, details: messageDetails(message) },
  );
}

export function confirmTimeoutError(
  safeUrl: string,
  confirmTimeoutMs: number,
  message: OutboxMessage,
  blockedReason: string | undefined,
): TransportError {
  return new TransportError(
    'confirm_timeout',
    `no confirm from RabbitMQ at ${safeUrl} for message ${message.id} within ${confirmTimeoutMs} ms` +
      (blockedReason === undefined
        ? ''
        : `; the broker is blocking publishers (${blockedReason}): a memory or disk alarm, which clears when consumers catch up`) +
      '; it will be published again with the same message id (the broker may have it already)',
    { details: { ...messageDetails(message), confirmTimeoutMs } },
  );
}

export function unencodableError(message: OutboxMessage, err: Error): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `message ${message.id} (topic ${JSON.stringify(message.topic)}) cannot be encoded as an AMQP ` +
      `message: ${err.message}; make its headers smaller`,
    { cause: err, details: messageDetails(message) },
  );
}
