import { seededRandom } from '../random.js';

/** Which of the two participants a fault hits. */
export type ServiceName = 'inventory' | 'payment';

/**
 * The fault one order meets (besides the refusals that come from the data: a poor account, a
 * sold-out SKU):
 * - `slow-try`: the participant does the try (action) and answers after the coordinator's
 *   call timeout: the outcome is unknown to the coordinator, which cancels (compensates);
 * - `late-try`: the try (action) request is held back until its cancel (compensate) has run,
 *   then delivered: the barrier must refuse it;
 * - `duplicates`: the coordinator's side sends every call of that participant twice;
 * - `slow-confirm`: the confirm runs and its answer comes after the timeout: the coordinator
 *   retries it (TCC only).
 */
export type FaultKind = 'none' | 'slow-try' | 'late-try' | 'duplicates' | 'slow-confirm';

export interface PlannedOrder {
  /** Also the global transaction's id. */
  id: string;
  sku: string;
  qty: number;
  account: string;
  amount: number;
  fault: FaultKind;
  /** The participant the fault is on (unused for `none`). */
  target: ServiceName;
}

export interface DemoPlan {
  /** Initial stock per SKU. */
  stock: Map<string, number>;
  /** Price of one unit per SKU, in cents. */
  prices: Map<string, number>;
  /** Initial balance per account, in cents. */
  balances: Map<string, number>;
  orders: PlannedOrder[];
  /** From this order on, the first one to reach its second phase on coordinator #1 kills it. */
  crashFrom: number;
}

const SKUS = ['apple', 'bread', 'cheese', 'dates', 'eggs', 'flour'];
const ACCOUNTS = 12;

/**
 * The demo's data and faults, all drawn from `seed` before anything runs, so a run can be
 * replayed. Sized so that some orders sell a SKU out and some accounts run dry: about a third
 * of the accounts start poor.
 */
export function makePlan(seed: number, orders: number, saga: boolean): DemoPlan {
  const random = seededRandom(seed);
  const int = (min: number, max: number) => min + Math.floor(random() * (max - min + 1));
  const stock = new Map<string, number>();
  const prices = new Map<string, number>();
  for (const sku of SKUS) {
    // About 2 units per order are asked for, spread over the SKUs: the stock covers ~85% of it.
    stock.set(sku, Math.max(5, Math.round((orders * 2 * 0.85 * int(70, 130)) / 100 / SKUS.length)));
    prices.set(sku, int(2, 40) * 25);
  }
  const balances = new Map<string, number>();
  for (let a = 1; a <= ACCOUNTS; a++) {
    const poor = a % 3 === 0;
    balances.set(`acct-${String(a).padStart(2, '0')}`, poor ? int(1, 6) * 500 : int(40, 120) * 1000);
  }
  const kinds: FaultKind[] = saga
    ? ['slow-try', 'late-try', 'duplicates']
    : ['slow-try', 'late-try', 'duplicates', 'slow-confirm'];
  const list: PlannedOrder[] = [];
  for (let i = 0; i < orders; i++) {
    const sku = SKUS[int(0, SKUS.length - 1)] as string;
    const qty = int(1, 3);
    const roll = random();
    // 4% each of slow tries and late tries, 8% duplicates, 4% slow confirms.
    const fault: FaultKind =
      roll < 0.04
        ? 'slow-try'
        : roll < 0.08
          ? 'late-try'
          : roll < 0.16
            ? 'duplicates'
            : roll < 0.2 && !saga
              ? 'slow-confirm'
              : 'none';
    list.push({
      id: `order-${String(i + 1).padStart(4, '0')}`,
      sku,
      qty,
      account: `acct-${String(int(1, ACCOUNTS)).padStart(2, '0')}`,
      amount: qty * (prices.get(sku) as number),
      fault,
      target: random() < 0.5 ? 'inventory' : 'payment',
    });
  }
  // Every kind of fault at least once, also in a short run: on orders that have none.
  for (const kind of kinds) {
    if (list.length < 2 * kinds.length || list.some((o) => o.fault === kind)) continue;
    const free = list.filter((o) => o.fault === 'none');
    const pick = free[int(0, free.length - 1)];
    if (pick) pick.fault = kind;
  }
  return { stock, prices, balances, orders: list, crashFrom: Math.floor(orders * 0.4) };
}
