import type { ConnectionOptions } from 'node:tls';

import { ConfigError } from '../../core/errors/config-error.js';
import {
  boolean,
  custom,
  integer,
  MAX_TIMER_MS,
  optionsSchema,
  string,
  type ResolvedOptions,
} from '../../core/options-schema.js';
import { redactUrl } from '../../core/redact.js';
import type { StompEndpoint } from './stomp-connection.js';

/** Options of {@link StompTransport}. Only `url` is required. */
export interface StompTransportOptions {
  /**
   * Broker address, `stomp://` (plain) or `stomps://` (TLS), with credentials:
   * `stomp://user:password@host:61613`. A path names RabbitMQ's virtual host (`/orders`; none,
   * `/` or `/%2F` mean `/`); ActiveMQ ignores it. The password never appears in errors.
   *
   * @example 'stomp://relay:s3cret@rabbit.internal:61613'
   * @example 'stomps://relay:s3cret@activemq.internal:61614'
   */
  url: string;
  /**
   * Where a message goes, from its topic: `{topic}` is replaced by the topic. `/queue/…` keeps
   * messages until a consumer takes them (point to point); `/topic/…` hands them to the
   * subscribers present (RabbitMQ: the `amq.topic` exchange, routed by the topic). RabbitMQ also
   * takes `/exchange/<name>/{topic}` and `/amq/queue/{topic}`.
   *
   * @default '/queue/{topic}'
   * @example '/topic/{topic}'
   * @example '/queue/orders.{topic}'
   */
  destination?: string;
  /**
   * Send with `persistent:true`, so that the broker writes the message to disk (RabbitMQ: delivery
   * mode 2 on a durable queue; ActiveMQ: a persistent JMS message) before its RECEIPT.
   *
   * @default true
   */
  persistent?: boolean;
  /**
   * How long to wait for the broker's RECEIPT of each message (and of a COMMIT). Messages without
   * one by then report `unavailable` and the connection is dropped; they may still have reached
   * the broker (a later copy carries the same `mailroom-id`). The relay's publish deadline, when
   * shorter, ends the wait first.
   *
   * @default 30000
   */
  receiptTimeoutMs?: number;
  /**
   * Largest message body, in bytes, to send; a bigger one reports `permanent` without being sent.
   * A broker refuses a frame over its own limit with an ERROR frame that ends the connection and
   * everything in flight on it (ActiveMQ: `maxDataLength`, 100 MiB by default; RabbitMQ 4:
   * `max_message_size`, 16 MiB by default). Set it to the broker's limit.
   *
   * @default 16777216 (16 MiB)
   */
  maxMessageBytes?: number;
  /** Limit for the TCP/TLS connect and the CONNECT/CONNECTED exchange. @default 10000 */
  connectTimeoutMs?: number;
  /**
   * Heart-beat interval offered both ways, in ms (the larger of the two sides' values applies);
   * a connection silent for about twice the interval is taken as dead. `0` disables heart-beats.
   *
   * @default 10000
   */
  heartbeatMs?: number;
  /**
   * TLS options for `stomps://`: `ca`, `cert`, `key`, `servername`, `rejectUnauthorized`.
   *
   * @default {}
   * @example { ca: [readFileSync('ca.pem')] }
   */
  tls?: ConnectionOptions;
  /** How long `close()` waits for batches in flight before closing the connection. @default 10000 */
  closeTimeoutMs?: number;
  /**
   * Delay before the second reconnect attempt after a failed connect; doubles per failed attempt
   * up to `maxReconnectDelayMs`, jittered between half and all of it. The first attempt after a
   * loss is immediate; `start()` and `probe()` always try at once.
   *
   * @default 100
   */
  reconnectDelayMs?: number;
  /** Upper bound of the reconnect delay. @default 30000 */
  maxReconnectDelayMs?: number;
}

/** The destination prefixes the transport accepts (RabbitMQ's and ActiveMQ's, for lasting destinations). */
const DESTINATION_PREFIXES = ['/queue/', '/topic/', '/exchange/', '/amq/queue/'] as const;

/** A destination template as the transport and the consumer accept it. */
export function checkDestinationTemplate(template: string, owner: string, key: string): string {
  const fail = (why: string): never => {
    throw new ConfigError(key, `${owner} option ${key} ${JSON.stringify(template)} ${why}`, {
      value: template,
    });
  };
  if (!DESTINATION_PREFIXES.some((prefix) => template.startsWith(prefix))) {
    fail(`must start with ${DESTINATION_PREFIXES.join(', ')} (e.g. '/queue/{topic}')`);
  }
  if (template.split('{topic}').length !== 2) fail("must contain '{topic}' exactly once");
  if (/[{}]/.test(template.replace('{topic}', ''))) fail("has a brace outside '{topic}'");
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(template)) fail('contains a control character');
  return template;
}

