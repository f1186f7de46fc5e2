import { Outbox } from '../../core/outbox.js';
import type { PublishOutcome, Transport } from '../../core/ports.js';
import { Relay } from '../../core/relay.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { OutboxMessage } from '../../core/types.js';
import { Inbox } from '../../inbox/inbox.js';
import { PGliteStore } from '../../stores/pglite/pglite-store.js';
import type { PostgresTransactionHandle } from '../../stores/postgres/postgres-driver.js';
import { auditDemo, type DemoAckAudit, type DemoAudit } from './demo-audit.js';
import { DemoReceiver } from './demo-receiver.js';
import { DemoRouter } from './demo-router.js';
import { DemoHttpTransport } from './demo-transport.js';
import { FreezableStore } from './freezable-store.js';
import { OrderService, type PlacedOrder } from './order-service.js';
import { PaymentFlow } from './payment-flow.js';
import { seededRandom } from './random.js';

export interface DemoOptions {
  durationMs: number;
  /** Orders per second the service tries to place. */
  rate: number;
  seed: number;
  /** A line about what just happened (a fault, a takeover). */
  onEvent: (elapsedMs: number, line: string) => void;
  /** Called about every `progressEveryMs` with the counters so far. */
  onProgress: (progress: DemoProgress) => void;
  progressEveryMs: number;
}

export interface DemoProgress {
  elapsedMs: number;
  phase: 'orders' | 'draining';
  placed: number;
  committed: number;
  rolledBack: number;
  delivered: number;
  duplicatesSuppressed: number;
  receiverErrors: number;
  relay: number;
  /** Payment requests sent with ack (committed), and acknowledgements applied. */
  paymentsRequested: number;
  paymentsAcknowledged: number;
}

export interface DemoReport {
  audit: DemoAudit;
  /** Acknowledged delivery: the payment requests' end states against the plan. */
  acks: DemoAckAudit;
  /** From start to the end of the drain. */
  elapsedMs: number;
  receiverErrors: number;
  deadLetters: number;
  /** Messages the crashed relay had published but never settled, delivered again by its successor. */
  takenOver: number;
  drainMs: number;
  /** Set when the outbox did not empty within the drain deadline. */
  drainTimedOut: boolean;
}

/** How long a relay's claim lasts: the shortest the relay allows, so the takeover is quick. */
const LEASE_MS = 1000;
/** Longest the demo waits, after the last order, for the outbox to empty. */
const DRAIN_TIMEOUT_MS = 30_000;
/** Keys: one customer's messages are delivered one after another, different customers in parallel. */
const CUSTOMERS = 100;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * The demo: an order service on an embedded PGlite database writes each order and its
 * message in one transaction; a relay delivers the messages to an HTTP receiver in this
 * process. On the way: the receiver fails some requests and loses some answers, goes down for
 * a while, the relay crashes with a batch published but not settled (a new relay takes over
 * when the leases expire), and some orders roll back. Some orders also ask a payment service
 * with messages sent with `ack` (see {@link PaymentFlow}); it never answers one of them, which
 * is resent, expires and cancels its order. At the end, an audit.
 */
