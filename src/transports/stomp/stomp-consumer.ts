import { toOutboxMessages } from '../../core/broker-transaction.js';
import { ConfigError } from '../../core/errors/config-error.js';
import { isPermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import type { MessageInput, OutboxMessage, ReceivedMessage } from '../../core/types.js';
import { CoreDrivenConsumer } from '../../consumer/consumer-base.js';
import { ConsumerCore, handlerRunner, toError, type ConsumerBroker } from '../../consumer/consumer-core.js';
import type { StompConsumerEvents } from './stomp-consumer-events.js';
import {
  resolveStompConsumerOptions,
  type ResolvedStompConsumerOptions,
  type StompConsumerOptions,
} from './stomp-consumer-options.js';
import {
  openConsumerSession,
  ReceiveTransaction,
  sendAck,
  sendDeadLetter,
  type ConsumerSession,
} from './stomp-consumer-session.js';
import { connectionLostError, messageTooLargeError } from './stomp-errors.js';
import type { StompFrame } from './stomp-frame.js';
import { destinationFor } from './stomp-options.js';
import { decodeMessage, sendHeaders } from './stomp-wire.js';

/** A MESSAGE and the session it came on: only that connection can acknowledge it. */
interface Delivery {
  readonly session: ConsumerSession;
  readonly frame: StompFrame;
}

type Started = { destination: string };
type DeadLetterTo = { deadLetterDestination: string };

/**
 * Consumes a STOMP destination of messages sent by Mailroom's relay (or any publisher that sets a
 * UUID `mailroom-id` header) and runs a handler for each, with the shape every Mailroom consumer
 * has ({@link MessageConsumer}): once per message id with an `inbox`, acknowledged (ACK,
 * client-individual) only after the inbox transaction committed; retried in the process with
 * backoff, then sent to the dead-letter destination (with a RECEIPT) and only then acknowledged;
 * serial per key; reconnecting; draining on stop.
 *
 * With `transacted: true` (and no inbox), `context.publish(messages)` sends in a STOMP transaction
 * that also acknowledges the input, committed once the handler returned: a crash never loses the
 * input and never leaves its outputs at the broker with the input still to be handled again.
 *
 * `start()` connects, logs in and subscribes; it throws a `TransportError` (`unreachable`,
 * `not_stomp`, `auth_failed`, `vhost_refused`, `subscribe_failed`). Later losses are not thrown:
 * the consumer reconnects.
 *
 * @example
 * ```ts
 * const consumer = new StompConsumer({
 *   url: 'stomp://guest:guest@127.0.0.1:61613',
 *   destination: '/queue/order.created',
 *   transacted: true,
 *   handler: async (message, _tx, context) => {
 *     await context.publish!([{ topic: 'invoice.requested', key: message.key, payload: message.payload }]);
 *   },
 * });
 * await consumer.start();
 * // …
 * await consumer.stop();
 * ```
 */
export class StompConsumer<Tx = undefined> extends CoreDrivenConsumer<StompConsumerEvents> {
  /** The destination consumed. */
  readonly destination: string;
  /** Where failed and undecodable messages go. */
  readonly deadLetterDestination: string;
  readonly #options: Readonly<ResolvedStompConsumerOptions>;
  readonly #handler: ReturnType<typeof handlerRunner>;
  protected readonly core: ConsumerCore<ConsumerSession, Delivery, Started, DeadLetterTo>;

  constructor(options: StompConsumerOptions<Tx>) {
    const resolved = resolveStompConsumerOptions(options);
    super(resolved.logger);
    this.#options = Object.freeze(resolved);
    this.destination = resolved.destination;
    this.deadLetterDestination = resolved.deadLetterDestination;
    this.#handler = handlerRunner(options, ackNeedsInboxError, 'stomp');
    const { safeUrl } = resolved.endpoint;
    const broker: ConsumerBroker<ConsumerSession, Delivery, Started, DeadLetterTo> = {
      source: { destination: this.destination },
      deadLetterTo: { deadLetterDestination: this.deadLetterDestination },
      safeUrl,
      open: () =>
        openConsumerSession(this.#options, (session, frame) => this.core.deliver({ session, frame })),
      isOpen: (session) => session.connection.open,
      ended: (session) => session.connection.ended,
      watch: (session, lost) => {
        const onEnd = () => lost(session.connection.lostReason ?? new Error('connection ended'));
        if (session.connection.ended.aborted) onEnd();
        else session.connection.ended.addEventListener('abort', onEnd, { once: true });
      },
      close: (session, why) =>
        session.connection.close(
          connectionLostError(safeUrl, why === 'stopped' ? 'consumer stopped' : 'stopped while starting'),
        ),
      // The connection has ended already.
      discard: () => {},
      stoppedWhileStarting: () => connectionLostError(safeUrl, 'the consumer was stopped while starting'),
      // No UNSUBSCRIBE before draining: a broker may refuse the ACKs of handlers still running
      // once the subscription is gone. New deliveries are ignored from then on and return to the
      // queue when the connection closes.
      countsLateDeliveries: true,
      decode: (delivery) => decodeMessage(delivery.frame),
      run: async (delivery, message) => {
        try {
          const status = await this.#runOnce(delivery, message);
          return {
            status,
            acknowledge: async () => {
              // Transacted: the ACK was part of the committed transaction.
              if (!this.#options.transacted) this.#ack(delivery, message.id);
              return 'acked';
            },
          };
        } catch (err) {
          // The connection ended under the handler (its transaction or ACK could not complete):
          // not a failure of the message; the broker redelivers it.
          if (!delivery.session.connection.open && !isPermanentDeliveryError(toError(err)))
            return 'abandoned';
          throw err;
        }
      },
      exhausted: (failures) => new Error(`failed ${failures} times`),
      sendDeadLetter: (delivery, why) => sendDeadLetter(delivery.session, delivery.frame, this.#options, why),
      acknowledgeDead: async (delivery, id) => this.#ack(delivery, id),
      deadTopic: (delivery, message) =>
        message?.topic ?? delivery.frame.headers['destination'] ?? this.destination,
    };
    this.core = new ConsumerCore({
      options: resolved,
      broker,
      emit: (event, payload) => this.emit(event, payload as StompConsumerEvents[typeof event]),
      prune: this.#handler.prune,
    });
  }

  /** One handler run: plain, through the inbox, or in a broker transaction (transacted receive). */
  async #runOnce(delivery: Delivery, message: ReceivedMessage): Promise<'processed' | 'duplicate'> {
    if (!this.#options.transacted) return this.#handler.run(message);
    const tx = new ReceiveTransaction(delivery.session, this.#options);
    await tx.begin();
    try {
      await this.#handler.run(message, async (messages) => {
        for (const frame of this.#outputFrames(messages)) await tx.send(frame.headers, frame.body);
      });
    } catch (err) {
      tx.abort();
      throw err;
    }
    await tx.ack(delivery.frame);
    await tx.commit();
    return 'processed';
  }

  /** The SEND frames of a handler's outputs; throws for invalid ones before anything is sent. */
  #outputFrames(messages: ReadonlyArray<OutboxMessage | MessageInput>) {
    const { publishDestination, maxMessageBytes } = this.#options;
    return toOutboxMessages(messages).map((m) => {
      if (m.payload.length > maxMessageBytes) throw messageTooLargeError(m, maxMessageBytes);
      return { headers: sendHeaders(m, destinationFor(publishDestination, m.topic), true), body: m.payload };
    });
  }

  /** ACK on the delivery's connection; reports it lost when that connection is gone. */
  #ack(delivery: Delivery, id: string | null): void {
    sendAck(delivery.session, delivery.frame).catch((err: unknown) => {
      const error = connectionLostError(
        this.#options.endpoint.safeUrl,
        err instanceof Error ? err.message : String(err),
        err,
      );
      this.logger.warn('acknowledgement lost; the broker redelivers the message', {
        id,
        error: error.message,
      });
      this.emit('consumer:ack:lost', { id, error });
    });
  }
}

/** `context.ack()` on a consumer without an inbox. */
function ackNeedsInboxError(messageId: string): ConfigError {
  return new ConfigError(
    'inbox',
    `context.ack() for message ${messageId} needs an inbox: an acknowledgement is enqueued in the inbox ` +
      'transaction; give the StompConsumer an inbox, or do not acknowledge from this handler',
  );
}
