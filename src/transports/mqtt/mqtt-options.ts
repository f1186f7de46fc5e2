import { randomBytes } from 'node:crypto';
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
import { topicNameProblem } from './mqtt-topic.js';

/** Turns a Mailroom topic into an MQTT topic name (before `prefix`). */
export type MqttTopicMapper = (topic: string) => string;

/** Options of {@link MqttTransport}. Only `url` is required. */
export interface MqttTransportOptions {
  /**
   * Broker address, `mqtt://` (plain, port 1883 by default) or `mqtts://` (TLS, 8883), with
   * optional credentials: `mqtt://user:password@host:1883`. The broker must speak MQTT 5. The
   * password never appears in errors.
   *
   * @example 'mqtt://relay:s3cret@mosquitto.internal:1883'
   * @example 'mqtts://relay:s3cret@broker.example.com:8883'
   */
  url: string;
  /**
   * Quality of service of every PUBLISH. `1`: reported `ok` at the broker's PUBACK (at least
   * once). `2`: reported `ok` at its PUBCOMP (the broker forwards the message once per
   * subscription; one more round trip per message).
   *
   * @default 1
   */
  qos?: 1 | 2;
  /**
   * The MQTT topic name of a message, from its topic: a template in which `{topic}` stands for the
   * topic with each `.` turned into `/` (`order.created` → `order/created`), or a function of the
   * topic returning the whole name. `prefix` is put in front of either.
   *
   * @default '{topic}'
   * @example 'shop/{topic}'
   * @example (topic) => topic.toUpperCase()
   */
  topic?: string | MqttTopicMapper;
  /**
   * Put in front of every topic name, e.g. `'mailroom/'` or a tenant: `'acme/'`.
   *
   * @default ''
   */
  prefix?: string;
  /**
   * The MQTT client identifier. Two connections with the same one take each other's session over
   * (the broker drops the older connection), so every transport instance gets its own by default.
   *
   * @default 'mailroom-' followed by 12 random hex digits
   */
  clientId?: string;
  /**
   * Most PUBLISH packets waiting for their PUBACK/PUBCOMP on the connection at once, across
   * publish calls; the broker's Receive Maximum (CONNACK) lowers it (Mosquitto: 20 by default,
   * `max_inflight_messages`). More messages wait, in order, for a slot.
   *
   * @default 1000
   */
  maxInflight?: number;
  /**
   * Largest PUBLISH packet (topic, properties and payload) sent when the broker announces no
   * Maximum Packet Size in its CONNACK; a larger message reports `permanent` without being sent.
   * A broker that gets a packet over its limit drops the connection with everything in flight on
   * it (Mosquitto: `max_packet_size`, which it announces, and `message_size_limit`, which it does
   * not): set this to the broker's limit when it does not announce it.
   *
   * @default 268435455 (the largest MQTT packet)
   */
  maxPacketBytes?: number;
  /**
   * Largest payload, in bytes; a larger message reports `permanent` without being sent. For a
   * broker with a payload limit it does not announce: Mosquitto's `message_size_limit` closes the
   * connection over a larger payload, with everything in flight on it. No limit by default (the
   * packet limit above still applies).
   *
   * @example 1048576
   */
  maxPayloadBytes?: number;
  /**
   * How long to wait for the PUBACK (QoS 1) or PUBCOMP (QoS 2) of each message. Messages without
   * one by then report `unavailable` and the connection is dropped. The relay's publish deadline,
   * when shorter, ends the wait first.
   *
   * @default 30000
   */
  ackTimeoutMs?: number;
  /** Limit for the TCP/TLS connect and the CONNECT/CONNACK exchange. @default 10000 */
  connectTimeoutMs?: number;
  /**
   * MQTT keep-alive in seconds: a connection silent for 1.5 times this is taken as dead by both
   * sides (MQTT.js sends PINGREQ in between). `0` disables it. The broker may impose its own
   * (CONNACK Server Keep Alive).
   *
   * @default 30
   */
  keepaliveSeconds?: number;
  /**
   * TLS options for `mqtts://`: `ca`, `cert`, `key`, `servername`, `rejectUnauthorized`.
   *
   * @default {}
   * @example { ca: [readFileSync('ca.pem')] }
   */
  tls?: ConnectionOptions;
  /** How long `close()` waits for batches in flight before closing the connection. @default 10000 */
  closeTimeoutMs?: number;
  /**
   * Delay before the second reconnect attempt after a failed connect; doubles per failed attempt
   * up to `maxReconnectDelayMs`, jittered between half and all of it. MQTT.js's own reconnect
   * (`reconnectPeriod`) is off: the transport reconnects on the next publish, so no message waits
   * in MQTT.js's offline queue to be sent (and reported) late.
   *
   * @default 100
   */
  reconnectDelayMs?: number;
  /** Upper bound of the reconnect delay. @default 30000 */
  maxReconnectDelayMs?: number;
}

/** Where the broker is, from the URL. */
export interface MqttEndpoint {
  host: string;
  port: number;
  tls: boolean;
  username: string | undefined;
  password: string | undefined;
  /** The URL with the password replaced, for messages. */
  safeUrl: string;
}

