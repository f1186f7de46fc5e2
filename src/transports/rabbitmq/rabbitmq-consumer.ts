import { isMailroomError } from '../../core/errors/mailroom-error.js';
import { isPermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import type { OutboxMessage } from '../../core/types.js';
import type { AmqpDelivery } from './amqp-consumer-client.js';
import { CoreDrivenConsumer } from '../../consumer/consumer-base.js';
import {
  ConsumerCore,
  handlerRunner,
  toError,
  within,
  type ConsumerBroker,
  type HandlerRun,
} from '../../consumer/consumer-core.js';
import { ackNeedsInboxError, connectionLostError, consumerStoppedError } from './rabbitmq-consumer-errors.js';
import type { RabbitMqConsumerEvents } from './rabbitmq-consumer-events.js';
import {
  resolveRabbitMqConsumerOptions,
  type RabbitMqConsumerOptions,
  type ResolvedRabbitMqConsumerOptions,
} from './rabbitmq-consumer-options.js';
import {
  closeConsumerSession,
  openConsumerSession,
  type ConsumerSession,
  type SessionHooks,
} from './rabbitmq-consumer-session.js';
import { brokerDeliveryCount, decodeDelivery } from './rabbitmq-decode.js';
import { RunOutputs } from './rabbitmq-transacted-receive.js';
import { outputReturnedError } from './rabbitmq-transaction-errors.js';

/** A delivery and the session (channel) it came on: only that channel can acknowledge it. */
interface Delivery {
  readonly session: ConsumerSession;
  readonly raw: AmqpDelivery;
}

/** How long stop() waits for the broker to confirm the consumer's cancellation. */
const CANCEL_TIMEOUT_MS = 2000;

/**
 * Consumes a RabbitMQ queue of messages sent by Mailroom's relay (or any publisher that sets a
 * UUID `message-id`) and runs a handler for each: once per message id with an `inbox`, the
 * broker's acknowledgement sent only after the inbox transaction committed.
 *
 * - **Copies**: a message the inbox has processed already is acknowledged without running the
 *   handler, so redeliveries and resends cost nothing and change nothing.
 * - **Order**: with `serialByKey` (the default), two messages of one key never run at once and
 *   run in the order they arrived, also while one waits for a retry.
 * - **Failures**: a throwing handler is retried in the process with exponential backoff and full
 *   jitter, then the message is published to the dead-letter queue (confirmed) and only then
 *   acknowledged. A message that cannot be decoded goes there at once.
 * - **Connections**: a lost connection is reopened with capped backoff; handlers running may
 *   finish, but their acknowledgements are lost, and the broker redelivers those messages (the
 *   inbox drops the copies).
 * - **Transacted receive** (`transacted: true`): the handler's `context.publish` outputs and the
 *   acknowledgement are committed in one AMQP transaction after the handler succeeded, so a
 *   crash never loses the input nor leaves its outputs at the broker twice
 *   (docs/mq-transactions.md).
 *
 * `start()` connects, declares the exchange, queue, dead-letter queue and bindings (unless
 * `declare` is false) and starts consuming; it throws a `TransportError` (`unreachable`,
 * `auth_failed`, `vhost_refused`, `not_amqp`, `declare_failed`, `consume_failed`) naming the
 * redacted URL and what to do, or a `ConfigError` when amqplib is missing. `stop()` cancels the
 * consumer (`basic.cancel`) before it waits for the handlers running.
 *
 * @example
 * ```ts
 * import { Inbox } from 'mailroom';
 * import { RabbitMqConsumer } from 'mailroom/rabbitmq';
 *
 * const consumer = new RabbitMqConsumer({
 *   url: 'amqp://guest:guest@127.0.0.1:5672',
 *   queue: 'billing.orders',
 *   bindings: ['order.*'],
 *   inbox: new Inbox({ store, consumer: 'billing' }),
 *   handler: async (message, tx) => {
 *     await tx.query('INSERT INTO invoices (order_id) VALUES ($1)', [message.key]);
 *   },
 *   concurrency: 4,
 * });
 * await consumer.start();
 * // …
 * await consumer.stop();
 * ```
 */
export class RabbitMqConsumer<Tx = undefined> extends CoreDrivenConsumer<RabbitMqConsumerEvents> {
  /** The queue consumed. */
  readonly queue: string;
  /** Where failed and undecodable messages go. */
  readonly deadLetterQueue: string;
  // Private: the resolved URL holds the password, and public fields end up in logs.
  readonly #options: Readonly<ResolvedRabbitMqConsumerOptions>;
  protected readonly core: ConsumerCore<
    ConsumerSession,
    Delivery,
    { queue: string },
    { deadLetterQueue: string }
  >;

  constructor(options: RabbitMqConsumerOptions<Tx>) {
    const resolved = resolveRabbitMqConsumerOptions(options);
    super(resolved.logger);
    this.#options = Object.freeze(resolved);
    this.queue = resolved.queue;
    this.deadLetterQueue = resolved.deadLetterQueue;
    const handler = handlerRunner(options, ackNeedsInboxError, 'rabbitmq');
    const hooks: SessionHooks = {
      onDelivery: (session, raw) => this.core.deliver({ session, raw }),
      onLost: (session, error) => this.core.lost(session, error),
    };
    const safeUrl = resolved.safeUrl;
    const broker: ConsumerBroker<ConsumerSession, Delivery, { queue: string }, { deadLetterQueue: string }> =
      {
        source: { queue: this.queue },
        deadLetterTo: { deadLetterQueue: this.deadLetterQueue },
        safeUrl,
        open: (cancelled) => openConsumerSession(this.#options, hooks, cancelled),
        isOpen: (session) => session.open,
        ended: (session) => session.ended.signal,
        // Later losses are reported by the session's hooks.
        watch: (session, lost) => {
          if (!session.open) lost(connectionLostError(safeUrl, undefined));
        },
        close: (session) => closeConsumerSession(session),
        // When only a channel died, the connection goes too.
        discard: (session) => void closeConsumerSession(session),
        stoppedWhileStarting: () => consumerStoppedError(safeUrl, this.queue),
        beforeDrain: async (session) => {
          // No new deliveries; those already sent stay unacknowledged and return to the queue
          // when the channel closes.
          if (session.consumerTag !== undefined) {
            await within(session.channel.cancel(session.consumerTag), CANCEL_TIMEOUT_MS);
          }
        },
        countsLateDeliveries: false,
        decode: (delivery) => {
          const decoded = decodeDelivery(delivery.raw);
          return decoded.ok ? { ...decoded, failedBefore: brokerDeliveryCount(delivery.raw) } : decoded;
        },
        run: async (delivery, message): Promise<HandlerRun> => {
          // Transacted receive: a fresh set of outputs per run; a run that throws drops its own.
          const outputs = this.#options.transacted ? new RunOutputs(message.id) : undefined;
          let status;
          try {
            status = await handler.run(message, outputs && (async (messages) => outputs.add(messages)));
          } finally {
            outputs?.seal();
          }
          return {
            status,
            acknowledge: async () => {
              // A duplicate's handler did not run, so it has no outputs to send.
              const acked = await this.#acknowledge(
                delivery,
                message.id,
                status === 'processed' ? (outputs?.messages ?? []) : [],
              );
              if (acked !== 'lost') return acked;
              // Transacted: the commit failed, so nothing of the run happened. Plain: the effects
              // committed and only the (reported) ack is lost; the copy redelivered is a duplicate.
              return this.#options.transacted ? 'uncommitted' : 'acked';
            },
          };
        },
        exhausted: (failures) =>
          new Error(`delivered ${failures} times without being acknowledged (x-delivery-count)`),
        sendDeadLetter: (delivery, why) =>
          delivery.session.deadLetters.publish(delivery.raw, {
            ...why,
            queue: this.queue,
            deadAt: new Date(),
          }),
        acknowledgeDead: async (delivery, id) => {
          await this.#acknowledge(delivery, id, []);
        },
        deadTopic: (delivery) => delivery.raw.fields.routingKey,
      };
    this.core = new ConsumerCore({
      options: resolved,
      broker,
      emit: (event, payload) => this.emit(event, payload as RabbitMqConsumerEvents[typeof event]),
      prune: handler.prune,
    });
  }

  /**
   * Acknowledges the delivery: a plain `basic.ack`, or with transacted receive, `basic.ack` and
   * `outputs` in a transaction on the delivery's channel, committed. `'lost'` when it did not
   * happen (reported as `consumer:ack:lost`; the broker redelivers); a `PermanentDeliveryError`
   * when an output cannot be encoded (nothing of the run was committed).
   */
  async #acknowledge(
    delivery: Delivery,
    id: string | null,
    outputs: readonly OutboxMessage[],
  ): Promise<'acked' | 'lost' | Error> {
    const transactions = delivery.session.transactions;
    if (transactions === undefined) return this.#ack(delivery, id) ? 'acked' : 'lost';
    let returned;
    try {
      returned = await transactions.commit(delivery.raw, outputs);
    } catch (err) {
      const error = toError(err);
      if (isPermanentDeliveryError(error)) return error;
      // The broker refused what was published (its channel exception): count it as a failed
      // attempt, so a message whose outputs can never be committed ends as a dead letter rather
      // than being redelivered forever.
      if (id !== null && isMailroomError(error) && error.code === 'transaction_refused') {
        this.core.failed(id, error);
      }
      this.logger.warn('transaction commit failed; the broker redelivers the message', {
        id,
        error: error.message,
      });
      this.emit('consumer:ack:lost', { id, error });
      return 'lost';
    }
    for (const { output, returned: r } of returned) {
      const error = outputReturnedError(id ?? '', output, this.#options.exchange, r);
      this.logger.error('output returned as unroutable; the rest of the transaction was committed', {
        id,
        output: output.id,
        topic: output.topic,
        error: error.message,
      });
      this.emit('consumer:output:returned', { id: id ?? '', output, error });
    }
    return 'acked';
  }

  /**
   * Sends basic.ack on the delivery's channel; false (and reported lost) when that channel is
   * gone.
   */
  #ack(delivery: Delivery, id: string | null): boolean {
    const { session, raw } = delivery;
    let error: Error | undefined;
    if (session.open) {
      try {
        session.channel.ack(raw);
        return true;
      } catch (err) {
        error = toError(err);
      }
    }
    error = connectionLostError(this.#options.safeUrl, error);
    this.logger.warn('acknowledgement lost; the broker redelivers the message', { id, error: error.message });
    this.emit('consumer:ack:lost', { id, error });
    return false;
  }
}
