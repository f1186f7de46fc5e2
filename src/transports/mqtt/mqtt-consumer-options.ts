import { hostname } from 'node:os';
import type { ConnectionOptions } from 'node:tls';

import { ConfigError } from '../../core/errors/config-error.js';
import {
  boolean,
  custom,
  integer,
  MAX_TIMER_MS,
  nested,
  optionsSchema,
  string,
  type ResolvedOptions,
} from '../../core/options-schema.js';
import * as common from '../../consumer/consumer-options.js';
import { resolveMqttUrl, type MqttEndpoint, type MqttTopicMapper } from './mqtt-options.js';
import { mqttStringProblem, topicNameFor, topicNameProblem } from './mqtt-topic.js';

export type {
  ConsumerContext,
  ConsumerHandler,
  ConsumerInbox,
  ConsumerRetryOptions,
} from '../../consumer/consumer.js';

/**
 * Options of {@link MqttConsumer}; `url`, `topic`, `handler` and `group` (or `clientId`) are
 * required. With `inbox`, `Tx` is its transaction type and the handler gets the transaction;
 * without, `undefined`.
 */
export type MqttConsumerOptions<Tx = undefined> = common.ConsumerOptionsOf<MqttConsumerBaseOptions, Tx>;

/** The options of {@link MqttConsumer} besides `inbox` and `handler`. */
export interface MqttConsumerBaseOptions extends common.ConsumerCommonOptions {
  /**
   * Broker address, `mqtt://` or `mqtts://`, as `MqttTransport` takes it. The broker must speak
   * MQTT 5. The password never appears in errors or logs.
   *
   * @example 'mqtt://billing:s3cret@mosquitto.internal:1883'
   */
  url: string;
  /**
   * The Mailroom topic to consume (`order.created`): the consumer subscribes to the MQTT topic
   * name the relay's `MqttTransport` publishes it to, by `topicTemplate` and `prefix`.
   *
   * @example 'order.created'
   */
  topic: string;
  /**
   * The MQTT topic name of `topic`, as the transport's `topic` option maps it: a template in which
   * `{topic}` stands for the topic with each `.` turned into `/`, or a function of the topic
   * returning the whole name. Give the transport's value.
   *
   * @default '{topic}'
   */
  topicTemplate?: string | MqttTopicMapper;
  /** Put in front of the topic name, as the transport's `prefix`. @default '' */
  prefix?: string;
  /**
   * The consumer group: the instances of one service that share the work. With `shared` (the
   * default when a group is given) they subscribe to `$share/<group>/<topic name>` and the broker
   * hands each message to one of them. It also names the client (see `clientId`).
   *
   * @example 'billing'
   */
  group?: string;
  /**
   * This instance within the group, stable across restarts (a StatefulSet pod name, a host name):
   * with `group` it makes the default `clientId`. Two running instances with the same one take
   * each other's session over (the broker drops the older connection).
   *
   * @default os.hostname()
   */
  instance?: string;
  /**
   * The MQTT client identifier, which names the persistent session: the broker keeps the
   * subscription and the messages not yet acknowledged under it while the consumer is away, and
   * redelivers them when a consumer with the same identifier connects again. Must be stable across
   * restarts and differ between the instances running at once.
   *
   * @default `mailroom-${group}-${instance}`
   */
  clientId?: string;
  /**
   * Subscribe through an MQTT 5 shared subscription, `$share/<group>/<topic name>`: each message
   * goes to one instance of the group. `false`: every consumer gets every message.
   *
   * @default true when `group` is given
   */
  shared?: boolean;
  /**
   * Quality of service of the subscription. `1`: a PUBACK once the handler's inbox transaction
   * committed. `2`: the PUBREC then (and PUBCOMP after the broker's PUBREL); the broker sends
   * fewer copies, but the inbox still decides: a copy sent again after a lost connection is
   * recognised by its id either way.
   *
   * @default 1
   */
  qos?: 1 | 2;
  /**
   * How long the broker keeps the session (subscription and unacknowledged or queued messages)
   * after the connection ended, in seconds (MQTT 5 Session Expiry Interval). A consumer away for
   * longer comes back to a new session: messages queued meanwhile are gone. `4294967295`: never.
   *
   * @default 604800 (7 days)
   */
  sessionExpirySeconds?: number;
  /**
   * The MQTT topic name where messages go that failed `retry.maxAttempts` times or cannot be
   * decoded (a QoS 1 PUBLISH; the original is acknowledged after its PUBACK).
   *
   * @default `${topic name}/dead`
   */
  deadLetterTopic?: string;
  /**
   * Refuse a dead letter the broker drops because nobody subscribes to `deadLetterTopic` (PUBACK
   * reason code 0x10, No matching subscribers): MQTT keeps no message nobody subscribed to, so the
   * original stays unacknowledged and dead-lettering is tried again after a pause until a
   * persistent subscriber (`MqttConsumer`, `mosquitto_sub -c`) exists. `false` accepts the drop.
   *
   * @default true
   */
  deadLetterNeedsSubscriber?: boolean;
  /** How long to wait for the PUBACK of a dead letter. @default 30000 */
  deadLetterTimeoutMs?: number;
  /**
   * Messages the broker hands over before they are acknowledged, at least `concurrency`: the MQTT 5
   * Receive Maximum sent in CONNECT. The broker's own limit may be lower (Mosquitto:
   * `max_inflight_messages`, 20 by default).
   *
   * @default 2 × concurrency
   */
  prefetch?: number;
  /** Limit for connecting (CONNECT/CONNACK) and subscribing (SUBSCRIBE/SUBACK). @default 10000 */
  connectTimeoutMs?: number;
  /** MQTT keep-alive in seconds; `0` disables it. @default 30 */
  keepaliveSeconds?: number;
  /** TLS options for `mqtts://`. @default {} */
  tls?: ConnectionOptions;
}

