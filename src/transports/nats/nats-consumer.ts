import { ConfigError } from '../../core/errors/config-error.js';
import { TransportError } from '../../core/errors/transport-error.js';
import { CoreDrivenConsumer } from '../../consumer/consumer-base.js';
import { ConsumerCore, handlerRunner, type ConsumerBroker } from '../../consumer/consumer-core.js';
import type { NatsConsumerEvents } from './nats-consumer-events.js';
import {
  resolveNatsConsumerOptions,
  sessionOptions,
  type NatsConsumerOptions,
  type ResolvedNatsConsumerOptions,
} from './nats-consumer-options.js';
import {
  acknowledge,
  openConsumerSession,
  sendDeadLetter,
  type ConsumerSession,
  type Delivery,
} from './nats-consumer-session.js';
import { describe } from './nats-errors.js';
import { NatsSessions } from './nats-session.js';
import { decodeNatsMessage, readMessageHeaders } from './nats-wire.js';

type Started = { subject: string; durable: string };
type DeadLetterTo = { deadLetterSubject: string };

/**
 * Consumes a NATS JetStream subject of messages published by Mailroom's relay (`NatsTransport`,
 * or any publisher that sets a UUID `mailroom-id` or `Nats-Msg-Id` header) through a durable pull
 * consumer shared by every instance of the service (`group`), and runs a handler for each, with
 * the shape every Mailroom consumer has ({@link MessageConsumer}): once per message id with an
 * `inbox`, acknowledged (a double ack, confirmed by the server) only after the inbox transaction
 * committed; retried in the process with backoff while the message is kept in progress, then
 * published to the dead-letter subject (confirmed by its PubAck) and only then acknowledged;
 * serial per key; reconnecting; draining on stop.
 *
 * `start()` connects, finds the stream that captures the subject, checks that one captures the
 * dead-letter subject, creates or updates the durable consumer (explicit acks, `ackWaitMs`) and
 * starts pulling up to `prefetch` messages. It throws a `TransportError` (`unreachable`,
 * `auth_failed`, `not_nats`, `jetstream_disabled`, `stream_not_found`,
 * `dead_letter_stream_missing`, `consumer_setup_failed`). Later losses are not thrown: the
 * consumer reconnects, and the server redelivers what was not acknowledged after `ackWaitMs`.
 *
 * @example
 * ```ts
 * const consumer = new NatsConsumer({
 *   url: 'nats://127.0.0.1:4222',
 *   group: 'billing',
 *   subjectPrefix: 'events',
 *   topic: 'order.created',
 *   inbox: new Inbox({ store, consumer: 'billing' }),
 *   handler: async (message, tx) => {
 *     await tx.query('INSERT INTO invoices (order_id) VALUES ($1)', [message.key]);
 *   },
 * });
 * await consumer.start();
 * // …
 * await consumer.stop();
 * ```
 */
export class NatsConsumer<Tx = undefined> extends CoreDrivenConsumer<NatsConsumerEvents> {
  /** The subject consumed: the durable consumer's filter subject. */
  readonly subject: string;
  /** The durable consumer's name, shared by the instances of the group. */
  readonly durable: string;
  /** Where failed and undecodable messages go. */
  readonly deadLetterSubject: string;
  readonly #options: Readonly<ResolvedNatsConsumerOptions>;
  readonly #sessions: NatsSessions;
  #stream: string | undefined;
  /** The last session opened: a lost one's waiting messages are returned by the next. */
  #last: ConsumerSession | undefined;
  protected readonly core: ConsumerCore<ConsumerSession, Delivery, Started, DeadLetterTo>;

