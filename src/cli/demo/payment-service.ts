import { randomUUID } from 'node:crypto';
import type { ReceivedMessage } from '../../core/types.js';
import { Inbox } from '../../inbox/inbox.js';
import type { PGliteStore } from '../../stores/pglite/pglite-store.js';
import type { PostgresTransactionHandle } from '../../stores/postgres/postgres-driver.js';

/** What the order service asks the payment service: the payload of `payment.requested`. */
export interface PaymentRequest {
  orderId: string;
  totalCents: number;
}

/**
 * The demo's payment service, on the receiving end of acknowledged delivery: it takes each
 * `payment.requested` message through its inbox (consumer `payments`), writes the payment row
 * and the acknowledgement in one transaction, so a copy of a request (a resend, a redelivery)
 * is recognised and never charges twice. It shares the demo's PGlite database with the order
 * service, as two services may share a server; their records are apart by consumer name.
 *
 * One request it never answers (`neverAnswer`), as a service that lost it would: the order
 * service must see it resent, then expired, and get its cancellation.
 */
export class PaymentService {
  /** Ids of requests this service drops, every copy, without a word. */
  readonly neverAnswer = new Set<string>();
  /** Requests processed (the inbox recorded them), by message id. */
  readonly processed = new Set<string>();
  /** Copies the inbox recognised as processed already. */
  duplicates = 0;
  /** Copies of never-answered requests dropped. */
  ignored = 0;
  readonly #store: PGliteStore;
  readonly #inbox: Inbox<PostgresTransactionHandle>;

  constructor(store: PGliteStore) {
    this.#store = store;
    this.#inbox = new Inbox<PostgresTransactionHandle>({ store, consumer: 'payments', autoAck: false });
  }

  async createSchema(): Promise<void> {
    await this.#store.db.query(`CREATE TABLE IF NOT EXISTS payments (
  id uuid PRIMARY KEY,
  request_id uuid NOT NULL,
  order_id uuid NOT NULL,
  amount_cents integer NOT NULL
)`);
  }

  /** Handles one copy of a `payment.requested` message. */
  readonly handle = async (message: ReceivedMessage): Promise<void> => {
    if (this.neverAnswer.has(message.id)) {
      this.ignored++;
      return;
    }
    const { orderId, totalCents } = message.payload as PaymentRequest;
    const result = await this.#inbox.handle(message, async (tx, context) => {
      const paymentId = randomUUID();
      await this.#store
        .executor(tx)
        .execute('INSERT INTO payments (id, request_id, order_id, amount_cents) VALUES ($1, $2, $3, $4)', [
          paymentId,
          message.id,
          orderId,
          totalCents,
        ]);
      // Sent back through the outbox, in this transaction: only if the payment row commits.
      context.ack({ paymentId, authorized: true });
    });
    if (result.status === 'processed') this.processed.add(message.id);
    else this.duplicates++;
  };

  /** Payment rows written. */
  async count(): Promise<number> {
    const res = await this.#store.db.query('SELECT count(*)::int AS n FROM payments');
    return Number(res.rows[0]?.n ?? 0);
  }
}
