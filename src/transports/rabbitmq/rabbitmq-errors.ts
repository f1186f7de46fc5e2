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
import { portHint } from '../../core/well-known-ports.js';
import type { AmqpReturnedMessage } from './amqp-client.js';

/** The message of an error, or the value itself as text. */
export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function messageDetails(message: OutboxMessage): Record<string, unknown> {
  return { messageId: message.id, topic: message.topic };
}

/** The broker's `host:port` in a (redacted) AMQP URL, the port defaulted by scheme. */
function endpointOf(safeUrl: string): { endpoint: string; port: number | undefined } {
  try {
    const url = new URL(safeUrl);
    const port = Number(url.port || (url.protocol === 'amqps:' ? 5671 : 5672));
    return { endpoint: `${url.hostname}:${port}`, port };
  } catch {
    return { endpoint: safeUrl, port: undefined };
  }
}

/** "is 127.0.0.1:5432 an AMQP broker (RabbitMQ)? PostgreSQL listens on 5432 by default." */
function isItAmqp(safeUrl: string): string {
  const { endpoint, port } = endpointOf(safeUrl);
  const hint = portHint(port, [5672, 5671]);
  return `is ${endpoint} an AMQP broker (RabbitMQ)?${hint ? ` ${hint}.` : ''}`;
}

/** What amqplib says when the bytes that came back are not AMQP: another kind of server. */
const NOT_AMQP =
  /^Invalid frame$|^Unknown frame type|^Frame size \d+ exceeds|^Expected ConnectionStart|^Frame on channel != 0 during handshake/;

/**
 * The peer hung up in the middle of the opening handshake: PostgreSQL and MySQL do on seeing
 * the AMQP protocol header; so does a TLS port spoken to without TLS, or a broker stopping.
 */
const HANDSHAKE_CLOSED = /^Socket closed abruptly during opening handshake/;

