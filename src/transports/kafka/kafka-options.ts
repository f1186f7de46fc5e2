/**
 * Options of the Kafka transport: the `kafka://` URL (a broker list, TLS by `kafkas://`, SASL
 * credentials in the user part), the defaults, and the check of Kafka topic names.
 *
 * @module
 */
import type { ConnectionOptions } from 'node:tls';

import { ConfigError } from '../../core/errors/config-error.js';
import {
  custom,
  integer,
  MAX_TIMER_MS,
  optionsSchema,
  string,
  type ResolvedOptions,
} from '../../core/options-schema.js';
import { redactUrl } from '../../core/redact.js';
import type { KafkaProducerLike } from './kafka-producer.js';

/** SASL mechanisms the transport passes to kafkajs. */
export const SASL_MECHANISMS = ['plain', 'scram-sha-256', 'scram-sha-512'] as const;
export type KafkaSaslMechanism = (typeof SASL_MECHANISMS)[number];

/** Options of {@link KafkaTransport}. `url` is required unless a `producer` is given. */
export interface KafkaTransportOptions {
  /**
   * The bootstrap brokers, comma separated: `kafka://host1:9092,host2:9092`. `kafkas://` connects
   * with TLS. A user part gives SASL credentials (`kafkas://user:password@host:9093`, mechanism
   * `plain` unless the query says `?sasl=scram-sha-512`). The query may also set `clientId` and
   * `topicPrefix`. The password never appears in errors or logs.
   *
   * @example 'kafka://localhost:9092'
   * @example 'kafkas://relay:s3cret@b1.internal:9093,b2.internal:9093?sasl=scram-sha-512&topicPrefix=prod.'
   */
  url?: string;
  /**
   * Prepended to every message topic to make the Kafka topic (`orders.` + `created`). The result
   * must be a legal Kafka topic name (`[a-zA-Z0-9._-]`, at most 249 characters, not `.` or `..`);
   * a message whose topic is not becomes `permanent` without being sent. Overrides the URL's
   * `topicPrefix`.
   *
   * @default ''
   */
  topicPrefix?: string;
  /** The client id the brokers see (quotas, logs). Overrides the URL's `clientId`. @default 'mailroom' */
  clientId?: string;
  /**
   * Largest record value, in bytes, to send; a bigger payload is `permanent` without being sent.
   * Set it to the topic's `max.message.bytes` less some room for headers (the broker's default
   * is 1048588 bytes for a whole record batch).
   *
   * @default 1000000
   */
  maxMessageBytes?: number;
  /**
   * How long one publish call may take, connecting included. Messages without the brokers'
   * acknowledgement by then report `unavailable` and the producer is given up (the next call
   * builds and connects a new one). They may still have been written: consumers dedupe on `mailroom-id`.
   *
   * @default 30000
   */
  publishTimeoutMs?: number;
  /** kafkajs `connectionTimeout`: the TCP/TLS connect to one broker. @default 10000 */
  connectTimeoutMs?: number;
  /** kafkajs `requestTimeout` and the produce request's `timeout` (the brokers' wait for replicas). @default 30000 */
  requestTimeoutMs?: number;
  /**
   * How often kafkajs retries a failed produce request (with its own backoff) before the
   * transport sees the error. Bounded, so that a retriable broker error reaches the relay as
   * `retry` instead of hanging until `publishTimeoutMs`; the idempotent producer's sequence
   * numbers still keep retries from duplicating or reordering records.
   *
   * @default 5
   */
  retries?: number;
  /** TLS options (`ca`, `cert`, `key`, `servername`…) for `kafkas://`. @default {} */
  tls?: ConnectionOptions;
  /**
   * The producer to use instead of one the transport builds from the URL: for settings the
   * transport does not expose, and for tests. Best a function that builds a new one (a kafkajs
   * `Producer`, or anything with the same `connect`, `disconnect` and `sendBatch`): the transport
   * calls it again after every failed send, because a kafkajs producer that saw a send fail may
   * reuse that send's sequence numbers for different records, which the broker can take for a
   * retry of records it already has and acknowledge without writing them. A new producer gets a
   * new producer id and starts its sequences afresh. A producer object is used for the
   * transport's whole life (only disconnected and connected again), without that protection.
   * Build it with `idempotent: true` and `maxInFlightRequests: 1`, or the guarantees in
   * docs/transports/kafka.md do not hold. The transport connects and disconnects it.
   *
   * @example () => kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
   */
  producer?: KafkaProducerLike | (() => KafkaProducerLike | Promise<KafkaProducerLike>);
  /** How long `close()` waits for publish calls in flight before disconnecting. @default 10000 */
  closeTimeoutMs?: number;
}

