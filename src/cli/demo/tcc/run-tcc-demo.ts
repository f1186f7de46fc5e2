import { isMailroomError } from '../../../core/errors/mailroom-error.js';
import { Outbox } from '../../../core/outbox.js';
import type { JsonValue, MessageInput } from '../../../core/types.js';
import type { PGliteDatabase } from '../../../stores/pglite/pglite-driver.js';
import { PGliteStore } from '../../../stores/pglite/pglite-store.js';
import type { PostgresTransactionHandle } from '../../../stores/postgres/postgres-driver.js';
import { GlobalTransactionAbortedError, type CoordinatorOptions } from '../../../tcc/coordinator.js';
import { httpParticipant, type HttpParticipant } from '../../../tcc/http-participant.js';
import type { BranchCall, BranchPhase } from '../../../tcc/participant.js';
import { SagaCoordinator } from '../../../tcc/saga-coordinator.js';
import { TccCoordinator } from '../../../tcc/tcc-coordinator.js';
import { auditTccDemo, type TccAudit } from './audit.js';
import { CrashableStore, never } from './crashable-store.js';
import { ORDER_CONFIRMED_TOPIC, TccOrderService } from './order-service.js';
import type { CallFields, ParticipantStats, RequestFault } from './participant-server.js';
import {
  readAccounts,
  readStock,
  startInventory,
  startPayment,
  type ParticipantService,
} from './participants.js';
import { makePlan, type FaultKind, type PlannedOrder, type ServiceName } from './plan.js';

type Tx = PostgresTransactionHandle;

export interface TccDemoOptions {
  /** TCC (try, confirm, cancel) or a saga (action, compensate). */
  mode: 'tcc' | 'saga';
  orders: number;
  seed: number;
  /** Orders placed at once. @default 8 */
  concurrency?: number;
  /** A line about what just happened (a fault, the crash, the takeover). */
  onEvent: (elapsedMs: number, line: string) => void;
  /** Called about every `progressEveryMs` with the counters so far. */
  onProgress?: (progress: TccDemoProgress) => void;
  progressEveryMs?: number;
  /**
   * Internal, not on the command line: the inventory service runs its phases without the
   * barrier, so the test can show that the audit catches a participant that is not idempotent.
   */
  bypassInventoryBarrier?: boolean;
}

export interface TccDemoProgress {
  elapsedMs: number;
  placed: number;
  confirmed: number;
  cancelled: number;
  /** Orders whose coordinator was killed under them: recovery decides them. */
  leftToRecovery: number;
  coordinator: number;
}

/** The coordinator's kill, and what became of the order it was killed in. */
export interface CrashReport {
  /** The order in whose second phase (TCC: between confirms; saga: between steps) it died. */
  order: string;
  /** Orders in progress on the dead coordinator, that one included. */
  inFlight: number;
  /** Where that order's global transaction ended, as coordinator #2's recovery left it. */
  finalState: string;
  /** And the order's status. */
  orderStatus: string;
}

export interface TccDemoReport {
  mode: 'tcc' | 'saga';
  seed: number;
  audit: TccAudit;
  /** Orders planned with each injected fault. */
  planned: Record<Exclude<FaultKind, 'none'>, number>;
  inventory: ParticipantStats;
  payment: ParticipantStats;
  /** Calls the coordinator's side sent a second copy of. */
  duplicatesSent: number;
  crash: CrashReport | null;
  /** Runs that ended in an unexpected error (not a cancel): must be 0. */
  runErrors: string[];
  /** From the first order to the audit. */
  elapsedMs: number;
  /** Set when transactions were still unfinished at the settle deadline. */
  settleTimedOut: boolean;
  settings: { callTimeoutMs: number; slowMs: number; timeoutMs: number; leaseMs: number };
}

