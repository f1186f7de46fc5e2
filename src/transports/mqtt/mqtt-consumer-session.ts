/**
 * The consumer's connection: an MQTT 5 persistent session (clean start off, a session expiry
 * interval) subscribed at QoS 1 or 2, whose PUBLISH packets are acknowledged by the consumer when
 * it chooses (after the handler's inbox transaction committed), and the dead letters it publishes.
 *
 * Why the acknowledgement is written here and not by MQTT.js: MQTT.js acknowledges a QoS 1
 * PUBLISH as it reads it. Its two hooks that could hold the PUBACK back, `customHandleAcks` and
 * `handleMessage`, are called on its one packet reader, which reads nothing else until they call
 * back (MQTT.js 5, handlers/publish.js): holding them for a handler would stall every other packet
 * on the connection (further messages, the PUBACKs of dead letters, PINGRESP), so one message at a
 * time and a dead letter could never be confirmed. So the consumer takes each PUBLISH at the
 * `packetreceive` event, which MQTT.js emits before it handles the packet, and marks the packet
 * QoS 0 for MQTT.js (which then acknowledges nothing and reads on); the consumer writes the PUBACK
 * (QoS 1) or PUBREC (QoS 2) itself on the client's stream once the message is done. The broker's
 * PUBREL that follows a PUBREC finds no stored packet in MQTT.js, which answers it with PUBCOMP.
 *
 * @module
 */
import { ConfigError } from '../../core/errors/config-error.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { DeadLetterReason } from '../../consumer/consumer-events.js';
import {
  loadMqttConnect,
  type MqttClientLike,
  type MqttClientOptions,
  type MqttConnackProperties,
  type MqttReasonError,
  type MqttPublishProperties,
} from './mqtt-client.js';
import { MqttConnection } from './mqtt-connection.js';
import type { ResolvedMqttConsumerOptions } from './mqtt-consumer-options.js';
import { connectionLostError, describe } from './mqtt-errors.js';
import { MQTT_MAX_PACKET_BYTES } from './mqtt-options.js';
import { classifyReasonCode, hex } from './mqtt-reason-codes.js';
import { escapeMqttString, mqttStringProblem } from './mqtt-topic.js';
import { ESCAPED_HEADER, ID_HEADER, TOPIC_HEADER } from './mqtt-wire.js';

/** Cut the error property to this many characters, as the other consumers do. */
export const MAX_ERROR_CHARS = 1000;

/** User properties a dead letter gets, named as the other consumers' headers. */
export const ERROR_PROPERTY = 'mailroom-error';
export const FAILED_ATTEMPTS_PROPERTY = 'mailroom-failed-attempts';
export const DEAD_AT_PROPERTY = 'mailroom-dead-at';
export const DEAD_REASON_PROPERTY = 'mailroom-dead-reason';
/** What the message was consumed from: the subscription's topic filter. */
export const DEAD_QUEUE_PROPERTY = 'mailroom-dead-queue';
/** The Mailroom topic of the message (else its MQTT topic name). */
export const DEAD_TOPIC_PROPERTY = 'mailroom-dead-topic';

const DEAD_PROPERTIES: ReadonlySet<string> = new Set([
  ERROR_PROPERTY,
  FAILED_ATTEMPTS_PROPERTY,
  DEAD_AT_PROPERTY,
  DEAD_REASON_PROPERTY,
  DEAD_QUEUE_PROPERTY,
  DEAD_TOPIC_PROPERTY,
]);

/** PUBACK reason code 0x10: the broker took the message, and nobody subscribes to its topic. */
const NO_MATCHING_SUBSCRIBERS = 0x10;

/** The PUBLISH properties a received message carries (MQTT.js: `packet.properties`). */
export interface ReceivedProperties {
  contentType?: string;
  userProperties?: Record<string, string | string[]>;
  [other: string]: unknown;
}

/** A packet as MQTT.js's parser hands it to `packetreceive` listeners (the fields read here). */
interface ReceivedPacket {
  cmd: string;
  messageId?: number;
  qos?: number;
  dup?: boolean;
  topic?: string | Buffer;
  payload?: Buffer | string;
  properties?: ReceivedProperties;
  reasonCode?: number;
}

/** One granted subscription of a SUBACK (MQTT.js): its QoS, or a reason code ≥ 0x80. */
interface SubscriptionGrant {
  topic: string;
  qos: number;
}