/** Where the brokers are, read from the URL. */
export interface KafkaEndpoint {
  brokers: string[];
  tls: boolean;
  sasl: { mechanism: KafkaSaslMechanism; username: string; password: string } | undefined;
  /** The URL with the password masked, for messages. */
  safeUrl: string;
  clientId: string | undefined;
  topicPrefix: string | undefined;
}

const isProducer = (value: unknown): value is KafkaProducerLike =>
  typeof value === 'object' &&
  value !== null &&
  ['connect', 'disconnect', 'sendBatch'].every(
    (name) => typeof (value as Record<string, unknown>)[name] === 'function',
  );

const kafkaOptionsSchema = optionsSchema<KafkaTransportOptions>()('KafkaTransport', {
  url: string({ expected: 'a kafka:// or kafkas:// URL string', secret: true }),
  topicPrefix: string({ empty: true }),
  clientId: string({ pattern: /^[\w.-]{1,255}$/, expected: 'a client id of letters, digits, _ . -' }),
  maxMessageBytes: integer({ min: 1, max: 2 ** 31 - 1, default: 1_000_000 }),
  publishTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 30_000 }),
  connectTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 10_000 }),
  requestTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 30_000 }),
  retries: integer({ min: 0, max: 100, default: 5 }),
  tls: custom(
    'an object of TLS options',
    (v): v is ConnectionOptions => typeof v === 'object' && v !== null && !Array.isArray(v),
    { default: () => ({}) },
  ),
  producer: custom(
    'a function that builds a kafkajs Producer, or a Producer (connect, disconnect, sendBatch)',
    (v): v is KafkaProducerLike | (() => KafkaProducerLike) => typeof v === 'function' || isProducer(v),
  ),
  closeTimeoutMs: integer({ min: 0, max: MAX_TIMER_MS, default: 10_000 }),
});

/** Options after defaults and validation. */
export interface ResolvedKafkaTransportOptions extends Omit<
  ResolvedOptions<typeof kafkaOptionsSchema.fields>,
  'url' | 'topicPrefix' | 'clientId'
> {
  topicPrefix: string;
  clientId: string;
  /** Undefined only when a producer was given without a URL. */
  endpoint: KafkaEndpoint | undefined;
  /** For messages: the redacted URL, or `the given producer`. */
  where: string;
}

const URL_PARAMS = ['sasl', 'clientId', 'topicPrefix'] as const;

/**
 * Reads a `kafka://` or `kafkas://` URL. Parsed by hand: a broker list (`a:9092,b:9092`) is not
 * a host WHATWG URLs accept.
 */
