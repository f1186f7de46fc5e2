import { ConfigError } from '../../core/errors/config-error.js';
import {
  boolean,
  custom,
  func,
  integer,
  MAX_TIMER_MS,
  optionsSchema,
  string,
  type ResolvedOptions,
} from '../../core/options-schema.js';
import { redactUrl } from '../../core/redact.js';
import type { AmqpConnect, AmqpSocketOptions } from './amqp-client.js';

/** Options of {@link RabbitMqTransport}. Only `url` is required. */
export interface RabbitMqTransportOptions {
  /**
   * Broker address, `amqp://` or `amqps://`, with credentials and virtual host:
   * `amqp://user:password@host:5672/vhost`. Query parameters (`frameMax`, `heartbeat`…) are
   * passed to the client. The password never appears in errors.
   *
   * @example 'amqps://relay:s3cret@rabbit.internal:5671/orders'
   */
  url: string;
  /**
   * Exchange every message is published to; the message topic is the routing key. `''` is the
   * default exchange, which routes by queue name (it cannot be declared, so nothing is declared).
   *
   * @default 'mailroom'
   */
  exchange?: string;
  /**
   * Type of the exchange when `declareExchange` is on: `topic`, `direct`, `fanout`, `headers`,
   * or a plugin type starting with `x-`.
   *
   * @default 'topic'
   */
  exchangeType?: string;
  /**
   * Declare the exchange (durable) on every connect. Turn off when the exchange is managed
   * elsewhere (definitions file, Terraform) or the user lacks `configure` permission; the
   * exchange must then exist, or publishing fails with a retry outcome naming it.
   *
   * @default true
   */
  declareExchange?: boolean;
  /**
   * Publish with the `mandatory` flag: a message that no queue is bound to receive is returned
   * by the broker and becomes a `permanent` outcome, so the relay dead-letters it, where it can
   * be listed and, once a queue is bound, replayed with the same id. In a broker transaction
   * RabbitMQ returns it at the commit, which commits the others: the commit then rejects with a
   * `PermanentDeliveryError` naming the returned messages. On by default because the
   * alternative is silent: with `false` the broker drops such a message and still confirms it,
   * the relay reports it delivered and nothing anywhere says it is gone (a topic published before
   * its consumer declared a queue loses those messages). Turn it off only where "nobody listens
   * yet" is normal and losing those messages is intended.
   *
   * @default true
   * @example { mandatory: false } // fire-and-forget topics: unroutable messages are dropped
   */
  mandatory?: boolean;
  /**
   * How long to wait for the broker's confirms of a published batch. A broker that does not
   * answer in time is treated as unavailable: messages not confirmed report `unavailable`
   * (spending no attempt) and the connection is dropped, unless the broker said it is blocking
   * publishers. They may still have reached the broker (a later duplicate carries the same
   * message id). The relay's own publish deadline, when shorter, ends the wait first.
   *
   * Broker transactions wait as long for the answer to `channel.open`, `tx.select`,
   * `tx.commit` and `tx.rollback`, and for a full write buffer to drain; a commit without an
   * answer in time rejects as `commit_unknown` and its connection is dropped.
   *
   * @default 30000
   */
  confirmTimeoutMs?: number;
  /**
   * Largest message body, in bytes, to send. A bigger message reports `permanent` without being
   * sent: RabbitMQ closes the channel (406 PRECONDITION_FAILED) for a message over its
   * `max_message_size`, which would fail every other message in flight on that channel too. Set
   * it to the broker's `max_message_size`.
   *
   * @default 134217728 (128 MiB, RabbitMQ's default `max_message_size` up to 3.13; 4.0 lowered it to 16 MiB)
   * @example 16 * 1024 * 1024
   */
  maxMessageBytes?: number;
  /**
   * Limit for opening the TCP/TLS connection and the AMQP handshake.
   *
   * @default 10000
   */
  connectTimeoutMs?: number;
  /**
   * Heartbeat interval to ask the broker for, in seconds; a connection silent for about two
   * intervals is treated as dead. `0` disables heartbeats. Overrides a `heartbeat` URL parameter.
   *
   * @default the broker's value (RabbitMQ: 60)
   */
  heartbeatSeconds?: number;
  /**
   * Socket and client options passed to the connect function: TLS (`ca`, `cert`, `key`,
   * `servername`, `rejectUnauthorized`), `noDelay`, `keepAlive`, `clientProperties`.
   * `clientProperties.connection_name` is shown in the RabbitMQ management UI.
   *
   * @default `{ noDelay: true, clientProperties: { connection_name: 'mailroom' } }`
   * @example { ca: [readFileSync('ca.pem')], clientProperties: { connection_name: 'orders-relay' } }
   */
  socketOptions?: AmqpSocketOptions;
  /**
   * How long `close()` waits for confirms of batches still in flight before closing the channel
   * (unconfirmed messages of those batches then report `unavailable`).
   *
   * @default 10000
   */
  closeTimeoutMs?: number;
  /**
   * Delay before the second reconnect attempt after the connection was lost; each further failed
   * attempt doubles it up to `maxReconnectDelayMs`, each wait drawn between half and all of that
   * (jitter). The first attempt after a loss is immediate. While waiting, `publish` reports
   * `unavailable` at once without connecting; `start()` and `probe()` always try at once.
   *
   * @default 100
   */
  reconnectDelayMs?: number;
  /**
   * Upper bound of the reconnect delay.
   *
   * @default 30000
   */
  maxReconnectDelayMs?: number;
  /**
   * Opens connections. Defaults to amqplib's `connect`, imported on first use.
   *
   * @default amqplib's `connect`
   */
  connect?: AmqpConnect;
}