const stompOptionsSchema = optionsSchema<StompTransportOptions>()(
  'StompTransport',
  {
    url: string({ expected: 'a stomp:// or stomps:// URL string', secret: true, required: true }),
    destination: string({
      expected: "a destination template such as '/queue/{topic}'",
      default: '/queue/{topic}',
    }),
    persistent: boolean({ default: true }),
    receiptTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 30_000 }),
    maxMessageBytes: integer({ min: 1, max: 2 ** 31 - 1, default: 16 * 1024 * 1024 }),
    connectTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 10_000 }),
    heartbeatMs: integer({ min: 0, max: 3_600_000, default: 10_000 }),
    tls: custom(
      'an object of TLS options',
      (v): v is ConnectionOptions => typeof v === 'object' && v !== null && !Array.isArray(v),
      { default: () => ({}) },
    ),
    closeTimeoutMs: integer({ min: 0, max: MAX_TIMER_MS, default: 10_000 }),
    reconnectDelayMs: integer({ min: 0, max: MAX_TIMER_MS, default: 100 }),
    maxReconnectDelayMs: integer({ min: 0, max: MAX_TIMER_MS, default: 30_000 }),
  },
  { ordered: [['reconnectDelayMs', 'maxReconnectDelayMs']] },
);

/** Options after defaults and validation. */
export interface ResolvedStompTransportOptions extends Omit<
  ResolvedOptions<typeof stompOptionsSchema.fields>,
  'url'
> {
  /** Host, port, credentials and virtual host from the URL, with the redacted URL for messages. */
  endpoint: StompEndpoint;
}

/**
 * Reads a `stomp://` or `stomps://` URL. Parsing here turns a typo into a ConfigError at
 * construction instead of a vague connect failure on the first publish. `owner` names the class
 * in messages.
 */
export function resolveStompUrl(value: string, owner: string): StompEndpoint {
  const safeUrl = redactUrl(value);
  const fail = (why: string, cause?: unknown): never => {
    throw new ConfigError('url', `${owner} url ${JSON.stringify(safeUrl)} ${why}`, { value: safeUrl }, cause);
  };
  let parsed: URL | undefined;
  try {
    parsed = new URL(value);
  } catch (err) {
    fail(
      'is not a valid URL; expected stomp://user:password@host:61613 (percent-encode special characters in the password)',
      err,
    );
  }
  const url = parsed as URL;
  if (url.protocol !== 'stomp:' && url.protocol !== 'stomps:') {
    fail(
      `has scheme ${JSON.stringify(url.protocol.replace(/:$/, ''))}; use stomp:// (plain) or stomps:// (TLS)`,
    );
  }
  if (url.hostname === '') fail('has no host; expected stomp://user:password@host:61613');
  if (url.search !== '' || url.hash !== '') {
    fail('has a query or fragment; STOMP URLs take none (give heart-beats, TLS and deadlines as options)');
  }
  const path = url.pathname;
  let vhost = '/';
  if (path !== '' && path !== '/') {
    const segment = path.slice(1);
    if (segment.includes('/'))
      fail("has a path of more than one segment; the path names one virtual host ('/%2F' for '/')");
    try {
      vhost = decodeURIComponent(segment);
    } catch (err) {
      fail('has a path that is not valid percent-encoding', err);
    }
  }
  const decode = (text: string): string | undefined => {
    if (text === '') return undefined;
    try {
      return decodeURIComponent(text);
    } catch (err) {
      return fail('has credentials that are not valid percent-encoding', err);
    }
  };
  const tls = url.protocol === 'stomps:';
  // URL keeps brackets around IPv6 literals; sockets want the bare address.
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return {
    host,
    port: url.port === '' ? (tls ? 61614 : 61613) : Number(url.port),
    tls,
    login: decode(url.username),
    passcode: decode(url.password),
    vhost,
    safeUrl,
  };
}

/** Applies defaults and validates; throws a {@link ConfigError} naming the option at fault. */
export function resolveStompOptions(options: StompTransportOptions): ResolvedStompTransportOptions {
  const { url, ...resolved } = stompOptionsSchema.resolve(options);
  checkDestinationTemplate(resolved.destination, 'StompTransport', 'destination');
  return { ...resolved, endpoint: resolveStompUrl(url, 'StompTransport') };
}

/** The destination of a topic under a template. */
export function destinationFor(template: string, topic: string): string {
  // A function replacer: a topic with `$&` or `$'` in it is taken literally.
  return template.replace('{topic}', () => topic);
}