export function resolveKafkaUrl(value: string): KafkaEndpoint {
  const safeUrl = redactUrl(value);
  const fail = (why: string): never => {
    throw new ConfigError('url', `KafkaTransport url ${JSON.stringify(safeUrl)} ${why}`, { value: safeUrl });
  };
  const match = /^(kafkas?):\/\/(?:([^@/?#]*)@)?([^/?#]*)\/?(?:\?([^#]*))?$/i.exec(value);
  if (!match) {
    if (!/^kafkas?:\/\//i.test(value)) {
      const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(value)?.[1];
      fail(
        scheme === undefined
          ? 'is not a URL; expected kafka://host:9092[,host:9092…]'
          : `has scheme ${JSON.stringify(scheme)}; use kafka:// (plain) or kafkas:// (TLS)`,
      );
    }
    fail('has a path or fragment; expected kafka://host:9092[,host:9092…][?sasl=…&clientId=…&topicPrefix=…]');
  }
  const [, scheme = '', userinfo, hostList = '', query = ''] = match as RegExpExecArray;
  const tls = scheme.toLowerCase() === 'kafkas';
  const brokers = hostList.split(',').map((entry) => entry.trim());
  if (brokers.length === 0 || brokers.some((b) => b === '')) {
    fail('names no broker (or an empty one between commas); expected kafka://host:9092[,host:9092…]');
  }
  for (const broker of brokers) {
    const hostPort = /^(\[[0-9a-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/i.exec(broker);
    const port = hostPort?.[2] === undefined ? 1 : Number(hostPort[2]);
    if (!hostPort || port < 1 || port > 65535) {
      fail(`has broker ${JSON.stringify(broker)}, which is not host or host:port`);
    }
  }
  const withPorts = brokers.map((b) => (/:\d+$/.test(b) && !/^\[[^\]]*\]$/.test(b) ? b : `${b}:9092`));
  const params = new URLSearchParams(query);
  for (const name of params.keys()) {
    if (!(URL_PARAMS as readonly string[]).includes(name)) {
      fail(
        `has query parameter ${JSON.stringify(name)}; allowed: ${URL_PARAMS.join(', ')} (other settings are options)`,
      );
    }
  }
  const decode = (text: string): string => {
    try {
      return decodeURIComponent(text);
    } catch {
      return fail('has credentials that are not valid percent-encoding');
    }
  };
  let sasl: KafkaEndpoint['sasl'];
  const mechanism = params.get('sasl');
  if (mechanism !== null && !(SASL_MECHANISMS as readonly string[]).includes(mechanism)) {
    fail(`has sasl=${JSON.stringify(mechanism)}; use one of ${SASL_MECHANISMS.join(', ')}`);
  }
  if (userinfo !== undefined && userinfo !== '') {
    const colon = userinfo.indexOf(':');
    const username = decode(colon < 0 ? userinfo : userinfo.slice(0, colon));
    const password = colon < 0 ? '' : decode(userinfo.slice(colon + 1));
    sasl = { mechanism: (mechanism ?? 'plain') as KafkaSaslMechanism, username, password };
  } else if (mechanism !== null) {
    fail(`has sasl=${mechanism} but no credentials; give them as kafkas://user:password@host:9093`);
  }
  const topicPrefix = params.get('topicPrefix') ?? undefined;
  const clientId = params.get('clientId') ?? undefined;
  if (clientId !== undefined && !/^[\w.-]{1,255}$/.test(clientId)) {
    fail(`has clientId=${JSON.stringify(clientId)}; use letters, digits, _ . -`);
  }
  return { brokers: withPorts, tls, sasl, safeUrl, clientId, topicPrefix };
}

/** Why `name` is not a legal Kafka topic name, or undefined when it is. */
export function kafkaTopicProblem(name: string): string | undefined {
  if (name === '') return 'is empty';
  if (name === '.' || name === '..') return 'is "." or "..", which Kafka does not allow';
  if (name.length > 249) return `is ${name.length} characters long; Kafka allows at most 249`;
  const bad = /[^a-zA-Z0-9._-]/.exec(name);
  if (bad) return `contains ${JSON.stringify(bad[0])}; Kafka topic names take only a-z A-Z 0-9 . _ -`;
  return undefined;
}

/** Applies defaults and validates; throws a {@link ConfigError} naming the option at fault. */
export function resolveKafkaOptions(options: KafkaTransportOptions): ResolvedKafkaTransportOptions {
  const { url, topicPrefix, clientId, ...resolved } = kafkaOptionsSchema.resolve(options);
  if (url === undefined && resolved.producer === undefined) {
    throw new ConfigError(
      'url',
      'KafkaTransport option url is missing; give kafka://host:9092[,host:9092…] (or a producer)',
    );
  }
  const endpoint = url === undefined ? undefined : resolveKafkaUrl(url);
  const prefix = topicPrefix ?? endpoint?.topicPrefix ?? '';
  // The prefix alone must be made of legal characters, or every topic would fail.
  const bad = /[^a-zA-Z0-9._-]/.exec(prefix);
  if (bad || prefix.length > 248) {
    throw new ConfigError(
      'topicPrefix',
      `KafkaTransport topicPrefix ${JSON.stringify(prefix)} ${
        bad
          ? `contains ${JSON.stringify(bad[0])}; Kafka topic names take only a-z A-Z 0-9 . _ -`
          : 'is too long'
      }`,
      { value: prefix },
    );
  }
  return {
    ...resolved,
    topicPrefix: prefix,
    clientId: clientId ?? endpoint?.clientId ?? 'mailroom',
    endpoint,
    where: endpoint?.safeUrl ?? 'the given Kafka producer',
  };
}