/** Deadline of each HTTP call to a participant. */
const CALL_TIMEOUT_MS = 300;
/** How late a slow answer comes: past the call timeout. */
const SLOW_MS = 700;
/** The first phase's deadline; past it, recovery cancels a transaction whose coordinator died. */
const TIMEOUT_MS = 1500;
/** A coordinator's claim on a transaction: the time a killed coordinator's transactions wait. */
const LEASE_MS = 500;
/** Longest wait, after the last order, for every transaction to end. */
const SETTLE_DEADLINE_MS = 30_000;

const FINAL = new Set(['confirmed', 'cancelled', 'succeeded', 'compensated']);

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** One life of the order service's coordinator. */
interface Incarnation {
  n: number;
  store: CrashableStore<Tx>;
  coordinator: TccCoordinator<Tx> | SagaCoordinator<Tx>;
  killed: boolean;
  dead: Promise<void>;
  kill(): void;
  inFlight: number;
}

/**
 * The TCC (saga) demo: an order service with a coordinator, and an inventory and a payment
 * service, each with its own embedded PGlite database, talking HTTP on 127.0.0.1. Orders are
 * placed with faults injected (refusals, slow answers, late tries, duplicate calls, and the
 * coordinator killed in the middle of a transaction's second phase, with a new one recovering);
 * at the end, an audit of stock, money, orders and messages.
 */