/** The largest packet MQTT can encode (a remaining length of four bytes). */
export const MQTT_MAX_PACKET_BYTES = 268_435_455;

const mqttOptionsSchema = optionsSchema<MqttTransportOptions>()(
  'MqttTransport',
  {
    url: string({ expected: 'an mqtt:// or mqtts:// URL string', secret: true, required: true }),
    qos: custom('1 or 2', (v): v is 1 | 2 => v === 1 || v === 2, { default: 1 }),
    topic: custom(
      "a topic template such as '{topic}' or a function (topic) => string",
      (v): v is string | MqttTopicMapper => typeof v === 'string' || typeof v === 'function',
      { default: '{topic}' },
    ),
    prefix: string({ expected: "a topic prefix such as 'mailroom/'", default: '' }),
    clientId: string({
      expected: 'a client identifier string',
      default: () => `mailroom-${randomBytes(6).toString('hex')}`,
    }),
    maxInflight: integer({ min: 1, max: 65_535, default: 1000 }),
    maxPacketBytes: integer({ min: 64, max: MQTT_MAX_PACKET_BYTES, default: MQTT_MAX_PACKET_BYTES }),
    maxPayloadBytes: integer({ min: 0, max: MQTT_MAX_PACKET_BYTES }),
    ackTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 30_000 }),
    connectTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 10_000 }),
    keepaliveSeconds: integer({ min: 0, max: 65_535, default: 30 }),
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
export interface ResolvedMqttTransportOptions extends Omit<
  ResolvedOptions<typeof mqttOptionsSchema.fields>,
  'url'
> {
  endpoint: MqttEndpoint;
}

/**
 * Reads an `mqtt://` or `mqtts://` URL, so that a typo is a ConfigError at construction rather
 * than a vague connect failure on the first publish.
 */
export function resolveMqttUrl(value: string, owner = 'MqttTransport'): MqttEndpoint {
  const safeUrl = redactUrl(value);
  const fail = (why: string, cause?: unknown): never => {
    throw new ConfigError('url', `${owner} url ${JSON.stringify(safeUrl)} ${why}`, { value: safeUrl }, cause);
  };
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch (err) {
    fail(
      'is not a valid URL; expected mqtt://user:password@host:1883 (percent-encode special characters in the password)',
      err,
    );
  }
  const parsed = url as URL;
  if (parsed.protocol !== 'mqtt:' && parsed.protocol !== 'mqtts:') {
    fail(
      `has scheme ${JSON.stringify(parsed.protocol.replace(/:$/, ''))}; use mqtt:// (plain) or mqtts:// (TLS)`,
    );
  }
  if (parsed.hostname === '') fail('has no host; expected mqtt://user:password@host:1883');
  if (parsed.pathname !== '' && parsed.pathname !== '/') {
    fail(
      'has a path; MQTT URLs take none (the topic comes from each message, see the topic and prefix options)',
    );
  }
  if (parsed.search !== '' || parsed.hash !== '') {
    fail('has a query or fragment; MQTT URLs take none (give QoS, client id and TLS as options)');
  }
  const decode = (text: string): string | undefined => {
    if (text === '') return undefined;
    try {
      return decodeURIComponent(text);
    } catch (err) {
      return fail('has credentials that are not valid percent-encoding', err);
    }
  };
  const tls = parsed.protocol === 'mqtts:';
  return {
    host: parsed.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: parsed.port === '' ? (tls ? 8883 : 1883) : Number(parsed.port),
    tls,
    username: decode(parsed.username),
    password: decode(parsed.password),
    safeUrl,
  };
}

/** Checks a topic template or prefix at construction; `{topic}` stands for the mapped topic. */
function checkTopicParts(template: string | MqttTopicMapper, prefix: string): void {
  const fail = (key: string, value: string, why: string): never => {
    throw new ConfigError(key, `MqttTransport option ${key} ${JSON.stringify(value)} ${why}`, { value });
  };
  if (typeof template === 'string') {
    if (template.split('{topic}').length !== 2)
      fail('topic', template, "must contain '{topic}' exactly once");
    if (/[{}]/.test(template.replace('{topic}', '')))
      fail('topic', template, "has a brace outside '{topic}'");
    const problem = topicNameProblem(template.replace('{topic}', 'x'), { allowLong: true });
    if (problem) fail('topic', template, problem);
  }
  if (prefix !== '') {
    const problem = topicNameProblem(prefix, { allowLong: true, allowDollar: false });
    if (problem) fail('prefix', prefix, problem);
  }
}

/** Applies defaults and validates; throws a {@link ConfigError} naming the option at fault. */
export function resolveMqttOptions(options: MqttTransportOptions): ResolvedMqttTransportOptions {
  const { url, ...resolved } = mqttOptionsSchema.resolve(options);
  checkTopicParts(resolved.topic, resolved.prefix);
  if (resolved.clientId === '' || Buffer.byteLength(resolved.clientId) > 65_535) {
    throw new ConfigError('clientId', 'MqttTransport option clientId must be 1 to 65535 bytes of UTF-8', {
      value: resolved.clientId,
    });
  }
  return { ...resolved, endpoint: resolveMqttUrl(url) };
}