// AMQP 0-9-1 exchange names: up to 255 bytes of letters, digits, hyphen, underscore, period, colon.
const EXCHANGE_NAME_RE = /^[A-Za-z0-9_.:-]{0,255}$/;
const EXCHANGE_TYPE_RE = /^(direct|topic|fanout|headers|x-[A-Za-z0-9_.:-]+)$/;

const rabbitMqOptionsSchema = optionsSchema<RabbitMqTransportOptions>()(
  'RabbitMqTransport',
  {
    // Only the type here; resolveAmqpUrl says what is wrong with the URL itself.
    url: string({ expected: 'an amqp:// or amqps:// URL string', secret: true, required: true }),
    exchange: string({
      empty: true,
      pattern: EXCHANGE_NAME_RE,
      expected: "at most 255 letters, digits, '-', '_', '.' or ':'",
      default: 'mailroom',
    }),
    exchangeType: string({
      pattern: EXCHANGE_TYPE_RE,
      expected: 'topic, direct, fanout, headers or a plugin type starting with x-',
      default: 'topic',
    }),
    declareExchange: boolean({ default: true }),
    mandatory: boolean({ default: true }),
    confirmTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 30_000 }),
    maxMessageBytes: integer({ min: 1, default: 128 * 1024 * 1024 }),
    connectTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 10_000 }),
    // AMQP carries the heartbeat as a 16-bit number of seconds.
    heartbeatSeconds: integer({ min: 0, max: 65_535 }),
    socketOptions: custom(
      'an object',
      (v): v is AmqpSocketOptions => typeof v === 'object' && v !== null && !Array.isArray(v),
      { default: () => ({}) },
    ),
    closeTimeoutMs: integer({ min: 0, max: MAX_TIMER_MS, default: 10_000 }),
    reconnectDelayMs: integer({ min: 0, max: MAX_TIMER_MS, default: 100 }),
    maxReconnectDelayMs: integer({ min: 0, max: MAX_TIMER_MS, default: 30_000 }),
    connect: func<AmqpConnect>('a function (url, socketOptions) => Promise<connection>'),
  },
  { ordered: [['reconnectDelayMs', 'maxReconnectDelayMs']] },
);

/** Options after defaults and validation; what the transport runs with. */
export interface ResolvedRabbitMqTransportOptions extends ResolvedOptions<
  typeof rabbitMqOptionsSchema.fields
> {
  /** The URL handed to the connect function (with `heartbeat` applied). */
  url: string;
  /** The same URL with the password replaced by `***`, for messages. */
  safeUrl: string;
}

/**
 * Checks the URL and returns it with the heartbeat applied. Parsing here, rather than leaving it
 * to the client, turns a typo into a ConfigError at construction instead of a vague connect
 * failure on the first publish. `owner` names the class in the messages (the transport, or the
 * consumer, which shares this check).
 */
export function resolveAmqpUrl(
  value: string,
  heartbeatSeconds: number | undefined,
  owner = 'RabbitMqTransport',
): { url: string; safeUrl: string } {
  const safe = redactUrl(value);
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch (err) {
    throw new ConfigError(
      'url',
      `${owner} url ${JSON.stringify(safe)} is not a valid URL; ` +
        'expected amqp://user:password@host:5672/vhost (percent-encode special characters in the password)',
      { value: safe },
      err,
    );
  }
  if (parsed.protocol !== 'amqp:' && parsed.protocol !== 'amqps:') {
    throw new ConfigError(
      'url',
      `${owner} url ${JSON.stringify(safe)} has scheme ${JSON.stringify(parsed.protocol.replace(/:$/, ''))}; ` +
        'use amqp:// (plain) or amqps:// (TLS)',
      { value: safe },
    );
  }
  if (parsed.hostname === '') {
    throw new ConfigError(
      'url',
      `${owner} url ${JSON.stringify(safe)} has no host; expected amqp://user:password@host:5672/vhost`,
      { value: safe },
    );
  }
  if (heartbeatSeconds === undefined) return { url: value, safeUrl: safe };
  parsed.searchParams.set('heartbeat', String(heartbeatSeconds));
  const url = parsed.toString();
  return { url, safeUrl: redactUrl(url) };
}

/** Applies defaults and validates; throws a {@link ConfigError} naming the option at fault. */
export function resolveRabbitMqOptions(options: RabbitMqTransportOptions): ResolvedRabbitMqTransportOptions {
  const resolved = rabbitMqOptionsSchema.resolve(options);
  return {
    ...resolved,
    ...resolveAmqpUrl(resolved.url, resolved.heartbeatSeconds),
    // The default exchange always exists and refuses declarations.
    declareExchange: resolved.declareExchange && resolved.exchange !== '',
  };
}
