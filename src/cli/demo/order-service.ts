import { randomUUID } from 'node:crypto';
import type { Outbox } from '../../core/outbox.js';
import type { PGliteDatabase } from '../../stores/pglite/pglite-driver.js';

/** One order the service tried to place. */
export interface PlacedOrder {
  orderId: string;
  messageId: string;
  customer: string;
  /** `performance.now()` when the transaction's COMMIT returned; absent when it rolled back. */
  committedAt?: number;
}

/** Thrown inside the transaction to roll an order back after its message was enqueued. */
class PaymentDeclined extends Error {
  override name = 'PaymentDeclined';
}

/**
 * The demo's business service: an `orders` table and one transaction per order that writes
 * the order row and its `order.created` message together — both or neither.
 */
export class OrderService {
  readonly #db: PGliteDatabase;
  readonly #outbox: Outbox;

  constructor(db: PGliteDatabase, outbox: Outbox) {
    this.#db = db;
    this.#outbox = outbox;
  }

  async createSchema(): Promise<void> {
    await this.#db.query(`CREATE TABLE IF NOT EXISTS orders (
  id uuid PRIMARY KEY,
  customer text NOT NULL,
  total_cents integer NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
)`);
  }

  /**
   * Places an order. With `decline`, the payment fails after the order row and the message
   * were written, and the transaction rolls back: neither may ever be seen.
   */
  async place(customer: string, totalCents: number, decline: boolean): Promise<PlacedOrder> {
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
        if (decline) throw new PaymentDeclined(`payment for order ${orderId} declined`);
      });
    } catch (err) {
      if (err instanceof PaymentDeclined) return { orderId, messageId, customer };
      throw err;
    }
    return { orderId, messageId, customer, committedAt: performance.now() };
  }

  /** Orders in the table: the committed ones. */
  async count(): Promise<number> {
    const res = await this.#db.query('SELECT count(*)::int AS n FROM orders');
    return Number(res.rows[0]?.n ?? 0);
  }
}