export async function runTccDemo(options: TccDemoOptions): Promise<TccDemoReport> {
  const saga = options.mode === 'saga';
  const plan = makePlan(options.seed, options.orders, saga);
  const indexOf = new Map(plan.orders.map((o, i) => [o.id, i]));
  const planById = new Map(plan.orders.map((o) => [o.id, o]));
  let started = performance.now();
  const elapsed = () => performance.now() - started;
  const event = (line: string) => options.onEvent(elapsed(), line);
  const cleanups: Array<() => Promise<void>> = [];

  try {
    const [orderStore, inventoryStore, paymentStore] = await openDatabases(cleanups);

    // Server-side faults: a slow answer, a try held back until its cancel ran.
    const faultSeen = new Set<string>();
    const serverFault =
      (service: ServiceName) =>
      (call: CallFields): RequestFault => {
        const order = planById.get(call.gid);
        if (!order || order.target !== service) return 'run';
        const first = call.phase === 'try' || call.phase === 'action';
        const key = `${call.gid}/${call.branch}/${call.phase}`;
        if (order.fault === 'late-try' && first && !faultSeen.has(key)) {
          faultSeen.add(key);
          return 'hold';
        }
        const slowPhase =
          order.fault === 'slow-try' ? first : order.fault === 'slow-confirm' && call.phase === 'confirm';
        if (slowPhase && !faultSeen.has(key)) {
          faultSeen.add(key);
          return 'slow';
        }
        return 'run';
      };
    const [inventory, payment] = await Promise.all([
      startInventory(
        {
          store: inventoryStore,
          fault: serverFault('inventory'),
          slowMs: SLOW_MS,
          event,
          ...(options.bypassInventoryBarrier ? { bypassBarrier: true } : {}),
        },
        plan.stock,
      ),
      startPayment(
        { store: paymentStore, fault: serverFault('payment'), slowMs: SLOW_MS, event },
        plan.balances,
      ),
    ]);
    cleanups.unshift(
      () => inventory.close(),
      () => payment.close(),
    );
    const orders = new TccOrderService(orderStore);
    await orders.createSchema();

    const endpoints: Record<ServiceName, HttpParticipant> = {
      inventory: httpParticipant({ url: inventory.url, timeoutMs: CALL_TIMEOUT_MS }),
      payment: httpParticipant({ url: payment.url, timeoutMs: CALL_TIMEOUT_MS }),
    };
    const outbox = new Outbox<Tx>({ store: orderStore });

    const incarnations: Incarnation[] = [];
    const newIncarnation = (): Incarnation => {
      const n = incarnations.length + 1;
      const store = new CrashableStore<Tx>(orderStore);
      const coordinatorOptions: CoordinatorOptions<Tx> = {
        store,
        outbox,
        onDecision: orders.onDecision,
        timeoutMs: TIMEOUT_MS,
        leaseMs: LEASE_MS,
        settleWaitMs: 5000,
        recoveryIntervalMs: 100,
        retry: { baseDelayMs: 20, maxDelayMs: 300 },
        owner: `order-service#${n}`,
      };
      const coordinator = saga
        ? new SagaCoordinator<Tx>(coordinatorOptions)
        : new TccCoordinator<Tx>(coordinatorOptions);
      coordinator.start();
      let resolveDead!: () => void;
      const inc: Incarnation = {
        n,
        store,
        coordinator,
        killed: false,
        dead: new Promise<void>((r) => (resolveDead = r)),
        kill() {
          inc.killed = true;
          store.crash();
          resolveDead();
        },
        inFlight: 0,
      };
      incarnations.push(inc);
      return inc;
    };
    let current = newIncarnation();

    // The kill: from plan.crashFrom on, the first order on coordinator #1 to reach the point
    // (TCC: its inventory confirmed, payment's confirm not sent; saga: its first step done,
    // the second not started) takes coordinator #1 down with it.
    let crash: { order: string; inFlight: number } | null = null;
    const inventoryConfirmed = new Map<string, { done: Promise<void>; resolve: () => void }>();
    const gate = (id: string) => {
      let g = inventoryConfirmed.get(id);
      if (!g) {
        let resolve!: () => void;
        const done = new Promise<void>((r) => (resolve = r));
        g = { done, resolve };
        inventoryConfirmed.set(id, g);
      }
      return g;
    };
    const crashCandidate = (inc: Incarnation, order: PlannedOrder) =>
      inc.n === 1 && crash === null && (indexOf.get(order.id) ?? 0) >= plan.crashFrom;
    const killNow = (inc: Incarnation, order: PlannedOrder) => {
      crash = { order: order.id, inFlight: inc.inFlight };
      inc.kill();
      event(
        saga
          ? `fault: coordinator #1 killed after ${order.id}'s first step (inventory) and before its second; ${inc.inFlight} order(s) in progress on it are left to recovery`
          : `fault: coordinator #1 killed between ${order.id}'s confirms (inventory confirmed, payment's confirm not sent); ${inc.inFlight} order(s) in progress on it are left to recovery`,
      );
      current = newIncarnation();
      event(`coordinator #2 started: it places the remaining orders, and its recovery finishes what #1 left`);
    };

    let duplicatesSent = 0;
    /** The participant one order's run on one coordinator uses: the endpoint, with the faults of the caller's side. */
    const participantFor = (service: ServiceName, order: PlannedOrder, inc: Incarnation): HttpParticipant => {
      const inner = endpoints[service];
      const duplicate = order.fault === 'duplicates' && order.target === service;
      const send = async (phase: BranchPhase, c: BranchCall<JsonValue | null>) => {
        // A dead process sends nothing more.
        if (inc.killed) return never<JsonValue | undefined>();
        if (!saga && service === 'payment' && phase === 'confirm' && crashCandidate(inc, order)) {
          await gate(order.id).done;
          if (inc.killed) return never<JsonValue | undefined>();
        }
        const once = () => inner[phase](c) as Promise<JsonValue | undefined>;
        let result: JsonValue | undefined;
        try {
          if (!duplicate) result = await once();
          else if (phase === 'try' || phase === 'action') {
            // Two copies at once, as a retry racing the original would.
            duplicatesSent++;
            const [a, b] = await Promise.allSettled([once(), once()]);
            if (a.status === 'rejected') throw a.reason;
            if (b.status === 'rejected') throw b.reason;
            result = a.value;
          } else {
            result = await once();
            duplicatesSent++;
            await once();
          }
        } finally {
          if (!saga && service === 'inventory' && phase === 'confirm')
            queueMicrotask(() => gate(order.id).resolve());
        }
        if (inc.killed) return never<JsonValue | undefined>();
        const killPoint = saga
          ? service === 'inventory' && phase === 'action'
          : service === 'inventory' && phase === 'confirm';
        if (killPoint && crashCandidate(inc, order)) {
          killNow(inc, order);
          return never<JsonValue | undefined>();
        }
        return result;
      };
      return {
        descriptor: inner.descriptor,
        try: (c) => send('try', c),
        confirm: (c) => send('confirm', c),
        cancel: (c) => send('cancel', c),
        action: (c) => send('action', c),
        compensate: (c) => send('compensate', c),
      };
    };

    const counts = { placed: 0, confirmed: 0, cancelled: 0, leftToRecovery: 0 };
    const runErrors: string[] = [];
    const confirmedMessage = (order: PlannedOrder): MessageInput => ({
      topic: ORDER_CONFIRMED_TOPIC,
      key: order.id,
      payload: {
        orderId: order.id,
        sku: order.sku,
        qty: order.qty,
        account: order.account,
        amount: order.amount,
      },
    });

    /** One order on one coordinator: its outcome, or `killed` when the coordinator died under it. */
    const runOn = async (inc: Incarnation, order: PlannedOrder): Promise<'done' | 'killed'> => {
      const inv = participantFor('inventory', order, inc);
      const pay = participantFor('payment', order, inc);
      const runOptions = { gid: order.id, meta: { orderId: order.id } };
      const run: Promise<unknown> =
        inc.coordinator instanceof TccCoordinator
          ? inc.coordinator.run(async (t) => {
              await t.try('inventory', inv, { sku: order.sku, qty: order.qty });
              await t.try('payment', pay, { account: order.account, amount: order.amount });
              t.publishIfConfirmed(confirmedMessage(order));
            }, runOptions)
          : inc.coordinator.run(async (s) => {
              await s.step('inventory', inv, { sku: order.sku, qty: order.qty });
              await s.step('payment', pay, { account: order.account, amount: order.amount });
              s.publishIfSucceeded(confirmedMessage(order));
            }, runOptions);
      inc.inFlight++;
      const outcome = await Promise.race([
        run.then(
          () => 'confirmed' as const,
          (err: unknown) => {
            if (err instanceof GlobalTransactionAbortedError) return 'cancelled' as const;
            // Placed again after a kill, and the dead coordinator had begun it: recovery decides it.
            if (isMailroomError(err) && err.code === 'tcc_gid_taken') return 'recovery' as const;
            runErrors.push(`${order.id}: ${String(err)}`);
            return 'error' as const;
          },
        ),
        inc.dead.then(() => 'killed' as const),
      ]);
      inc.inFlight--;
      if (outcome === 'killed') return 'killed';
      if (outcome === 'confirmed') counts.confirmed++;
      else if (outcome === 'cancelled') counts.cancelled++;
      else if (outcome === 'recovery') counts.leftToRecovery++;
      return 'done';
    };

    const progressEvery = options.progressEveryMs ?? 1000;
    const progress = () => options.onProgress?.({ elapsedMs: elapsed(), ...counts, coordinator: current.n });
    const timer = setInterval(progress, progressEvery);
    cleanups.unshift(async () => clearInterval(timer));

    started = performance.now();
    let next = 0;
    const worker = async () => {
      for (;;) {
        const order = plan.orders[next++];
        if (order === undefined) return;
        await orders.insertPending(order);
        counts.placed++;
        // The order service, restarted after a kill, places the order again under the same gid:
        // if the dead coordinator had begun it, the gid is taken and recovery decides it.
        while ((await runOn(current, order)) === 'killed') await sleep(10);
      }
    };
    await Promise.all(Array.from({ length: options.concurrency ?? 8 }, worker));
    event(`all ${options.orders} orders placed; waiting for every global transaction to end`);

    // Recovery finishes what the killed coordinator left (and any slow second phase).
    const deadline = Date.now() + SETTLE_DEADLINE_MS;
    let settleTimedOut = false;
    for (;;) {
      const unfinished = await orders.unfinished();
      const held = inventory.server.heldNow + payment.server.heldNow;
      if (unfinished === 0 && held === 0) break;
      if (Date.now() > deadline) {
        settleTimedOut = true;
        const open = (await orders.transactions()).filter((t) => !FINAL.has(t.state));
        const heldKeys = [...inventory.server.heldKeys, ...payment.server.heldKeys];
        event(
          `${unfinished} global transaction(s) still unfinished (${open
            .slice(0, 5)
            .map((t) => `${t.gid} ${t.state}`)
            .join(', ')}) and ${held} request(s) held (${heldKeys.slice(0, 5).join(', ')}) at the deadline`,
        );
        break;
      }
      await sleep(100);
    }
    await Promise.all([inventory.server.flushHeld(), payment.server.flushHeld()]);
    clearInterval(timer);
    progress();

    const [stock, accounts, orderRows, transactions, messages] = await Promise.all([
      readStock(inventoryStore),
      readAccounts(paymentStore),
      orders.orders(),
      orders.transactions(),
      orders.confirmedMessages(),
    ]);
    const audit = auditTccDemo({
      mode: options.mode,
      initialStock: plan.stock,
      initialBalances: plan.balances,
      stock,
      accounts,
      orders: orderRows,
      transactions,
      messages,
    });
    let crashReport: CrashReport | null = null;
    const crashed = crash as { order: string; inFlight: number } | null;
    if (crashed !== null) {
      crashReport = {
        ...crashed,
        finalState: transactions.find((t) => t.gid === crashed.order)?.state ?? 'none',
        orderStatus: orderRows.find((o) => o.id === crashed.order)?.status ?? 'none',
      };
    }
    if (runErrors.length > 0)
      audit.problems.push(`${runErrors.length} run(s) failed unexpectedly: ${runErrors[0]}`);
    if (settleTimedOut) audit.problems.push('the global transactions did not all end within 30 s');
    audit.passed = audit.problems.length === 0;
    const planned = { 'slow-try': 0, 'late-try': 0, duplicates: 0, 'slow-confirm': 0 };
    for (const o of plan.orders) if (o.fault !== 'none') planned[o.fault]++;
    const report: TccDemoReport = {
      mode: options.mode,
      seed: options.seed,
      audit,
      planned,
      inventory: { ...inventory.server.stats },
      payment: { ...payment.server.stats },
      duplicatesSent,
      crash: crashReport,
      runErrors,
      elapsedMs: elapsed(),
      settleTimedOut,
      settings: { callTimeoutMs: CALL_TIMEOUT_MS, slowMs: SLOW_MS, timeoutMs: TIMEOUT_MS, leaseMs: LEASE_MS },
    };
    // The live coordinator stops; the killed one is never closed (a dead process closes nothing).
    await current.coordinator.close();
    return report;
  } finally {
    for (const cleanup of cleanups) await cleanup().catch(() => undefined);
  }
}

export type { ParticipantService };

type Cloneable = PGliteDatabase & { clone?: () => Promise<PGliteDatabase> };

/**
 * Three separate embedded databases, migrated. Starting PGlite (its initdb) takes seconds; a clone
 * of a migrated instance is several times quicker, and as separate: its own memory, its own
 * connection. A PGlite without `clone()` (before 0.3) starts each one.
 */
async function openDatabases(
  cleanups: Array<() => Promise<void>>,
): Promise<[PGliteStore, PGliteStore, PGliteStore]> {
  const first = await PGliteStore.connect();
  cleanups.unshift(() => first.close());
  await first.migrate();
  const stores = [first];
  const db = first.db as Cloneable;
  while (stores.length < 3) {
    if (typeof db.clone === 'function') {
      const copy = await db.clone();
      cleanups.unshift(() => copy.close());
      stores.push(new PGliteStore({ db: copy }));
    } else {
      const store = await PGliteStore.connect();
      cleanups.unshift(() => store.close());
      await store.migrate();
      stores.push(store);
    }
  }
  return stores as [PGliteStore, PGliteStore, PGliteStore];
}
