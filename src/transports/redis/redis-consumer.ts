import { ConfigError } from '../../core/errors/config-error.js';
import { CoreDrivenConsumer } from '../../consumer/consumer-base.js';
import { ConsumerCore, handlerRunner, toError, type ConsumerBroker } from '../../consumer/consumer-core.js';
import type { RedisConsumerEvents, RedisConsumerSource } from './redis-consumer-events.js';
import {
  resolveRedisConsumerOptions,
  type RedisConsumerOptions,
  type ResolvedRedisConsumerOptions,
} from './redis-consumer-options.js';
import { RedisConsumerSession, type EntryDelivery } from './redis-consumer-session.js';
import { connectionLostError } from './redis-errors.js';
import { decodeStreamEntry } from './redis-wire.js';

/** An entry and the session it was read on. */
interface Delivery extends EntryDelivery {
  readonly session: RedisConsumerSession;
}

type DeadLetterTo = { deadLetterStream: string };

/**
 * Consumes the Redis stream the relay's `RedisStreamsTransport` writes a topic to, in a consumer
 * group, and runs a handler for each entry, with the shape every Mailroom consumer has
 * ({@link MessageConsumer}): once per message id with an `inbox`, acknowledged (`XACK`) only after
 * the inbox transaction committed; retried in the process with backoff, then added to the
 * dead-letter stream together with the `XACK` of the original (one `MULTI`/`EXEC`); serial per
 * key; reconnecting; draining on stop.
 *
 * Every instance of a service uses the same `group`: the group gets each entry once and its
 * consumers share them out. An instance reads its own pending entries first whenever it
 * (re)connects, and takes over entries other instances left pending longer than `claimIdleMs`
 * (`XAUTOCLAIM`): a crashed instance's entries are handled by the others.
 *
 * `start()` connects, creates the group when missing (`XGROUP CREATE … MKSTREAM`, from new entries
 * on unless `startFrom: 'beginning'`) and starts reading; it throws a `TransportError`
 * (`unreachable`, `auth_failed`, `group_failed`, `dead_letter_stream_invalid`) or a `ConfigError`
 * when ioredis is missing. Later losses are not thrown: the consumer reconnects.
 *
 * @example
 * ```ts
 * const consumer = new RedisConsumer({
 *   url: 'redis://127.0.0.1:6379',
 *   topic: 'order.created',
 *   group: 'billing',
 *   inbox,
 *   handler: async (message, tx) => {
 *     await tx.query('INSERT INTO invoices (order_id) VALUES ($1)', [message.payload.orderId]);
 *   },
 * });
 * await consumer.start();
 * // …
 * await consumer.stop();
 * ```
 */
export class RedisConsumer<Tx = undefined> extends CoreDrivenConsumer<RedisConsumerEvents> {
  /** The stream consumed. */
  readonly stream: string;
  /** The consumer group. */
  readonly group: string;
  /** This instance's name in the group. */
  readonly consumerName: string;
  /** Where failed and undecodable entries go. */
  readonly deadLetterStream: string;
  readonly #options: Readonly<ResolvedRedisConsumerOptions>;
  readonly #handler: ReturnType<typeof handlerRunner>;
  /** The next session opened is the first since start(), not a reconnect's. */
  #fresh = false;
  protected readonly core: ConsumerCore<RedisConsumerSession, Delivery, RedisConsumerSource, DeadLetterTo>;