/** A share name: MQTT forbids `/`, `+` and `#` in it. */
const GROUP_RE = /^[^/+#]+$/;

const consumerSchema = optionsSchema<common.ConsumerOptionKeys<MqttConsumerBaseOptions>>()(
  'MqttConsumer',
  {
    url: string({ expected: 'an mqtt:// or mqtts:// URL string', secret: true, required: true }),
    topic: string({ expected: "a Mailroom topic such as 'order.created'", required: true }),
    topicTemplate: custom(
      "a topic template such as '{topic}' or a function (topic) => string",
      (v): v is string | MqttTopicMapper => typeof v === 'string' || typeof v === 'function',
      { default: '{topic}' },
    ),
    prefix: string({ empty: true, expected: "a topic prefix such as 'mailroom/'", default: '' }),
    group: string({ pattern: GROUP_RE, expected: "a group name without '/', '+' or '#', such as 'billing'" }),
    instance: string({ expected: 'an instance name such as a host or pod name', default: () => hostname() }),
    clientId: string({ expected: 'a client identifier string' }),
    shared: boolean({ default: (r) => r['group'] !== undefined }),
    qos: custom('1 or 2', (v): v is 1 | 2 => v === 1 || v === 2, { default: 1 }),
    sessionExpirySeconds: integer({ min: 1, max: 4_294_967_295, default: 604_800 }),
    deadLetterTopic: string({ expected: "an MQTT topic name such as 'order/created/dead'" }),
    deadLetterNeedsSubscriber: boolean({ default: true }),
    deadLetterTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 30_000 }),
    ...common.handlerFields,
    retry: nested(common.retryOptionsSchema('MqttConsumer')),
    ...common.lifecycleFields,
    keepaliveSeconds: integer({ min: 0, max: 65_535, default: 30 }),
    tls: custom(
      'an object of TLS options',
      (v): v is ConnectionOptions => typeof v === 'object' && v !== null && !Array.isArray(v),
      { default: () => ({}) },
    ),
    ...common.reconnectFields,
    logger: common.loggerField,
  },
  { ordered: common.consumerOrderedOptions },
);

