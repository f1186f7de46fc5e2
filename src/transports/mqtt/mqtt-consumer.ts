import { ConfigError } from '../../core/errors/config-error.js';
import { CoreDrivenConsumer } from '../../consumer/consumer-base.js';
import { ConsumerCore, handlerRunner, type ConsumerBroker } from '../../consumer/consumer-core.js';
import type { MqttConsumerEvents } from './mqtt-consumer-events.js';
import {
  resolveMqttConsumerOptions,
  type MqttConsumerOptions,
  type ResolvedMqttConsumerOptions,
} from './mqtt-consumer-options.js';
import {
  acknowledge,
  openConsumerSession,
  sendDeadLetter,
  SESSION_TAKEN_OVER,
  type ConsumerSession,
  type MqttDeliveryPacket,
} from './mqtt-consumer-session.js';
import { connectionLostError } from './mqtt-errors.js';
import { decodeMqttMessage } from './mqtt-wire.js';

/** A PUBLISH and the session it came on: only that connection can acknowledge it. */
interface Delivery {
  readonly session: ConsumerSession;
  readonly packet: MqttDeliveryPacket;
}

type Started = { filter: string; clientId: string };
type DeadLetterTo = { deadLetterTopic: string };

/**
 * Consumes the MQTT topic the relay's `MqttTransport` publishes a Mailroom topic to, and runs a
 * handler for each message, with the shape every Mailroom consumer has ({@link MessageConsumer}):
 * once per message id with an `inbox`, acknowledged (PUBACK at QoS 1, PUBREC at QoS 2) only after
 * the inbox transaction committed; retried in the process with backoff, then published to the
 * dead-letter topic (QoS 1, PUBACKed) and only then acknowledged; serial per key; reconnecting;
 * draining on stop.
 *
 * The consumer connects with an MQTT 5 persistent session (clean start off, a session expiry
 * interval, a client identifier stable across restarts, from `group` and `instance`), so the
 * broker keeps the messages not yet acknowledged while the consumer is away and sends them again
 * when it reconnects. The instances of one `group` share the work through the shared subscription
 * `$share/<group>/<topic name>`.
 *
 * `start()` connects and subscribes; it throws a `TransportError` (`unreachable`, `auth_failed`,
 * `not_mqtt5`, `connect_refused`, `subscribe_failed`). Later losses are not thrown: the consumer
 * reconnects.
 *
 * @example
 * ```ts
 * const consumer = new MqttConsumer({
 *   url: 'mqtt://billing:s3cret@mosquitto.internal:1883',
 *   topic: 'order.created',
 *   group: 'billing',
 *   inbox: new Inbox({ store, consumer: 'billing' }),
 *   handler: async (message, tx) => {
 *     await tx.execute('INSERT INTO invoices (order_id) VALUES ($1)', [message.payload.orderId]);
 *   },
 * });
 * await consumer.start();
 * // …
 * await consumer.stop();
 * ```
 */
export class MqttConsumer<Tx = undefined> extends CoreDrivenConsumer<MqttConsumerEvents> {
  /** The topic filter subscribed to: `$share/<group>/<topic name>`, or the topic name. */
  readonly filter: string;
  /** The client identifier that names the persistent session. */
  readonly clientId: string;
  /** Where failed and undecodable messages go. */
  readonly deadLetterTopic: string;
  readonly #options: Readonly<ResolvedMqttConsumerOptions>;
  readonly #handler: ReturnType<typeof handlerRunner>;
  /** Sessions in a row that ended within {@link SHORT_SESSION_MS} of opening. */
  #shortSessions = 0;
  /** Sessions this consumer closed itself (stop): their end is no loss. */
  readonly #closed = new WeakSet<ConsumerSession>();
  protected readonly core: ConsumerCore<ConsumerSession, Delivery, Started, DeadLetterTo>;

