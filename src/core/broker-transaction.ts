/**
 * Broker transactions (issue 15): the port every transport with a transaction implements, and
 * the helpers their implementations share. docs/mq-transactions.md says what each broker
 * promises.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import { InvalidMessageError } from './errors/invalid-message-error.js';
import { encodeMessage } from './message.js';
import type { PublishOptions, Transport } from './ports.js';
import type { MessageInput, OutboxMessage } from './types.js';

/**
 * A transaction on the broker (`TransactionalTransport.begin()`): what is published in it
 * reaches consumers at {@link commit}, all of it, or none of it after {@link rollback} or a
 * connection lost before the commit. Used by one caller at a time.
 *
 * @example
 * ```ts
 * const tx = await transport.begin();
 * try {
 *   await tx.publish([{ topic: 'order.created', key: orderId, payload: order }]);
 *   await tx.publish([{ topic: 'stock.reserved', key: orderId, payload: items }]);
 *   await tx.commit();
 * } catch (err) {
 *   await tx.rollback();
 *   throw err;
 * }
 * ```
 */
export interface BrokerTransaction {
  /**
   * Sends messages in the transaction: the broker holds them, consumers do not see them before
   * the commit. Messages given as {@link MessageInput} are validated and encoded as `enqueue`
   * does (an `InvalidMessageError` before anything is sent). Rejects with a `TransportError` when
   * the broker cannot take them; the transaction is then unusable: roll it back.
   */
  publish(messages: ReadonlyArray<OutboxMessage | MessageInput>): Promise<void>;
  /**
   * Makes everything published in the transaction visible together, as far as the broker
   * promises it. Resolves once the broker confirmed the commit. Rejects otherwise, and how says
   * what the relay does with an atomic group (docs/design.md, "Atomic groups"):
   * - a `TransportError`: the broker could not be used (connection lost, blocked, no answer);
   *   code `commit_unknown` when the connection was lost after the commit was sent (the broker
   *   may or may not have committed). The relay takes it as an outage: no attempt spent.
   * - a `PermanentDeliveryError`: a message can never be delivered as it is (unroutable,
   *   refused for its content). The relay dead-letters the group.
   * - any other Error: this try failed (a refusal the broker may not repeat). The relay retries
   *   the group with backoff.
   */
  commit(): Promise<void>;
  /**
   * Discards everything published in the transaction. Resolves also when the connection is gone
   * (a broker rolls back an uncommitted transaction when its connection closes). Idempotent.
   */
  rollback(): Promise<void>;
}

/** A {@link Transport} with broker transactions. */
export interface TransactionalTransport extends Transport {
  /** Always true: the relay and the API check it (`isTransactionalTransport`). */
  readonly transactions: true;
  /** Starts a transaction on a connection (or channel) of its own. */
  begin(options?: PublishOptions): Promise<BrokerTransaction>;
  /**
   * Runs `fn` in a new transaction: commits when it resolves (and returns its value), rolls back
   * and rethrows when it throws.
   */
  transaction<T>(fn: (tx: BrokerTransaction) => Promise<T>, options?: PublishOptions): Promise<T>;
}

/** True for a transport with broker transactions. */
export function isTransactionalTransport(transport: Transport): transport is TransactionalTransport {
  const t = transport as Partial<TransactionalTransport>;
  return t.transactions === true && typeof t.begin === 'function' && typeof t.transaction === 'function';
}

/**
 * What a transaction's `publish` was given, as the messages a transport publishes: stored
 * messages pass as they are; inputs are validated and encoded as `enqueue` does (a new UUIDv7
 * id unless one is given, `attempts` 1, `createdAt` now). Throws an `InvalidMessageError`, also
 * for `delayMs`, `ack` and `callback`, which only the outbox can honour.
 */
export function toOutboxMessages(messages: ReadonlyArray<OutboxMessage | MessageInput>): OutboxMessage[] {
  return messages.map((m) => {
    if (isOutboxMessage(m)) return m;
    const encoded = encodeMessage(m);
    if (encoded.delayMs > 0 || encoded.delivery !== null) {
      const field = encoded.delayMs > 0 ? 'delayMs' : m.ack !== undefined ? 'ack' : 'callback';
      throw new InvalidMessageError(
        field,
        `message ${encoded.id} has ${field}, which only the outbox can honour; a broker transaction publishes at once. ` +
          'Enqueue it through the outbox instead',
      );
    }
    return {
      seq: '0',
      id: encoded.id,
      topic: encoded.topic,
      key: encoded.key,
      type: encoded.type,
      payload: encoded.payload,
      contentType: encoded.contentType,
      headers: encoded.headers,
      createdAt: new Date(),
      attempts: 1,
    };
  });
}

function isOutboxMessage(m: OutboxMessage | MessageInput): m is OutboxMessage {
  const o = m as Partial<OutboxMessage>;
  return typeof o.seq === 'string' && Buffer.isBuffer(o.payload) && o.createdAt instanceof Date;
}

/**
 * The usual `transaction(fn)` on top of `begin()`: commit on return, rollback (its own failure
 * ignored) and rethrow on throw. Transports implement `transaction` with it.
 */
export async function runInTransaction<T>(
  begin: () => Promise<BrokerTransaction>,
  fn: (tx: BrokerTransaction) => Promise<T>,
): Promise<T> {
  const tx = await begin();
  let value: T;
  try {
    value = await fn(tx);
  } catch (err) {
    await tx.rollback().catch(() => undefined);
    throw err;
  }
  await tx.commit();
  return value;
}

/** A transaction id for brokers that name transactions (STOMP's `transaction` header). */
export function newTransactionId(): string {
  return `mailroom-tx-${randomUUID()}`;
}
