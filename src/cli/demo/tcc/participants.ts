import type { PGliteStore } from '../../../stores/pglite/pglite-store.js';
import type { PostgresTransactionHandle } from '../../../stores/postgres/postgres-driver.js';
import { TccBarrier, type BarrierOutcome, type BranchRef } from '../../../tcc/barrier.js';
import type { TccHandlerOptions } from '../../../tcc/http-handler.js';
import { BranchRefusedError, type BranchCall, type BranchPhase } from '../../../tcc/participant.js';
import { ParticipantServer, type CallFields, type RequestFault } from './participant-server.js';

type Tx = PostgresTransactionHandle;

/** One SKU's counters in the inventory service's database. */
export interface StockRow {
  sku: string;
  stock: number;
  reserved: number;
  sold: number;
}

/** One account's counters in the payment service's database, in cents. */
export interface AccountRow {
  id: string;
  balance: number;
  frozen: number;
  debited: number;
}

/**
 * A barrier that is not one: runs every phase, every time, with no row. Only for the test that
 * shows the audit catches a participant without a barrier (duplicates applied twice, a cancel
 * without its try releasing what was never reserved, a late try reserving for good).
 */
class BypassedBarrier extends TccBarrier<Tx> {
  override async run<T>(
    _ref: BranchRef,
    _phase: BranchPhase,
    fn: (tx: Tx) => Promise<T>,
  ): Promise<BarrierOutcome<T>> {
    return this.store.transaction(async (tx) => ({ status: 'done' as const, value: await fn(tx) }));
  }
}

/** What every participant service of the demo has: its own database, a barrier, an endpoint. */
export interface ParticipantService {
  readonly name: string;
  readonly store: PGliteStore;
  readonly server: ParticipantServer<Tx>;
  /** The endpoint, for `httpParticipant({ url })`. */
  readonly url: string;
  close(): Promise<void>;
}

interface ServiceInput {
  /** Its own embedded database, migrated (the barrier table comes with the migrations). */
  store: PGliteStore;
  /** Request faults, by call. */
  fault: (call: CallFields) => RequestFault;
  slowMs: number;
  event: (line: string) => void;
  /** Internal: run without the barrier (the broken participant of the audit's own test). */
  bypassBarrier?: boolean;
}

async function startService(
  name: string,
  input: ServiceInput,
  phases: Pick<TccHandlerOptions<Tx>, 'try' | 'confirm' | 'cancel' | 'action' | 'compensate'>,
): Promise<ParticipantService> {
  const barrier = input.bypassBarrier
    ? new BypassedBarrier({ store: input.store })
    : new TccBarrier<Tx>({ store: input.store });
  const server = new ParticipantServer<Tx>({
    name,
    options: { barrier, ...phases },
    fault: input.fault,
    slowMs: input.slowMs,
    event: input.event,
  });
  const url = await server.start();
  return {
    name,
    store: input.store,
    server,
    url,
    close: () => server.close(),
  };
}

function field<T>(call: BranchCall, key: string): T {
  return (call.input as Record<string, unknown> | null)?.[key] as T;
}

async function sql(store: PGliteStore, tx: Tx, text: string, params: unknown[]): Promise<number> {
  return (await store.executor(tx).execute(text, params)).rows.length;
}

/**
 * The inventory service: per SKU, units in `stock`, `reserved` by a try and `sold` by its
 * confirm; a cancel puts them back. As a saga step, the action sells at once and the
 * compensation puts the units back. A try (action) for more than is in stock is refused.
 */