type Resolved = ResolvedOptions<typeof consumerSchema.fields>;

/** Options after defaults and validation. */
export interface ResolvedMqttConsumerOptions extends Omit<
  Resolved,
  'handler' | 'inbox' | 'url' | 'clientId' | 'deadLetterTopic'
> {
  endpoint: MqttEndpoint;
  clientId: string;
  /** The MQTT topic name of `topic`. */
  topicName: string;
  /** What is subscribed to: `$share/<group>/<topicName>` or `topicName`. */
  filter: string;
  deadLetterTopic: string;
}

function fail(key: string, value: unknown, why: string): never {
  throw new ConfigError(key, `MqttConsumer option ${key} ${JSON.stringify(value)} ${why}`, { value });
}

/** The MQTT topic name `topic` maps to; throws a ConfigError when it cannot be subscribed to. */
function topicNameOf(resolved: Pick<Resolved, 'topicTemplate' | 'prefix' | 'topic'>): string {
  const { topicTemplate, prefix, topic } = resolved;
  if (typeof topicTemplate === 'string' && topicTemplate.split('{topic}').length !== 2) {
    fail('topicTemplate', topicTemplate, "must contain '{topic}' exactly once");
  }
  let name: string;
  try {
    name = topicNameFor(topicTemplate, prefix, topic);
  } catch (err) {
    throw new ConfigError(
      'topicTemplate',
      `MqttConsumer option topicTemplate failed for topic ${JSON.stringify(topic)}: ${
        err instanceof Error ? err.message : String(err)
      }; give the function the transport uses`,
      {},
      err,
    );
  }
  const problem = topicNameProblem(name);
  if (problem) {
    fail('topic', topic, `maps to the MQTT topic name ${JSON.stringify(name)}, which ${problem}`);
  }
  return name;
}

/**
 * Applies defaults and validates; throws a {@link ConfigError} naming the option at fault. The
 * handler and inbox are checked here but kept by the caller, which knows their types.
 */
export function resolveMqttConsumerOptions<Tx>(
  options: MqttConsumerOptions<Tx>,
): ResolvedMqttConsumerOptions {
  const {
    handler,
    inbox: _inbox,
    url,
    clientId,
    deadLetterTopic,
    ...resolved
  } = consumerSchema.resolve(options);
  common.requireHandler('MqttConsumer', handler);
  const endpoint = resolveMqttUrl(url, 'MqttConsumer');
  const topicName = topicNameOf(resolved);
  const { group } = resolved;
  if (group === undefined && clientId === undefined) {
    throw new ConfigError(
      'group',
      'MqttConsumer needs a group (or a clientId): the session the broker keeps unacknowledged messages in is ' +
        "named by a stable client identifier, made from group and instance; give group: 'billing' (or clientId)",
    );
  }
  if (resolved.shared && group === undefined) {
    fail('shared', true, 'needs a group: the shared subscription is $share/<group>/<topic name>');
  }
  const id = clientId ?? `mailroom-${group as string}-${resolved.instance}`;
  if (Buffer.byteLength(id) > 65_535 || mqttStringProblem(id) !== undefined) {
    fail(clientId === undefined ? 'instance' : 'clientId', id, 'is not a valid MQTT client identifier');
  }
  const dead = deadLetterTopic ?? `${topicName}/dead`;
  const deadProblem = topicNameProblem(dead);
  if (deadProblem) fail('deadLetterTopic', dead, deadProblem);
  common.requireDistinctDeadLetters('MqttConsumer', {
    option: 'deadLetterTopic',
    value: dead,
    source: 'the topic name consumed',
    sourceValue: topicName,
    where: 'on the topic consumed',
  });
  return {
    ...resolved,
    endpoint,
    clientId: id,
    topicName,
    filter: resolved.shared ? `$share/${group as string}/${topicName}` : topicName,
    deadLetterTopic: dead,
  };
}