  constructor(options: MqttConsumerOptions<Tx>) {
    const resolved = resolveMqttConsumerOptions(options);
    super(resolved.logger);
    this.#options = Object.freeze(resolved);
    this.filter = resolved.filter;
    this.clientId = resolved.clientId;
    this.deadLetterTopic = resolved.deadLetterTopic;
    this.#handler = handlerRunner(options, ackNeedsInboxError, 'mqtt');
    const { safeUrl } = resolved.endpoint;
    const broker: ConsumerBroker<ConsumerSession, Delivery, Started, DeadLetterTo> = {
      source: { filter: this.filter, clientId: this.clientId },
      deadLetterTo: { deadLetterTopic: this.deadLetterTopic },
      safeUrl,
      open: async (cancelled) => {
        if (this.#shortSessions > 0) {
          // Sessions that end as soon as they open (two consumers with one client id take it from
          // each other, and Mosquitto just closes the older socket): a growing pause between them.
          const { reconnectDelayMs, maxReconnectDelayMs } = this.#options;
          await pause(Math.min(maxReconnectDelayMs, reconnectDelayMs * 2 ** this.#shortSessions), cancelled);
        }
        const session = await openConsumerSession(this.#options, (s, packet) =>
          this.core.deliver({ session: s, packet }),
        );
        this.logger.debug('mqtt consumer session open', {
          clientId: this.clientId,
          filter: this.filter,
          resumed: session.resumed,
        });
        return session;
      },
      isOpen: (session) => session.connection.open,
      ended: (session) => session.connection.ended,
      watch: (session, lost) => {
        const onEnd = () => {
          if (this.#closed.has(session)) return;
          const code = session.disconnectCode();
          if (performance.now() - session.openedAt < SHORT_SESSION_MS) this.#shortSessions++;
          else this.#shortSessions = 0;
          if (code === SESSION_TAKEN_OVER || this.#shortSessions >= 2) {
            this.logger.warn(
              'the consumer session keeps ending as soon as it opens: another connection with the same client id ' +
                'may be taking it over; give every running instance its own instance (or clientId)',
              {
                clientId: this.clientId,
                filter: this.filter,
                disconnectCode: code,
                shortSessions: this.#shortSessions,
              },
            );
          }
          lost(session.connection.lostReason ?? new Error('connection ended'));
        };
        if (session.connection.ended.aborted) onEnd();
        else session.connection.ended.addEventListener('abort', onEnd, { once: true });
      },
      // A DISCONNECT with reason 0: the broker keeps the session (and the messages not yet
      // acknowledged in it) for sessionExpirySeconds.
      close: (session, why) => {
        this.#closed.add(session);
        return session.connection.close(
          connectionLostError(safeUrl, why === 'stopped' ? 'consumer stopped' : 'stopped while starting'),
        );
      },
      // The connection has ended already.
      discard: () => {},
      stoppedWhileStarting: () => connectionLostError(safeUrl, 'the consumer was stopped while starting'),
      // No UNSUBSCRIBE before draining: it would end the session's subscription for every later
      // start. New deliveries are left unacknowledged from then on; the broker sends them again
      // when this session reconnects.
      countsLateDeliveries: true,
      decode: ({ packet }) => decodeMqttMessage(packet.topicName, packet.payload, packet.properties),
      run: async (delivery, message) => {
        const status = await this.#handler.run(message);
        return {
          status,
          acknowledge: async () => {
            this.#ack(delivery, message.id);
            return 'acked';
          },
        };
      },
      exhausted: (failures) => new Error(`failed ${failures} times`),
      sendDeadLetter: (delivery, why) =>
        sendDeadLetter(delivery.session, delivery.packet, this.#options, why),
      acknowledgeDead: async (delivery, id) => this.#ack(delivery, id),
      deadTopic: (delivery, message) => message?.topic ?? delivery.packet.topicName,
    };
    this.core = new ConsumerCore({
      options: resolved,
      broker,
      emit: (event, payload) => this.emit(event, payload as MqttConsumerEvents[typeof event]),
      prune: this.#handler.prune,
    });
  }

  /** PUBACK/PUBREC on the delivery's connection; reports it lost when that connection is gone. */
  #ack(delivery: Delivery, id: string | null): void {
    if (acknowledge(delivery.session, delivery.packet)) return;
    const error = connectionLostError(
      this.#options.endpoint.safeUrl,
      `${delivery.session.connection.lostReason?.message ?? 'closed'}; the acknowledgement could not be sent`,
    );
    this.logger.warn('acknowledgement lost; the broker redelivers the message to this session', {
      id,
      error: error.message,
    });
    this.emit('consumer:ack:lost', { id, error });
  }
}

/** A session that ends sooner than this after opening counts as flapping. */
const SHORT_SESSION_MS = 1000;

/** Waits `ms`, or less when `cancelled()` turns true (checked every 100 ms). */
async function pause(ms: number, cancelled: () => boolean): Promise<void> {
  const until = performance.now() + ms;
  while (!cancelled() && performance.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, Math.min(100, until - performance.now())));
  }
}

/** `context.ack()` on a consumer without an inbox. */
function ackNeedsInboxError(messageId: string): ConfigError {
  return new ConfigError(
    'inbox',
    `context.ack() for message ${messageId} needs an inbox: an acknowledgement is enqueued in the inbox ` +
      'transaction; give the MqttConsumer an inbox, or do not acknowledge from this handler',
  );
}