  constructor(options: RedisConsumerOptions<Tx>) {
    const resolved = resolveRedisConsumerOptions(options);
    super(resolved.logger);
    this.#options = Object.freeze(resolved);
    this.stream = resolved.streamKey;
    this.group = resolved.group;
    this.consumerName = resolved.consumerName;
    this.deadLetterStream = resolved.deadLetterStream;
    this.#handler = handlerRunner(options, ackNeedsInboxError, 'redis');
    const { safeUrl } = resolved.endpoint;
    const hooks = {
      deliver: (session: RedisConsumerSession, delivery: EntryDelivery) =>
        this.core.deliver({ ...delivery, session }),
      claimed: (ids: string[]) => {
        this.logger.info('took over entries left pending by another consumer', {
          stream: this.stream,
          group: this.group,
          count: ids.length,
        });
        this.emit('consumer:entries:claimed', { ids });
      },
      warn: (message: string, error: Error) =>
        this.logger.warn(message, { stream: this.stream, group: this.group, error: error.message }),
    };
    const broker: ConsumerBroker<RedisConsumerSession, Delivery, RedisConsumerSource, DeadLetterTo> = {
      source: { stream: this.stream, group: this.group, consumerName: this.consumerName },
      deadLetterTo: { deadLetterStream: this.deadLetterStream },
      safeUrl,
      open: (cancelled) => {
        const fresh = this.#fresh;
        this.#fresh = false;
        return RedisConsumerSession.open(this.#options, hooks, cancelled, fresh);
      },
      isOpen: (session) => session.open,
      ended: (session) => session.ended,
      watch: (session, lost) => {
        const onEnd = () => lost(session.lostReason ?? connectionLostError(safeUrl, 'connection ended'));
        if (session.ended.aborted) onEnd();
        else session.ended.addEventListener('abort', onEnd, { once: true });
      },
      close: (session) => session.close(),
      discard: (session) =>
        session.destroy(session.lostReason ?? connectionLostError(safeUrl, 'session replaced')),
      stoppedWhileStarting: () => connectionLostError(safeUrl, 'the consumer was stopped while starting'),
      beforeDrain: (session) => session.stopReading(),
      // Entries read while stopping stay pending under this consumer's name: the next start under
      // the same name reads them first, other instances take them over after claimIdleMs.
      countsLateDeliveries: true,
      decode: (delivery) => {
        const decoded = decodeStreamEntry(delivery.entry.fields, this.stream);
        if (!decoded.ok) return decoded;
        return delivery.failedBefore === undefined
          ? decoded
          : { ...decoded, failedBefore: delivery.failedBefore };
      },
      run: async (delivery, message) => {
        const status = await this.#handler.run(message);
        return {
          status,
          acknowledge: async () => {
            await this.#ack(delivery, message.id);
            return 'acked';
          },
        };
      },
      exhausted: (failures) =>
        new Error(
          `delivered ${failures + 1} times by the consumer group's count (XPENDING) and never acknowledged`,
        ),
      sendDeadLetter: (delivery, why) => delivery.session.deadLetter(delivery.entry, why),
      // The XACK was part of the dead letter's MULTI/EXEC.
      acknowledgeDead: async (delivery) => delivery.session.release(delivery.entry.id),
      deadTopic: (_delivery, message) => message?.topic ?? this.#options.topic,
    };
    this.core = new ConsumerCore({
      options: resolved,
      broker,
      emit: (event, payload) => this.emit(event, payload as RedisConsumerEvents[typeof event]),
      prune: this.#handler.prune,
    });
  }

  /**
   * Connects, creates the consumer group when missing and starts reading (this consumer's own
   * pending entries first, then new ones). See {@link CoreDrivenConsumer.start}.
   */
  override start(): Promise<void> {
    if (!this.running) this.#fresh = true;
    return super.start();
  }

  /** XACK on the delivery's session; reports it lost when that fails (the entry stays pending). */
  async #ack(delivery: Delivery, id: string): Promise<void> {
    try {
      await delivery.session.ack(delivery.entry.id);
    } catch (err) {
      const error = connectionLostError(this.#options.endpoint.safeUrl, toError(err).message, err);
      this.logger.warn('acknowledgement lost; the entry stays pending and is delivered again', {
        id,
        entryId: delivery.entry.id,
        error: error.message,
      });
      this.emit('consumer:ack:lost', { id, error });
    }
  }
}

/** `context.ack()` on a consumer without an inbox. */
function ackNeedsInboxError(messageId: string): ConfigError {
  return new ConfigError(
    'inbox',
    `context.ack() for message ${messageId} needs an inbox: an acknowledgement is enqueued in the inbox ` +
      'transaction; give the RedisConsumer an inbox, or do not acknowledge from this handler',
  );
}