  constructor(options: NatsConsumerOptions<Tx>) {
    const resolved = resolveNatsConsumerOptions(options);
    super(resolved.logger);
    this.#options = Object.freeze(resolved);
    this.subject = resolved.subject;
    this.durable = resolved.durable;
    this.deadLetterSubject = resolved.deadLetterSubject;
    this.#sessions = new NatsSessions(Object.freeze(sessionOptions(resolved)));
    const handler = handlerRunner(options, ackNeedsInboxError, 'nats');
    const { safeUrl } = resolved.endpoint;
    const stoppedWhileStarting = () =>
      new TransportError(
        'consumer_stopped',
        `the NatsConsumer of ${JSON.stringify(this.subject)} at ${safeUrl} was stopped while starting`,
        { details: { url: safeUrl, subject: this.subject } },
      );
    const broker: ConsumerBroker<ConsumerSession, Delivery, Started, DeadLetterTo> = {
      source: { subject: this.subject, durable: this.durable },
      deadLetterTo: { deadLetterSubject: this.deadLetterSubject },
      safeUrl,
      open: async (cancelled) => {
        const session = await openConsumerSession(
          this.#options,
          this.#sessions,
          cancelled,
          stoppedWhileStarting,
        );
        this.#stream = session.stream;
        const lost = this.#last !== undefined && !this.#last.open ? this.#last : undefined;
        this.#last = session;
        if (lost) await session.returnWaiting(lost.takeWaiting());
        session.startPulling((delivery) => this.core.deliver(delivery));
        return session;
      },
      isOpen: (session) => session.open,
      ended: (session) => session.ended,
      watch: (session, lost) => {
        const onEnd = () => lost(session.lostReason);
        if (session.ended.aborted) onEnd();
        else session.ended.addEventListener('abort', onEnd, { once: true });
      },
      close: (session) => session.close(),
      discard: (session) => void session.close(),
      stoppedWhileStarting,
      beforeDrain: (session) => session.stopPulling(),
      // Messages arriving once stopping began are returned (nak) by the session itself.
      countsLateDeliveries: false,
      decode: (delivery) => {
        try {
          const message = decodeNatsMessage(delivery.msg);
          // Deliveries of it that ended without an ack, in any instance.
          return { ok: true, message, failedBefore: Math.max(0, delivery.msg.info.deliveryCount - 1) };
        } catch (err) {
          return {
            ok: false,
            id: readMessageHeaders(delivery.msg.headers).id,
            error: err instanceof Error ? err : new Error(String(err)),
          };
        }
      },
      run: async (delivery, message) => {
        delivery.running = true;
        let status: 'processed' | 'duplicate';
        try {
          status = await handler.run(message);
        } finally {
          delivery.running = false;
        }
        return {
          status,
          acknowledge: async () => {
            await this.#ack(delivery, message.id);
            return 'acked';
          },
        };
      },
      exhausted: (failures) =>
        new Error(`delivered ${failures} times without being acknowledged (JetStream's delivery count)`),
      sendDeadLetter: (delivery, why) => sendDeadLetter(delivery, this.#options, why),
      acknowledgeDead: (delivery, id) => this.#ack(delivery, id),
      deadTopic: (delivery, message) =>
        message?.topic ?? readMessageHeaders(delivery.msg.headers).topic ?? delivery.msg.subject,
    };
    this.core = new ConsumerCore({
      options: resolved,
      broker,
      emit: (event, payload) => this.emit(event, payload as NatsConsumerEvents[typeof event]),
      prune: handler.prune,
    });
  }

  /** The stream consumed from, once start() found it. */
  get stream(): string | undefined {
    return this.#stream;
  }

  /**
   * Double ack: the server confirms it. Without the confirmation (connection gone, no answer
   * within `ackTimeoutMs`) the message may come again after ack_wait; reported as lost.
   */
  async #ack(delivery: Delivery, id: string | null): Promise<void> {
    const failed = await acknowledge(delivery);
    if (failed === undefined) return;
    const { safeUrl } = this.#options.endpoint;
    const error = new TransportError(
      'ack_lost',
      `the NATS server at ${safeUrl} did not confirm the acknowledgement of message ${id ?? '(no id)'}: ` +
        `${describe(failed)}; it is redelivered after ackWaitMs (${this.#options.ackWaitMs} ms), and an inbox ` +
        'finds that copy a duplicate',
      { cause: failed, details: { url: safeUrl, id } },
    );
    this.logger.warn('acknowledgement lost; the server redelivers the message', { id, error: error.message });
    this.emit('consumer:ack:lost', { id, error });
  }
}

/** `context.ack()` on a consumer without an inbox. */
function ackNeedsInboxError(messageId: string): ConfigError {
  return new ConfigError(
    'inbox',
    `context.ack() for message ${messageId} needs an inbox: an acknowledgement is enqueued in the inbox ` +
      'transaction; give the NatsConsumer an inbox, or do not acknowledge from this handler',
  );
}
