import { randomUUID } from 'node:crypto';
import type { Outbox } from '../../core/outbox.js';
import type { AckRequest, ReceivedMessage } from '../../core/types.js';
import type { Inbox } from '../../inbox/inbox.js';
import type { PGliteDatabase } from '../../stores/pglite/pglite-driver.js';
import type { PGliteStore } from '../../stores/pglite/pglite-store.js';
import type { PostgresTransactionHandle } from '../../stores/postgres/postgres-driver.js';

/** One order the service tried to place. */
export interface PlacedOrder {
  orderId: string;
  messageId: string;
  customer: string;
  /** `performance.now()` when the transaction's COMMIT returned; absent when it rolled back. */
  committedAt?: number;
}

/** A `payment.requested` message to write with the order, asking for an acknowledgement. */
export interface PaymentToRequest {
  /** Chosen before the transaction, so the payment service can be told about it in advance. */
  id: string;
  ack: AckRequest;
}

/** The payload of a cancellation (`ack.onExpire`): the message that expired, and why. */
interface Cancellation {
  id: string;
  topic: string;
  reason: string;
}

/** Thrown inside the transaction to roll an order back after its message was enqueued. */
class PaymentDeclined extends Error {
  override name = 'PaymentDeclined';
}

/**
 * The demo's business service: an `orders` table and one transaction per order that writes
 * the order row and its `order.created` message together — both or neither. Some orders also
 * ask the payment service, with a `payment.requested` message sent with `ack`, in the same
 * transaction; when one expires unanswered, its cancellation cancels the order, once.
 */
export class OrderService {
  /** Cancellations applied: the id of the message that expired → the order cancelled. */
  readonly cancellations = new Map<string, string>();
  readonly #db: PGliteDatabase;
  readonly #store: PGliteStore;
  readonly #outbox: Outbox;
  readonly #inbox: Inbox<PostgresTransactionHandle>;

  /** @param inbox - the order service's inbox (consumer `orders`), for cancellations. */
  constructor(store: PGliteStore, outbox: Outbox, inbox: Inbox<PostgresTransactionHandle>) {
    this.#db = store.db;
    this.#store = store;
    this.#outbox = outbox;
    this.#inbox = inbox;
  }

  async createSchema(): Promise<void> {
    await this.#db.query(`CREATE TABLE IF NOT EXISTS orders (
  id uuid PRIMARY KEY,
  customer text NOT NULL,
  total_cents integer NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  cancelled_at timestamptz
)`);
  }

  /**
   * Places an order. With `decline`, the payment fails after the order row and the message
   * were written, and the transaction rolls back: neither may ever be seen. With `payment`, the
   * transaction also asks the payment service (keyed by the order: its cancellation carries it).
   */
  async place(
    customer: string,
    totalCents: number,
    decline: boolean,
    payment?: PaymentToRequest,
  ): Promise<PlacedOrder> {
    const orderId = randomUUID();
    let messageId = '';
    try {
      await this.#db.transaction(async (tx) => {
        await tx.query('INSERT INTO orders (id, customer, total_cents) VALUES ($1, $2, $3)', [
          orderId,
          customer,
          totalCents,
        ]);
        messageId = await this.#outbox.enqueue(tx, {
          topic: 'order.created',
          type: 'order.created',
          key: customer,
          payload: { orderId, customer, totalCents },
        });
        if (payment) {
          await this.#outbox.enqueue(tx, {
            id: payment.id,
            topic: 'payment.requested',
            key: orderId,
            payload: { orderId, totalCents },
            ack: payment.ack,
          });
        }
        if (decline) throw new PaymentDeclined(`payment for order ${orderId} declined`);
      });
    } catch (err) {
      if (err instanceof PaymentDeclined) return { orderId, messageId, customer };
      throw err;
    }
    return { orderId, messageId, customer, committedAt: performance.now() };
  }

  /**
   * Handles one copy of a cancellation: cancels the order it names (the expired message's key)
   * through the inbox, so a second copy changes nothing.
   */
  readonly handleCancellation = async (message: ReceivedMessage): Promise<void> => {
    const { id } = message.payload as Cancellation;
    const orderId = message.key;
    if (orderId === null) throw new Error(`cancellation ${message.id} names no order (no key)`);
    const result = await this.#inbox.handle(message, async (tx) => {
      await this.#store
        .executor(tx)
        .execute('UPDATE orders SET cancelled_at = now() WHERE id = $1 AND cancelled_at IS NULL', [orderId]);
    });
    if (result.status === 'processed') this.cancellations.set(id, orderId);
  };

  /** Ids of the cancelled orders. */
  async cancelled(): Promise<string[]> {
    const res = await this.#db.query('SELECT id::text AS id FROM orders WHERE cancelled_at IS NOT NULL');
    return res.rows.map((r) => String(r.id));
  }

  /** Orders in the table: the committed ones. */
  async count(): Promise<number> {
    const res = await this.#db.query('SELECT count(*)::int AS n FROM orders');
    return Number(res.rows[0]?.n ?? 0);
  }
}