export async function startInventory(
  input: ServiceInput,
  initial: ReadonlyMap<string, number>,
): Promise<ParticipantService> {
  const { store } = input;
  await store.db.exec(`CREATE TABLE stock (
    sku text PRIMARY KEY,
    stock integer NOT NULL,
    reserved integer NOT NULL DEFAULT 0,
    sold integer NOT NULL DEFAULT 0)`);
  for (const [sku, n] of initial)
    await store.db.query('INSERT INTO stock (sku, stock) VALUES ($1, $2)', [sku, n]);
  const take = async (tx: Tx, call: BranchCall, into: 'reserved' | 'sold') => {
    const sku = field<string>(call, 'sku');
    const qty = field<number>(call, 'qty');
    const n = await sql(
      store,
      tx,
      `UPDATE stock SET stock = stock - $2, ${into} = ${into} + $2 WHERE sku = $1 AND stock >= $2 RETURNING 1 AS taken`,
      [sku, qty],
    );
    if (n === 0) throw new BranchRefusedError(`${sku}: fewer than ${qty} left in stock`);
  };
  const move = (text: string) => async (tx: Tx, call: BranchCall) => {
    await sql(store, tx, text, [field<string>(call, 'sku'), field<number>(call, 'qty')]);
  };
  return startService('inventory', input, {
    try: (tx, call) => take(tx, call, 'reserved'),
    confirm: move('UPDATE stock SET reserved = reserved - $2, sold = sold + $2 WHERE sku = $1'),
    cancel: move('UPDATE stock SET reserved = reserved - $2, stock = stock + $2 WHERE sku = $1'),
    action: (tx, call) => take(tx, call, 'sold'),
    compensate: move('UPDATE stock SET sold = sold - $2, stock = stock + $2 WHERE sku = $1'),
  });
}

/**
 * The payment service: per account, a `balance`, what a try `frozen`, and what its confirm
 * `debited`; a cancel unfreezes. As a saga step, the action charges at once and the
 * compensation refunds. A try (charge) over the balance is refused: insufficient funds.
 */
export async function startPayment(
  input: ServiceInput,
  initial: ReadonlyMap<string, number>,
): Promise<ParticipantService> {
  const { store } = input;
  await store.db.exec(`CREATE TABLE account (
    id text PRIMARY KEY,
    balance bigint NOT NULL,
    frozen bigint NOT NULL DEFAULT 0,
    debited bigint NOT NULL DEFAULT 0)`);
  for (const [id, cents] of initial) {
    await store.db.query('INSERT INTO account (id, balance) VALUES ($1, $2)', [id, cents]);
  }
  const take = async (tx: Tx, call: BranchCall, into: 'frozen' | 'debited') => {
    const account = field<string>(call, 'account');
    const amount = field<number>(call, 'amount');
    const n = await sql(
      store,
      tx,
      `UPDATE account SET balance = balance - $2, ${into} = ${into} + $2 WHERE id = $1 AND balance >= $2 RETURNING 1 AS taken`,
      [account, amount],
    );
    if (n === 0) throw new BranchRefusedError(`insufficient funds on ${account} for ${cents(amount)}`);
  };
  const move = (text: string) => async (tx: Tx, call: BranchCall) => {
    await sql(store, tx, text, [field<string>(call, 'account'), field<number>(call, 'amount')]);
  };
  return startService('payment', input, {
    try: (tx, call) => take(tx, call, 'frozen'),
    confirm: move('UPDATE account SET frozen = frozen - $2, debited = debited + $2 WHERE id = $1'),
    cancel: move('UPDATE account SET frozen = frozen - $2, balance = balance + $2 WHERE id = $1'),
    action: (tx, call) => take(tx, call, 'debited'),
    compensate: move('UPDATE account SET debited = debited - $2, balance = balance + $2 WHERE id = $1'),
  });
}

export async function readStock(store: PGliteStore): Promise<StockRow[]> {
  const res = await store.db.query('SELECT sku, stock, reserved, sold FROM stock ORDER BY sku');
  return res.rows.map((r) => ({
    sku: String(r.sku),
    stock: Number(r.stock),
    reserved: Number(r.reserved),
    sold: Number(r.sold),
  }));
}

export async function readAccounts(store: PGliteStore): Promise<AccountRow[]> {
  const res = await store.db.query('SELECT id, balance, frozen, debited FROM account ORDER BY id');
  return res.rows.map((r) => ({
    id: String(r.id),
    balance: Number(r.balance),
    frozen: Number(r.frozen),
    debited: Number(r.debited),
  }));
}

/** 1234 → "12.34". */
export function cents(n: number): string {
  return `${n < 0 ? '-' : ''}${Math.floor(Math.abs(n) / 100)}.${String(Math.abs(n) % 100).padStart(2, '0')}`;
}
