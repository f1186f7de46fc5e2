import { ConfigError } from '../core/errors/config-error.js';
import { InvalidMessageError } from '../core/errors/invalid-message-error.js';
import { custom, hasMethods, optionsSchema } from '../core/options-schema.js';
import type { AckOutcome, AckPort, OutboxStore } from '../core/ports.js';
import type { AckReceipt, JsonValue, ReceivedMessage } from '../core/types.js';
import { isUuid } from '../core/uuid.js';

/** Options of {@link AckReceiver}. */
export interface AckReceiverOptions {
  /** The sender's store: the outbox whose messages the acknowledgements are for. */
  store: OutboxStore;
}

const ackReceiverSchema = optionsSchema<AckReceiverOptions>()('AckReceiver', {
  store: custom('an outbox store (PostgresStore, PGliteStore…)', hasMethods<OutboxStore>('executor'), {
    required: true,
  }),
});

/**
 * The sender's end of acknowledged delivery: applies the acknowledgements receivers send back
 * (messages of type `mailroom.ack` on the `ack.replyTo` topic, 'mailroom.ack' by default) to the
 * outbox, marking each message `acknowledged`. Applying one twice changes nothing, so it needs no
 * inbox: hand {@link AckReceiver.handler} to a consumer.
 *
 * @example
 * ```ts
 * const acks = new AckReceiver({ store });
 * const consumer = new RabbitMqConsumer({ url, queue: 'orders.acks', bindings: ['mailroom.ack'], handler: acks.handler });
 * await consumer.start();
 * ```
 */
export class AckReceiver {
  readonly #store: AckPort;

  constructor(options: AckReceiverOptions) {
    const { store } = ackReceiverSchema.resolve(options);
    if (typeof store.applyAck !== 'function') {
      throw new ConfigError(
        'store',
        `the ${store.name} store cannot take acknowledgements (no applyAck()); use PostgresStore or PGliteStore`,
      );
    }
    this.#store = store as unknown as AckPort;
  }

  /** Applies the acknowledgement a received ack message carries; returns what it did. */
  async receive(message: Pick<ReceivedMessage, 'payload' | 'id'>): Promise<AckOutcome> {
    return this.#store.applyAck(parseAckReceipt(message.payload, message.id));
  }

  /** {@link receive} as a consumer handler: `(message) => Promise<void>`. */
  readonly handler = async (message: Pick<ReceivedMessage, 'payload' | 'id'>): Promise<void> => {
    await this.receive(message);
  };
}

/**
 * Checks an acknowledgement's payload: `{ id: uuid, consumer: string, result?: JSON }`. Throws an
 * {@link InvalidMessageError} naming the field.
 */
export function parseAckReceipt(payload: unknown, from = 'the acknowledgement'): AckReceipt {
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
    throw new InvalidMessageError(
      'payload',
      `${from} is not an acknowledgement: expected a JSON object { id, consumer, result? }`,
    );
  }
  const { id, consumer, result } = payload as Record<string, unknown>;
  if (typeof id !== 'string' || !isUuid(id)) {
    throw new InvalidMessageError(
      'id',
      `${from}: id must be the UUID of the message acknowledged, got ${JSON.stringify(id ?? null)}`,
    );
  }
  if (typeof consumer !== 'string' || consumer.length === 0 || Buffer.byteLength(consumer) > 255) {
    throw new InvalidMessageError(
      'consumer',
      `${from}: consumer must name the receiving service in 1 to 255 bytes, got ${JSON.stringify(consumer ?? null)}`,
    );
  }
  return { id, consumer, ...(result === undefined ? {} : { result: result as JsonValue }) };
}