/** MQTT.js's client with what the consumer needs besides what the transport uses. */
export interface MqttSubscriberClient extends MqttClientLike {
  /** The socket MQTT.js writes packets to; PUBACK and PUBREC go there too. */
  readonly stream: { write(chunk: Buffer): unknown };
  subscribe(
    filter: string,
    options: { qos: 1 | 2 },
    callback: (error: Error | null, granted?: SubscriptionGrant[]) => void,
  ): unknown;
  on(
    event: 'connect',
    listener: (packet: { properties?: MqttConnackProperties; sessionPresent?: boolean }) => void,
  ): unknown;
  on(event: 'error', listener: (error: MqttReasonError) => void): unknown;
  on(event: 'close', listener: () => void): unknown;
  on(event: 'disconnect', listener: (packet: { reasonCode?: number; properties?: unknown }) => void): unknown;
  on(event: 'packetreceive', listener: (packet: ReceivedPacket) => void): unknown;
}

function isSubscriberClient(client: MqttClientLike): client is MqttSubscriberClient {
  const c = client as Partial<MqttSubscriberClient>;
  return typeof c.subscribe === 'function' && typeof c.stream?.write === 'function';
}

/** A PUBLISH the broker sent to the consumer, taken before MQTT.js handled it. */
export interface MqttDeliveryPacket {
  /** The packet identifier the PUBACK/PUBREC names; undefined at QoS 0. */
  packetId: number | undefined;
  /** The QoS it came with (a QoS 0 message has nothing to acknowledge and is not redelivered). */
  qos: 0 | 1 | 2;
  /** True when the broker sent it before (MQTT DUP flag): a redelivery after a reconnect. */
  dup: boolean;
  topicName: string;
  payload: Buffer;
  properties: ReceivedProperties | undefined;
}

/** One connection with its persistent session and subscription; replaced as a whole when it ends. */
export interface ConsumerSession {
  readonly connection: MqttConnection;
  readonly client: MqttSubscriberClient;
  /** The CONNACK's Session Present: the broker resumed the session (and its unacknowledged messages). */
  readonly resumed: boolean;
  /** PUBACK reason codes of this connection's dead letters, by packet identifier, until read. */
  readonly pubackCodes: Map<number, number>;
  /** When the session was subscribed (`performance.now()`). */
  readonly openedAt: number;
  /** The reason code of the broker's DISCONNECT, once it sent one. */
  readonly disconnectCode: () => number | undefined;
}

/** DISCONNECT reason code 0x8E: another connection with the same client id took the session. */
export const SESSION_TAKEN_OVER = 0x8e;

/**
 * Connects with the persistent session and subscribes (waiting for the SUBACK, so a refused
 * subscription fails here). `onDelivery` gets every PUBLISH with its session, the ones the broker
 * redelivers right after the CONNACK included.
 */
export async function openConsumerSession(
  options: Readonly<ResolvedMqttConsumerOptions>,
  onDelivery: (session: ConsumerSession, delivery: MqttDeliveryPacket) => void,
): Promise<ConsumerSession> {
  const connect = await loadMqttConnect();
  const holder: {
    session?: ConsumerSession;
    client?: MqttSubscriberClient;
    resumed: boolean;
    disconnectCode?: number;
  } = { resumed: false };
  const pending: MqttDeliveryPacket[] = [];
  const pubackCodes = new Map<number, number>();
  const onPacket = (packet: ReceivedPacket) => {
    if (packet.cmd === 'puback' && typeof packet.messageId === 'number') {
      pubackCodes.set(packet.messageId, packet.reasonCode ?? 0);
      return;
    }
    if (packet.cmd !== 'publish') return;
    const qos = packet.qos === 1 || packet.qos === 2 ? packet.qos : 0;
    const payload = packet.payload ?? Buffer.alloc(0);
    const delivery: MqttDeliveryPacket = {
      packetId: qos === 0 ? undefined : packet.messageId,
      qos,
      dup: packet.dup === true,
      topicName: String(packet.topic ?? ''),
      payload: Buffer.isBuffer(payload) ? payload : Buffer.from(payload),
      properties: packet.properties,
    };
    // MQTT.js acknowledges nothing it takes for QoS 0: the consumer acknowledges (see above).
    packet.qos = 0;
    if (holder.session) onDelivery(holder.session, delivery);
    else pending.push(delivery);
  };
  // Our own Session Expiry Interval and Receive Maximum, clean start off: the broker keeps the
  // session, and at most `prefetch` unacknowledged messages are handed over at once.
  const properties = {
    sessionExpiryInterval: options.sessionExpirySeconds,
    receiveMaximum: options.prefetch,
  };
  const connection = await MqttConnection.open(
    (base: MqttClientOptions) => {
      const client = connect({ ...base, clean: false, properties });
      if (!isSubscriberClient(client)) {
        client.end(true, {}, () => undefined);
        throw new ConfigError(
          'mqtt',
          'the installed mqtt package has no subscribe() or stream on its client; install MQTT.js 5 (`npm install mqtt@5`)',
        );
      }
      client.on('packetreceive', onPacket);
      client.on('connect', (connack) => (holder.resumed = connack.sessionPresent === true));
      client.on('disconnect', (packet) => (holder.disconnectCode = packet.reasonCode ?? 0));
      holder.client = client;
      return client;
    },
    {
      endpoint: options.endpoint,
      clientId: options.clientId,
      connectTimeoutMs: options.connectTimeoutMs,
      keepaliveSeconds: options.keepaliveSeconds,
      tls: { ...options.tls },
      maxInflight: 100,
      maxPacketBytes: MQTT_MAX_PACKET_BYTES,
    },
    new AbortController().signal,
  );
  const client = holder.client as MqttSubscriberClient;
  try {
    await subscribe(connection, client, options);
  } catch (err) {
    connection.destroy(err instanceof Error ? err : new Error(String(err)));
    throw err;
  }
  const session: ConsumerSession = {
    connection,
    client,
    resumed: holder.resumed,
    pubackCodes,
    openedAt: performance.now(),
    disconnectCode: () => holder.disconnectCode,
  };
  holder.session = session;
  for (const delivery of pending.splice(0)) onDelivery(session, delivery);
  return session;
}