/** Turns a client's connect failure into an error that says what went wrong and what to do. */
export function connectError(err: unknown, url: string, safeUrl: string, connectTimeoutMs: number): Error {
  if (isMailroomError(err)) return err; // already explained (amqplib missing…)
  const message = describe(err);
  const details = { url: safeUrl };
  // amqplib's own deadline (the socket timeout the transport sets to connectTimeoutMs), when it
  // fires before the transport's.
  if (message === 'connect ETIMEDOUT') return connectTimeoutError(safeUrl, connectTimeoutMs, err);
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
  const { endpoint } = endpointOf(safeUrl);
  if (NOT_AMQP.test(message)) {
    return new TransportError(
      'not_amqp',
      `cannot connect to RabbitMQ at ${safeUrl}: ${endpoint} did not answer as AMQP (${message}): ` +
        `${isItAmqp(safeUrl)} If it is, check the scheme: amqps:// for a TLS port, amqp:// for a plain one`,
      { cause: err, details },
    );
  }
  if (HANDSHAKE_CLOSED.test(message)) {
    // Code `unreachable`, as for silence: a proxy whose broker is down, or a broker restarting,
    // hangs up the same way, and that is an outage to wait out, not a wrong URL.
    return new TransportError(
      'unreachable',
      `cannot connect to RabbitMQ at ${safeUrl}: ${endpoint} closed the connection without answering ` +
        `as AMQP: ${isItAmqp(safeUrl)} If it is, check that the broker is running (one that is ` +
        'starting or stopping hangs up like this, and so does a proxy in front of one that is down) ' +
        'and the scheme: amqps:// for a TLS port',
      { cause: err, details },
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

/**
 * Nothing answered within `connectTimeoutMs`: a black-holed address, or a server of another kind
 * that waits for input it understands (Redis does), so the URL's port is named with a hint.
 */
export function connectTimeoutError(
  safeUrl: string,
  connectTimeoutMs: number,
  cause?: unknown,
): TransportError {
  const { endpoint } = endpointOf(safeUrl);
  return new TransportError(
    'unreachable',
    `cannot connect to RabbitMQ at ${safeUrl}: ${endpoint} did not answer as AMQP within ` +
      `${connectTimeoutMs} ms (connectTimeoutMs): ${isItAmqp(safeUrl)} If it is, check that it is ` +
      'reachable from this host (firewall, proxy) and the scheme (amqps:// for a TLS port)',
    { ...(cause === undefined ? {} : { cause }), details: { url: safeUrl, connectTimeoutMs } },
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

/**
 * The broker blocks publishers (`connection.blocked`): a memory or disk alarm. Nothing is written
 * into the blocked socket; the relay probes until the alarm clears.
 */
export function blockedError(safeUrl: string, reason: string): TransportError {
  return new TransportError(
    'blocked',
    `RabbitMQ at ${safeUrl} is blocking publishers (${reason}): a resource alarm, raised when the ` +
      'broker runs low on memory or disk; publishing resumes when it clears (consumers catch up, ' +
      'disk space is freed); `rabbitmqctl status` lists the alarms in effect',
    { details: { url: safeUrl, reason } },
  );
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
    `the connection to RabbitMQ at ${safeUrl} was lost before the broker confirmed message ` +
      `${message.id} (topic ${JSON.stringify(message.topic)})${reason ? `: ${reason.message}` : ''}; ` +
      'the next publish reconnects and sends it again with the same message id, so consumers may see it twice',
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
    `message ${message.id} was not sent: the connection to RabbitMQ at ${safeUrl} was lost ` +
      `during the batch${reason ? ` (${reason.message})` : ''}; the next publish reconnects`,
    { cause: reason ?? cause, details: messageDetails(message) },
  );
}

/**
 * The broker closed the channel with a channel-level exception while the connection stayed up:
 * caused by what was published, so the message spends an attempt (a `retry` outcome).
 */
export function channelExceptionError(
  safeUrl: string,
  exchange: string,
  message: OutboxMessage,
  exception: { code: number; error: Error },
  sent: boolean,
): TransportError {
  return new TransportError(
    'channel_exception',
    `RabbitMQ at ${safeUrl} closed the channel (${exception.error.message}) while message ${message.id} ` +
      `(topic ${JSON.stringify(message.topic)}, exchange ${JSON.stringify(exchange)}) was ` +
      `${sent ? 'awaiting its confirm' : 'waiting to be sent'}; the broker stays reachable, so this comes ` +
      'from what was published (a missing exchange, no write permission on it, a message over the ' +
      "broker's max_message_size) and the message spends an attempt; fix the cause (create the " +
      'exchange or turn declareExchange on, grant write permission, set maxMessageBytes) and replay ' +
      'the dead letters',
    {
      cause: exception.error,
      details: { ...messageDetails(message), exchange, replyCode: exception.code },
    },
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
        ? '; the broker does not answer, so the connection was dropped and the next publish reconnects'
        : `; the broker is blocking publishers (${blockedReason}): a memory or disk alarm, which clears when consumers catch up`) +
      '; it will be published again with the same message id (the broker may have it already)',
    { details: { ...messageDetails(message), confirmTimeoutMs } },
  );
}

/** What an aborted signal says about why: its reason's message, or the reason itself. */
function abortReason(signal: AbortSignal): string {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason.message : String(reason);
}

/**
 * The caller aborted the publish (the relay's publish deadline passed, or it is stopping) before
 * the broker answered for this message. Code `publish_timeout`, as on the memory transport: the
 * relay aborts mostly at its deadline, and operators can branch on one code for all transports.
 */
export function publishAbortedError(
  safeUrl: string,
  message: OutboxMessage,
  signal: AbortSignal,
  stage: 'connecting' | 'unsent' | 'unconfirmed',
  blockedReason: string | undefined,
): TransportError {
  const what =
    stage === 'connecting'
      ? 'while connecting, so nothing was sent; the connect goes on, bounded by connectTimeoutMs'
      : `before ${stage === 'unsent' ? `message ${message.id} was sent` : `the broker confirmed message ${message.id}`}; ` +
        (blockedReason === undefined
          ? 'a broker that does not answer in time counts as unavailable, so the connection was ' +
            'dropped and the next publish reconnects'
          : `the broker is blocking publishers (${blockedReason}), so the connection is kept and ` +
            'probe() reports the alarm until it clears');
  return new TransportError(
    'publish_timeout',
    `publish to RabbitMQ at ${safeUrl} was aborted (${abortReason(signal)}) ${what} ` +
      `(topic ${JSON.stringify(message.topic)}); the message will be published again with the same ` +
      'message id (the broker may have it already); if this repeats, check the broker (rabbitmqctl ' +
      'status: alarms, disk, load) and the network to it',
    { details: { ...messageDetails(message), url: safeUrl, stage } },
  );
}

/** The caller aborted a probe before it could tell. */
export function probeAbortedError(safeUrl: string, signal: AbortSignal): TransportError {
  return new TransportError(
    'probe_aborted',
    `probe of RabbitMQ at ${safeUrl} was aborted (${abortReason(signal)}) before the connection was open; ` +
      'check that the broker is running and reachable from this host',
    { details: { url: safeUrl } },
  );
}

/** A message over `maxMessageBytes`, refused before sending. */
export function messageTooLargeError(message: OutboxMessage, limit: number): PermanentDeliveryError {
  const size = message.payload.length;
  return new PermanentDeliveryError(
    `message ${message.id} (topic ${JSON.stringify(message.topic)}) has a body of ${size} bytes, over ` +
      `maxMessageBytes (${limit}); RabbitMQ would close the channel with 406 PRECONDITION_FAILED, so it ` +
      "was not sent; store large data elsewhere and send a reference, or raise the broker's " +
      'max_message_size and maxMessageBytes together and replay the dead letter',
    { details: { ...messageDetails(message), size, limit } },
  );
}

/** A user header named `CC` or `BCC`, which RabbitMQ only accepts as an array. */
export function distributionHeaderError(message: OutboxMessage, header: string): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `message ${message.id} (topic ${JSON.stringify(message.topic)}) has a header named ${header}, which ` +
      'RabbitMQ reads as a sender-selected distribution list and accepts only as an array, while ' +
      'Mailroom headers are strings: the broker would close the channel with 406 PRECONDITION_FAILED, ' +
      'so it was not sent; rename the header and enqueue the message again',
    { details: { ...messageDetails(message), header } },
  );
}

export function unencodableError(message: OutboxMessage, err: Error): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `message ${message.id} (topic ${JSON.stringify(message.topic)}) cannot be encoded as an AMQP ` +
      `message: ${err.message}; make its headers smaller`,
    { cause: err, details: messageDetails(message) },
  );
}
