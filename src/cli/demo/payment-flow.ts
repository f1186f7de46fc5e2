import type { AckOutcome } from '../../core/ports.js';
import type { AckRequest } from '../../core/types.js';
import { uuidv7 } from '../../core/uuid.js';
import { AckReceiver } from '../../inbox/ack-receiver.js';
import { ACK_MESSAGE_TYPE } from '../../inbox/inbox.js';
import type { PGliteStore } from '../../stores/pglite/pglite-store.js';
import { MemoryTransport } from '../../transports/memory/memory-transport.js';
import { auditAcks, type DemoAckAudit, type PaymentRequestRecord } from './demo-audit.js';
import { MemoryConsumer } from './memory-consumer.js';
import type { OrderService, PaymentToRequest, PlacedOrder } from './order-service.js';
import { PaymentService } from './payment-service.js';

/** Where cancellations of expired payment requests go (`ack.onExpire`). */
export const CANCELLATION_TOPIC = 'demo.cancelled';
/** Where acknowledgements come back (the Outbox's default `ackTopic`). */
const ACK_TOPIC = 'mailroom.ack';

/**
 * The payment service has this long to acknowledge a request, and gets one resend: far more
 * than it needs, so a request that expires is one it never answered, not a slow machine.
 */
const PAYMENT_ACK: AckRequest = { timeoutMs: 30_000, maxResends: 1, onExpire: CANCELLATION_TOPIC };
/**
 * The request the payment service never answers asks for an answer within a second, so that
 * its resend (after 1 s) and its expiry (1 s later) happen within a short demo.
 */
const WITHHELD_ACK: AckRequest = { timeoutMs: 1000, maxResends: 1, onExpire: CANCELLATION_TOPIC };
/** Share of orders that ask the payment service for an acknowledged payment. */
const PAYMENT_SHARE = 0.1;

/**
 * Acknowledged delivery in the demo. Some orders send a `payment.requested` message with
 * `ack`; the relay delivers it to an in-process broker (a {@link MemoryTransport}), the payment
 * service takes it through its inbox and acknowledges it from the same transaction; the
 * acknowledgement goes back through the outbox and the broker to an {@link AckReceiver}, which
 * marks the request acknowledged. The first payment request of the run is never answered: the
 * relay resends it, then expires it and enqueues its cancellation, which the order service
 * applies through its own inbox.
 */
export class PaymentFlow {
  /** The in-process broker: every relay of the demo publishes to it. */
  readonly broker = new MemoryTransport();
  readonly orders: OrderService;
  readonly payments: PaymentService;
  readonly requests: PaymentRequestRecord[] = [];
  /** Acknowledgements applied (the request was awaiting, being resent, or not settled yet). */
  acknowledged = 0;
  /** Copies of a message whose handler failed every try. */
  failures = 0;
  readonly #consumer: MemoryConsumer;
  readonly #random: () => number;
  readonly #event: (line: string) => void;
  #withheldPlanned = false;

  /**
   * @param orders - applies the cancellations (its `orders` table must exist).
   * @param random - decides which orders ask for a payment: a stream of its own, so the
   *   orders' faults are the same for a seed as without it.
   */
  constructor(options: {
    store: PGliteStore;
    orders: OrderService;
    random: () => number;
    event: (line: string) => void;
  }) {
    const { store } = options;
    this.#random = options.random;
    this.#event = options.event;
    this.orders = options.orders;
    this.payments = new PaymentService(store);
    const acks = new AckReceiver({ store });
    this.#consumer = new MemoryConsumer({
      broker: this.broker,
      handlers: new Map([
        ['payment.requested', this.payments.handle],
        [
          ACK_TOPIC,
          async (m) => {
            if (m.type !== ACK_MESSAGE_TYPE) return;
            this.#counted(await acks.receive(m));
          },
        ],
        [
          CANCELLATION_TOPIC,
          async (m) => {
            const before = this.orders.cancellations.size;
            await this.orders.handleCancellation(m);
            if (this.orders.cancellations.size > before) {
              this.#event(`the order service got the cancellation and cancelled order ${m.key ?? '?'}`);
            }
          },
        ],
      ]),
      onFailure: (m, err) => {
        this.failures++;
        this.#event(
          `a ${m.topic} message failed every try: ${err instanceof Error ? err.message : String(err)}`,
        );
      },
    });
  }

  async start(): Promise<void> {
    await this.payments.createSchema();
    await this.broker.start();
    this.#consumer.start();
  }

  /**
   * Whether the next order asks for a payment, and with which id and `ack`. The first order
   * that will commit asks, and is the request never answered; after it, about one in ten.
   */
  plan(decline: boolean): PaymentToRequest | undefined {
    const withhold = !this.#withheldPlanned && !decline;
    // Drawn for every order, so the orders' own faults follow the seed whatever this picks.
    const ask = this.#random() < PAYMENT_SHARE;
    if (!withhold && !ask) return undefined;
    const id = uuidv7();
    if (withhold) {
      this.#withheldPlanned = true;
      // Told before the message exists: a relay can deliver it before place() returns.
      this.payments.neverAnswer.add(id);
    }
    return { id, ack: withhold ? WITHHELD_ACK : PAYMENT_ACK };
  }

  /** Records how the order carrying `payment` ended (committed or rolled back). */
  placed(order: PlacedOrder, payment: PaymentToRequest | undefined): void {
    if (!payment) return;
    this.requests.push({
      id: payment.id,
      orderId: order.orderId,
      committed: order.committedAt !== undefined,
      withheld: this.payments.neverAnswer.has(payment.id),
    });
  }

  /** A relay's acknowledgement sweep resent or expired requests. */
  swept(e: { resent: number; expired: number }): void {
    if (e.resent > 0) {
      this.#event(`ack: ${e.resent} payment request(s) not acknowledged in time, resent with the same id`);
    }
    if (e.expired > 0) {
      this.#event(
        `ack: ${e.expired} payment request(s) expired after their resend; cancellation enqueued to ${CANCELLATION_TOPIC}`,
      );
    }
  }

  /** True when the services handled every message the broker took. */
  get idle(): boolean {
    return this.#consumer.idle;
  }

  async stop(): Promise<void> {
    await this.#consumer.stop();
    await this.broker.close();
  }

  /** The end state of every committed request, checked against the plan. */
  async audit(store: PGliteStore): Promise<DemoAckAudit> {
    const committed = this.requests.filter((r) => r.committed).map((r) => r.id);
    const statuses = await store.status(committed);
    return auditAcks({
      requests: this.requests,
      states: new Map(statuses.map((s) => [s.id, s])),
      processed: this.payments.processed,
      cancellations: this.orders.cancellations,
      cancelledOrders: await this.orders.cancelled(),
      paymentRows: await this.payments.count(),
    });
  }

  #counted(outcome: AckOutcome): void {
    if (outcome === 'acknowledged' || outcome === 'early') this.acknowledged++;
  }
}