/** SUBSCRIBE at the consumer's QoS; throws a `subscribe_failed` TransportError unless granted QoS 1 or 2. */
async function subscribe(
  connection: MqttConnection,
  client: MqttSubscriberClient,
  options: Readonly<ResolvedMqttConsumerOptions>,
): Promise<void> {
  const { safeUrl } = options.endpoint;
  const { filter } = options;
  const failed = (why: string, cause?: unknown) =>
    new TransportError(
      'subscribe_failed',
      `the MQTT broker at ${safeUrl} did not subscribe the consumer to ${JSON.stringify(filter)}: ${why}`,
      { ...(cause === undefined ? {} : { cause }), details: { url: safeUrl, filter } },
    );
  const granted = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(failed(`no SUBACK within ${options.connectTimeoutMs} ms (connectTimeoutMs)`)),
      options.connectTimeoutMs,
    );
    const onEnd = () => {
      clearTimeout(timer);
      reject(connection.lostReason ?? failed('the connection ended'));
    };
    connection.ended.addEventListener('abort', onEnd, { once: true });
    client.subscribe(filter, { qos: options.qos }, (error, grants) => {
      clearTimeout(timer);
      connection.ended.removeEventListener('abort', onEnd);
      if (error) reject(failed(describe(error), error));
      else resolve(grants?.[0]?.qos ?? 0x80);
    });
  });
  if (granted >= 0x80) {
    const info = classifyReasonCode(granted);
    const hint = filter.startsWith('$share/')
      ? '; check that the broker supports shared subscriptions (MQTT 5, Mosquitto 1.6+), or set shared: false'
      : '';
    throw failed(
      `SUBACK reason code ${hex(granted)} (${info.name}); check that the user may subscribe to the topic${hint}`,
    );
  }
  if (granted === 0) {
    throw failed(
      'the broker granted QoS 0 only, under which nothing is acknowledged and a message in hand is lost with the ' +
        'connection; allow QoS 1 for this client (Mosquitto: max_qos) or use another broker',
    );
  }
}

/**
 * Writes the PUBACK (QoS 1) or PUBREC (QoS 2) of `delivery` on its connection: MQTT 5 §3.4.2.1, a
 * success without properties is the packet type, a remaining length of 2 and the packet
 * identifier. False when the connection has ended (the broker redelivers the message to the
 * session when the consumer reconnects).
 */
export function acknowledge(session: ConsumerSession, delivery: MqttDeliveryPacket): boolean {
  if (delivery.qos === 0 || delivery.packetId === undefined) return true;
  if (!session.connection.open) return false;
  const type = delivery.qos === 1 ? 0x40 : 0x50;
  const id = delivery.packetId;
  session.client.stream.write(Buffer.from([type, 0x02, id >> 8, id & 0xff]));
  return true;
}