export async function runDemo(options: DemoOptions): Promise<DemoReport> {
  const random = seededRandom(options.seed);
  // The clock starts with the first order; starting PGlite takes seconds and is not the demo.
  let started = performance.now();
  const elapsed = () => performance.now() - started;
  const event = (line: string) => options.onEvent(elapsed(), line);
  const cleanups: Array<() => Promise<void>> = [];

  const store = await PGliteStore.connect();
  cleanups.push(() => store.close());
  try {
    await store.migrate();
    const outbox = new Outbox({ store });
    const service = new OrderService(
      store,
      outbox,
      new Inbox<PostgresTransactionHandle>({ store, consumer: 'orders' }),
    );
    await service.createSchema();
    const payments = new PaymentFlow({
      store,
      orders: service,
      random: seededRandom(options.seed ^ 0xac4),
      event,
    });
    await payments.start();
    cleanups.push(() => payments.stop());
    // Orders go to the HTTP receiver, the rest to the payment and order services' broker.
    const route = (http: Transport) =>
      new DemoRouter({ http, broker: payments.broker, toHttp: (topic) => topic === 'order.created' });

    const receiver = new DemoReceiver(seededRandom(options.seed ^ 0x5eed), {
      failRate: 0.05,
      lostAnswerRate: 0.03,
      down: false,
    });
    const url = await receiver.start();
    cleanups.push(() => receiver.close());

    const relayOptions = {
      leaseMs: LEASE_MS,
      pollIntervalMs: 250,
      batchSize: 50,
      concurrency: 2,
      shutdownTimeoutMs: 5000,
      retry: { baseDelayMs: 100, maxDelayMs: 1000, maxAttempts: 1000 },
      // Acknowledgement deadlines are checked this often: the withheld request's 1 s shows.
      ackSweepIntervalMs: 200,
    };
    let relayNumber = 1;
    let deadLetters = 0;

    // Relay #1 runs as if in its own process: a store it alone uses (frozen by the crash) and a
    // transport that, once crashed, has lost its connections.
    const store1 = new FreezableStore(store);
    const http1 = new DemoHttpTransport(url);
    const router1 = route(http1);
    const orphaned = new Set<string>();
    let crashRequested = false;
    let crashed = false;
    const crash = async (batch: readonly OutboxMessage[]) => {
      if (crashed) return;
      crashed = true;
      for (const m of batch) orphaned.add(m.id);
      await store1.freeze();
      await http1.close();
      // A dead process runs no timers either: without this, relay #1 would go on probing its
      // closed transport for the rest of the demo (its store calls already never return).
      void relay1.stop();
      event(
        batch.length
          ? `fault: relay #1 crashed after the receiver took ${batch.length} message(s) it never settled; ` +
              `their leases run out in ${LEASE_MS / 1000} s`
          : 'fault: relay #1 crashed',
      );
    };
    const transport1: Transport = {
      name: router1.name,
      start: () => router1.start(),
      close: () => router1.close(),
      probe: () => router1.probe(),
      async publish(messages) {
        if (crashed) {
          for (const m of messages) orphaned.add(m.id);
          const error = new TransportError('http_failed', 'connection reset: the relay process is gone');
          return messages.map((): PublishOutcome => ({ status: 'retry', error }));
        }
        const outcomes = await router1.publish(messages);
        // Crash between the receiver's 2xx and the relay's settle: the worst moment.
        if (crashRequested && outcomes.some((o) => o.status === 'ok')) await crash(messages);
        return outcomes;
      },
    };
    const relay1 = new Relay({ store: store1, transport: transport1, owner: 'relay-1', ...relayOptions });
    relay1.on('relay:message:dead', () => deadLetters++);
    relay1.on('relay:acks:swept', (e) => payments.swept(e));
    await relay1.start();

    let relay2: Relay | undefined;
    const http2 = new DemoHttpTransport(url);
    let takenOver = 0;
    cleanups.push(async () => {
      await relay2?.stop();
      await http2.close();
    });

    // The schedule of faults, as fractions of the run.
    const crashAt = options.durationMs * 0.3;
    const outageAt = options.durationMs * 0.6;
    const outageMs = Math.min(1000, options.durationMs * 0.1);
    let outageState: 'before' | 'down' | 'over' = 'before';

    const orders: PlacedOrder[] = [];
    const progress = (current: DemoProgress['phase']) =>
      options.onProgress({
        elapsedMs: elapsed(),
        phase: current,
        placed: orders.length,
        committed: orders.filter((o) => o.committedAt !== undefined).length,
        rolledBack: orders.filter((o) => o.committedAt === undefined).length,
        delivered: receiver.receipts.size,
        duplicatesSuppressed: receiver.duplicatesSuppressed,
        receiverErrors: receiver.errorsSent,
        relay: relayNumber,
        paymentsRequested: payments.requests.filter((r) => r.committed).length,
        paymentsAcknowledged: payments.acknowledged,
      });
    let phase: DemoProgress['phase'] = 'orders';
    const setupMs = performance.now() - started;
    started = performance.now();
    event(
      `ready in ${(setupMs / 1000).toFixed(1)} s: orders table and outbox migrated, receiver on ${url.host}, relay #1 started`,
    );
    const ticker = setInterval(() => progress(phase), options.progressEveryMs);
    cleanups.push(async () => clearInterval(ticker));

    // The crashed relay's successor, as a process manager would restart it.
    const startRelay2 = async () => {
      await sleep(300);
      relayNumber = 2;
      relay2 = new Relay({ store, transport: route(http2), owner: 'relay-2', ...relayOptions });
      relay2.on('relay:message:dead', () => deadLetters++);
      relay2.on('relay:acks:swept', (e) => payments.swept(e));
      relay2.on('relay:batch:settled', (e) => {
        for (const m of e.messages) if (orphaned.has(m.id)) takenOver++;
      });
      await relay2.start();
      event('relay #2 started; it takes over what relay #1 left leased once the leases expire');
    };
    try {
      while (elapsed() < options.durationMs) {
        const now = elapsed();
        if (!crashRequested && now >= crashAt) {
          crashRequested = true;
          // Crash with the next published batch; if none comes soon, crash anyway.
          setTimeout(() => void crash([]), 1000).unref();
        }
        if (crashed && !relay2) await startRelay2();
        if (outageState === 'before' && now >= outageAt) {
          outageState = 'down';
          receiver.faults.down = true;
          event(`fault: the receiver is down for ${(outageMs / 1000).toFixed(1)} s (503 for every request)`);
        } else if (outageState === 'down' && now >= outageAt + outageMs) {
          outageState = 'over';
          receiver.faults.down = false;
          event('the receiver is back');
        }
        const due = Math.floor((now / 1000) * options.rate);
        if (orders.length < due) {
          const customer = `customer-${String(1 + Math.floor(random() * CUSTOMERS)).padStart(2, '0')}`;
          const totalCents = 500 + Math.floor(random() * 20_000);
          // About one order in ten fails its payment after writing: the transaction rolls back.
          const decline = random() < 0.1;
          const payment = payments.plan(decline);
          const order = await service.place(customer, totalCents, decline, payment);
          orders.push(order);
          payments.placed(order, payment);
          // PGlite answers through promises alone; without a turn of the event loop here, an
          // order service behind schedule would starve the timers and the relay's HTTP.
          await new Promise<void>((r) => setImmediate(r));
        } else {
          await sleep(Math.max(1, Math.min(20, 1000 / options.rate)));
        }
      }
      if (!crashed) await crash([]);
      if (!relay2) await startRelay2();
      receiver.faults.down = false;
      phase = 'draining';
      event('orders stopped; waiting for the outbox to drain');
      const drainStart = performance.now();
      let drainTimedOut = false;
      // Done once every committed message was delivered and settled (or died), no payment
      // request awaits an acknowledgement, and the services handled all the broker took. The
      // services' idleness is read before and after: a batch published and settled in between
      // would otherwise go unseen.
      for (;;) {
        const servicesIdle = payments.idle;
        const stats = await store.stats();
        const { awaiting } = await store.ackCounts();
        if (
          servicesIdle &&
          stats.backlog === 0 &&
          awaiting === 0 &&
          (relay2?.inFlightBatches ?? 0) === 0 &&
          payments.idle
        ) {
          break;
        }
        if (performance.now() - drainStart > DRAIN_TIMEOUT_MS) {
          drainTimedOut = true;
          event(
            `after ${DRAIN_TIMEOUT_MS / 1000} s the outbox still holds ${stats.backlog} message(s) and ` +
              `${awaiting} payment request(s) await an acknowledgement`,
          );
          break;
        }
        await sleep(50);
      }
      const drainMs = performance.now() - drainStart;
      clearInterval(ticker);
      progress(phase);
      await relay2?.stop();

      const audit = auditDemo({
        orders,
        receipts: receiver.receipts,
        duplicatesSuppressed: receiver.duplicatesSuppressed,
        orderRows: await service.count(),
      });
      return {
        audit,
        acks: await payments.audit(store),
        elapsedMs: elapsed(),
        receiverErrors: receiver.errorsSent,
        deadLetters,
        takenOver,
        drainMs,
        drainTimedOut,
      };
    } finally {
      clearInterval(ticker);
    }
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  }
}