/** Why the message died, as user properties escaped where MQTT needs it; `escaped` gets their names. */
function deadProperties(
  delivery: MqttDeliveryPacket,
  options: Readonly<ResolvedMqttConsumerOptions>,
  why: DeadLetterReason,
): Record<string, string | string[]> {
  const original = delivery.properties?.userProperties ?? {};
  const user = Object.create(null) as Record<string, string | string[]>;
  for (const [name, value] of Object.entries(original)) {
    if (name === ESCAPED_HEADER || DEAD_PROPERTIES.has(name)) continue;
    user[name] = value;
  }
  let escaped: string[] = [];
  const list = original[ESCAPED_HEADER];
  try {
    const parsed: unknown = JSON.parse(Array.isArray(list) ? (list[0] ?? '[]') : (list ?? '[]'));
    if (Array.isArray(parsed))
      escaped = parsed.filter((n): n is string => typeof n === 'string' && n in user);
  } catch {
    // Not Mailroom's list: the properties travel as they came.
  }
  const topicProperty = original[TOPIC_HEADER];
  const add = (name: string, value: string) => {
    if (mqttStringProblem(value) === undefined) user[name] = value;
    else {
      user[name] = escapeMqttString(value);
      escaped.push(name);
    }
  };
  add(ERROR_PROPERTY, why.error.message.slice(0, MAX_ERROR_CHARS));
  add(FAILED_ATTEMPTS_PROPERTY, String(why.failedAttempts));
  add(DEAD_AT_PROPERTY, new Date().toISOString());
  add(DEAD_REASON_PROPERTY, why.reason);
  add(DEAD_QUEUE_PROPERTY, options.filter);
  add(
    DEAD_TOPIC_PROPERTY,
    (Array.isArray(topicProperty) ? topicProperty[0] : topicProperty) ?? delivery.topicName,
  );
  if (escaped.length > 0) user[ESCAPED_HEADER] = JSON.stringify(escaped);
  return user;
}

/**
 * Publishes the dead letter at QoS 1 and waits for its PUBACK (at most `deadLetterTimeoutMs`):
 * the original's payload, content type and user properties, plus why it died. Throws a
 * `dead_letter_failed` TransportError otherwise, and when the broker dropped it for want of a
 * subscriber (reason code 0x10) with `deadLetterNeedsSubscriber`. The caller acknowledges the
 * original after.
 */
export async function sendDeadLetter(
  session: ConsumerSession,
  delivery: MqttDeliveryPacket,
  options: Readonly<ResolvedMqttConsumerOptions>,
  why: DeadLetterReason,
): Promise<void> {
  const { deadLetterTopic, deadLetterTimeoutMs } = options;
  const properties: MqttPublishProperties = { userProperties: deadProperties(delivery, options, why) };
  const contentType = delivery.properties?.contentType;
  if (contentType !== undefined) properties.contentType = contentType;
  const failure = await new Promise<string | undefined>((resolve) => {
    const { connection } = session;
    if (!connection.open) {
      resolve(`the connection had ended (${connection.lostReason?.message ?? 'closed'})`);
      return;
    }
    const timer = setTimeout(() => {
      finish(`no PUBACK within ${deadLetterTimeoutMs} ms (deadLetterTimeoutMs)`);
      // A broker that does not answer: the connection is dropped, and the consumer reconnects.
      connection.destroy(
        connectionLostError(options.endpoint.safeUrl, 'no PUBACK for a dead letter in time'),
      );
    }, deadLetterTimeoutMs);
    const onEnd = () => finish(`the connection was lost (${connection.lostReason?.message ?? 'closed'})`);
    let done = false;
    const finish = (result: string | undefined) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      connection.ended.removeEventListener('abort', onEnd);
      resolve(result);
    };
    connection.ended.addEventListener('abort', onEnd, { once: true });
    session.client.publish(
      deadLetterTopic,
      delivery.payload,
      { qos: 1, retain: false, properties },
      (error, packet) => {
        if (error) {
          const code = error.code;
          finish(
            typeof code === 'number'
              ? `the broker refused it with reason code ${hex(code)} (${classifyReasonCode(code).name})`
              : describe(error),
          );
          return;
        }
        const id = (packet as { messageId?: unknown } | undefined)?.messageId;
        const code = typeof id === 'number' ? session.pubackCodes.get(id) : undefined;
        if (typeof id === 'number') session.pubackCodes.delete(id);
        if (code === NO_MATCHING_SUBSCRIBERS && options.deadLetterNeedsSubscriber) {
          finish(
            `nobody subscribes to it, and the broker dropped it (PUBACK reason code 0x10); subscribe a persistent ` +
              `session to ${JSON.stringify(deadLetterTopic)} (or set deadLetterNeedsSubscriber: false to accept the loss)`,
          );
          return;
        }
        finish(undefined);
      },
    );
  });
  if (failure !== undefined) {
    const id = delivery.properties?.userProperties?.[ID_HEADER];
    throw new TransportError(
      'dead_letter_failed',
      `could not dead-letter message ${typeof id === 'string' ? id : '(no mailroom-id)'} to MQTT topic ` +
        `${JSON.stringify(deadLetterTopic)}: ${failure}; the message stays unacknowledged and is dead-lettered again ` +
        'after a pause (or redelivered, if the connection was lost)',
      { details: { deadLetterTopic } },
    );
  }
}
