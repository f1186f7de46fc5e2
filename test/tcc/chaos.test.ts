/**
 * The TCC chaos test: an order service whose coordinator process is SIGKILLed at random moments,
 * and two participants (inventory, payment) behind proxies that add latency, answer 5xx, hold
 * calls past the coordinator's deadline and deliver calls twice. Hundreds of global
 * transactions later, once the last coordinator's recovery has finished everything, an audit
 * checks that no unit of stock or money was created, lost or left reserved, that every
 * transaction ended confirmed or cancelled with its effects applied exactly once (or never), and
 * that the order service's own records (order status, outbox messages) agree.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import { BranchRefusedError, type BranchCall } from '../../src/tcc/index.js';
import { TccBarrier } from '../../src/tcc/barrier.js';
import { createTccHandler, type TccPhaseHandler } from '../../src/tcc/http-handler.js';
import { createTestDb, DATABASE_URL, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';

/** A small seeded PRNG, so a failing run's seed (printed) gives the same injection choices. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SEED = Number(process.env.CHAOS_SEED ?? randomBytes(4).readUInt32LE());
const random = prng(SEED);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** What the run aims for: at least this many kills and transactions (both asserted). */
const MIN_KILLS = 8;
const MIN_TRANSACTIONS = 300;
/**
 * The chaos phase goes on until both are reached (with a margin), or this long: about 32 s on
 * 2 idle cores, up to the bound with another test file running beside it (CI runs two at once).
 */
const CHAOS_MS = 65_000;
/** Longest the last coordinator may take to finish everything once the chaos stops. */
const DRAIN_MS = 40_000;
/** The coordinator's participant timeout (in the fixture): held calls wait past it. */
const CALL_TIMEOUT_MS = 1000;

// Orders pick a SKU and an account at random. The scarce SKU and the poor account run dry after
// a few orders and then refuse (BranchRefusedError), so about a third of the orders are refused.
const SKUS: Record<string, number> = {
  'sku-a': 1_000_000,
  'sku-b': 1_000_000,
  'sku-c': 1_000_000,
  'sku-scarce': 40,
};
const ACCOUNTS: Record<string, number> = {
  'acc-1': 1_000_000,
  'acc-2': 1_000_000,
  'acc-3': 1_000_000,
  'acc-4': 1_000_000,
  'acc-poor': 150,
};

/** Counters of what the proxies injected and saw. */
interface ChaosStats {
  requests: number;
  failedBefore: number;
  failedAfter: number;
  heldAfter: number;
  heldBefore: number;
  duplicates: number;
  hangingTriesRefused: number;
  unknownTries: number;
}

/**
 * A participant service: one HTTP server with the real handler (createTccHandler on its own
 * barrier and store) under /inner/tcc, and under /tcc a chaos proxy to it, the URL the
 * coordinator is given. The proxy forwards each call over a new connection, and may: answer
 * 503 without forwarding; forward, then answer 500 (the phase ran, the caller does not know);
 * forward, then hold the answer past the caller's deadline; hold the call itself past the
 * deadline before forwarding (a try then reaches the participant after its cancel: a hanging
 * try); forward it twice (a duplicate delivery, now or a little later).
 */
class ChaosService {
  readonly stats: ChaosStats = {
    requests: 0,
    failedBefore: 0,
    failedAfter: 0,
    heldAfter: 0,
    heldBefore: 0,
    duplicates: 0,
    hangingTriesRefused: 0,
    unknownTries: 0,
  };
  readonly #server: http.Server;
  readonly #handler: ReturnType<typeof createTccHandler>;
  readonly #inFlight = new Set<Promise<unknown>>();
  #port = 0;
  /** Set to false to stop injecting faults (the drain still may see late copies). */
  chaos = true;

  constructor(handler: ReturnType<typeof createTccHandler>) {
    this.#handler = handler;
    this.#server = http.createServer((req, res) => {
      if (req.url?.startsWith('/inner/')) return this.#handler(req, res);
      this.#track(this.#front(req, res)).catch(() => {
        if (!res.headersSent) res.writeHead(500).end();
      });
    });
  }

  get url(): string {
    return `http://127.0.0.1:${this.#port}/tcc`;
  }

  async listen(): Promise<void> {
    await new Promise<void>((r) => this.#server.listen(0, '127.0.0.1', r));
    this.#port = (this.#server.address() as AddressInfo).port;
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#inFlight.add(p);
    void p.finally(() => this.#inFlight.delete(p)).catch(() => undefined);
    return p;
  }

  /** Resolves when no call is being forwarded or held (late duplicates included). */
  async idle(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
  }

  /** Forwards one call to the real handler; resolves with its status and body. */
  #forward(path: string, headers: http.IncomingHttpHeaders, body: Buffer) {
    return new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port: this.#port,
          path: `/inner${path}`,
          method: 'POST',
          headers: { 'content-type': headers['content-type'] ?? 'application/json' },
          agent: false,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
          );
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    }).then((answer) => {
      if (answer.status === 409 && /hanging/.test(answer.text)) this.stats.hangingTriesRefused++;
      return answer;
    });
  }

  async #front(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
    const body = Buffer.concat(chunks);
    const path = req.url ?? '/tcc';
    const isTry = path.endsWith('/try');
    this.stats.requests++;
    const reply = (status: number, text: string) => {
      if (res.destroyed || res.headersSent) return;
      res.writeHead(status, { 'content-type': 'application/json' }).end(text);
    };
    const dice = this.chaos ? random() : 1;
    await sleep(Math.floor(random() * 25));
    if (dice < 0.04) {
      this.stats.failedBefore++;
      if (isTry) this.stats.unknownTries++;
      return reply(503, JSON.stringify({ error: 'chaos: unavailable' }));
    }
    if (dice < 0.07) {
      // Held before it reaches the participant: the caller gives up; a try arrives late.
      this.stats.heldBefore++;
      if (isTry) this.stats.unknownTries++;
      await sleep(CALL_TIMEOUT_MS + 300 + Math.floor(random() * 500));
    }
    if (this.chaos && random() < 0.06) {
      this.stats.duplicates++;
      const delay = random() < 0.5 ? 0 : Math.floor(random() * 1500);
      void this.#track(sleep(delay).then(() => this.#forward(path, req.headers, body))).catch(
        () => undefined,
      );
    }
    const answer = await this.#forward(path, req.headers, body);
    if (dice >= 0.07 && dice < 0.11) {
      this.stats.failedAfter++;
      if (isTry) this.stats.unknownTries++;
      return reply(500, JSON.stringify({ error: 'chaos: the answer was lost' }));
    }
    if (dice >= 0.11 && dice < 0.13) {
      this.stats.heldAfter++;
      if (isTry) this.stats.unknownTries++;
      await sleep(CALL_TIMEOUT_MS + 300);
    }
    reply(answer.status, answer.text);
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((r) => this.#server.close(() => r()));
    this.#server.closeAllConnections();
    await closed;
  }
}

/** How the two participants change their business tables in each phase. */
function inventoryHandlers(
  schema: string,
): Record<'try' | 'confirm' | 'cancel', TccPhaseHandler<pg.PoolClient>> {
  const stock = `"${schema}".stock`;
  const movement = `"${schema}".movement`;
  const input = (c: BranchCall) => c.input as { sku: string; qty: number };
  const log = (tx: pg.PoolClient, c: BranchCall, kind: string) =>
    tx.query(`INSERT INTO ${movement} (gid, kind, item, n) VALUES ($1, $2, $3, $4)`, [
      c.gid,
      kind,
      input(c).sku,
      input(c).qty,
    ]);
  return {
    async try(tx, c) {
      const { sku, qty } = input(c);
      const res = await tx.query(
        `UPDATE ${stock} SET stock = stock - $2, reserved = reserved + $2 WHERE sku = $1 AND stock >= $2`,
        [sku, qty],
      );
      if (res.rowCount === 0) throw new BranchRefusedError(`out of stock: ${qty} of ${sku}`);
      await log(tx, c, 'reserve');
    },
    async confirm(tx, c) {
      const { sku, qty } = input(c);
      await tx.query(`UPDATE ${stock} SET reserved = reserved - $2, sold = sold + $2 WHERE sku = $1`, [
        sku,
        qty,
      ]);
      await log(tx, c, 'sell');
    },
    async cancel(tx, c) {
      const { sku, qty } = input(c);
      await tx.query(`UPDATE ${stock} SET reserved = reserved - $2, stock = stock + $2 WHERE sku = $1`, [
        sku,
        qty,
      ]);
      await log(tx, c, 'release');
    },
  };
}

function paymentHandlers(
  schema: string,
): Record<'try' | 'confirm' | 'cancel', TccPhaseHandler<pg.PoolClient>> {
  const account = `"${schema}".account`;
  const movement = `"${schema}".movement`;
  const input = (c: BranchCall) => c.input as { account: string; amount: number };
  const log = (tx: pg.PoolClient, c: BranchCall, kind: string) =>
    tx.query(`INSERT INTO ${movement} (gid, kind, item, n) VALUES ($1, $2, $3, $4)`, [
      c.gid,
      kind,
      input(c).account,
      input(c).amount,
    ]);
  return {
    async try(tx, c) {
      const { account: id, amount } = input(c);
      const res = await tx.query(
        `UPDATE ${account} SET balance = balance - $2, frozen = frozen + $2 WHERE id = $1 AND balance >= $2`,
        [id, amount],
      );
      if (res.rowCount === 0) throw new BranchRefusedError(`insufficient funds: ${amount} from ${id}`);
      await log(tx, c, 'freeze');
    },
    async confirm(tx, c) {
      const { account: id, amount } = input(c);
      await tx.query(`UPDATE ${account} SET frozen = frozen - $2, debited = debited + $2 WHERE id = $1`, [
        id,
        amount,
      ]);
      await log(tx, c, 'debit');
    },
    async cancel(tx, c) {
      const { account: id, amount } = input(c);
      await tx.query(`UPDATE ${account} SET frozen = frozen - $2, balance = balance + $2 WHERE id = $1`, [
        id,
        amount,
      ]);
      await log(tx, c, 'unfreeze');
    },
  };
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 20_000)))]);
  clearTimeout(timer);
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL');
    await exited;
  }
}

describe('TCC chaos: a coordinator killed at random, participants that fail, stall and repeat', () => {
  let order: TestDb;
  let inventory: TestDb;
  let payment: TestDb;
  let inventoryService: ChaosService;
  let paymentService: ChaosService;
  const children = new Set<ChildProcess>();

  before(async () => {
    [order, inventory, payment] = await Promise.all([
      createTestDb('tcc_chaos_order'),
      createTestDb('tcc_chaos_inventory'),
      createTestDb('tcc_chaos_payment'),
    ]);
    await order.pool.query(
      `CREATE TABLE "${order.schema}".orders (
         id text PRIMARY KEY, sku text NOT NULL, qty int NOT NULL, account text NOT NULL,
         amount int NOT NULL, status text NOT NULL, decisions int NOT NULL, by_recovery boolean NOT NULL)`,
    );
    for (const db of [inventory, payment]) {
      // No unique key on gid: a phase applied twice must show in the audit, not fail here.
      await db.pool.query(
        `CREATE TABLE "${db.schema}".movement (gid text NOT NULL, kind text NOT NULL, item text NOT NULL, n int NOT NULL)`,
      );
    }
    await inventory.pool.query(
      `CREATE TABLE "${inventory.schema}".stock (sku text PRIMARY KEY, initial int NOT NULL,
         stock int NOT NULL, reserved int NOT NULL DEFAULT 0, sold int NOT NULL DEFAULT 0)`,
    );
    for (const [sku, n] of Object.entries(SKUS)) {
      await inventory.pool.query(
        `INSERT INTO "${inventory.schema}".stock (sku, initial, stock) VALUES ($1, $2, $2)`,
        [sku, n],
      );
    }
    await payment.pool.query(
      `CREATE TABLE "${payment.schema}".account (id text PRIMARY KEY, initial int NOT NULL,
         balance int NOT NULL, frozen int NOT NULL DEFAULT 0, debited int NOT NULL DEFAULT 0)`,
    );
    for (const [id, n] of Object.entries(ACCOUNTS)) {
      await payment.pool.query(
        `INSERT INTO "${payment.schema}".account (id, initial, balance) VALUES ($1, $2, $2)`,
        [id, n],
      );
    }
    inventoryService = new ChaosService(
      createTccHandler({
        barrier: new TccBarrier<pg.PoolClient>({ store: inventory.store as never }),
        ...inventoryHandlers(inventory.schema),
      }),
    );
    paymentService = new ChaosService(
      createTccHandler({
        barrier: new TccBarrier<pg.PoolClient>({ store: payment.store as never }),
        ...paymentHandlers(payment.schema),
      }),
    );
    await Promise.all([inventoryService.listen(), paymentService.listen()]);
  });

  after(async () => {
    await Promise.all([...children].map((c) => stopChild(c, 'SIGKILL')));
    await Promise.all([inventoryService?.idle(), paymentService?.idle()]);
    await Promise.all([inventoryService?.close(), paymentService?.close()]);
    await Promise.all([order, inventory, payment].map((db) => db?.drop()));
  });

  it(
    'keeps stock and money whole, and every transaction confirmed or cancelled exactly once',
    { timeout: 150_000 },
    async () => {
      const fixture = fileURLToPath(new URL('../fixtures/tcc-coordinator-process.ts', import.meta.url));
      let generation = 0;
      const stderr: string[] = [];
      const spawnCoordinator = async (): Promise<ChildProcess> => {
        generation++;
        const child = spawn(process.execPath, ['--import', 'tsx', fixture], {
          env: {
            ...process.env,
            DATABASE_URL,
            SCHEMA: order.schema,
            INVENTORY_URL: inventoryService.url,
            PAYMENT_URL: paymentService.url,
            GENERATION: String(generation),
            WORKERS: '6',
            SKUS: JSON.stringify(Object.keys(SKUS)),
            ACCOUNTS: JSON.stringify(Object.keys(ACCOUNTS)),
          },
          stdio: ['pipe', 'pipe', 'pipe'],
        });
        children.add(child);
        child.once('exit', () => children.delete(child));
        child.stderr?.on('data', (d: Buffer) => stderr.push(`[${generation}] ${d.toString('utf8')}`));
        let out = '';
        await new Promise<void>((resolve, reject) => {
          child.stdout?.on('data', (d: Buffer) => {
            out += d.toString('utf8');
            if (out.includes('started')) resolve();
          });
          child.once('exit', (code, signal) =>
            reject(
              new Error(
                `coordinator ${generation} exited (${code ?? signal}) before starting: ${stderr.join('')}`,
              ),
            ),
          );
        });
        return child;
      };
      const q = async <T = Record<string, unknown>>(db: TestDb, sql: string): Promise<T[]> =>
        (await db.pool.query(sql)).rows as T[];
      const transactionCount = async () =>
        (
          await q<{ n: number }>(order, `SELECT count(*)::int AS n FROM "${order.schema}".tcc_transaction`)
        )[0]!.n;

      // The chaos phase: run a coordinator for a random while, SIGKILL it, start the next.
      const started = Date.now();
      let kills = 0;
      let child = await spawnCoordinator();
      for (;;) {
        await sleep(300 + Math.floor(random() * 3500));
        const exited = child.exitCode !== null || child.signalCode !== null;
        assert.ok(!exited, `coordinator ${generation} died on its own: ${stderr.join('')}`);
        const enough = kills >= MIN_KILLS + 2 && (await transactionCount()) >= MIN_TRANSACTIONS + 50;
        if (enough || Date.now() - started > CHAOS_MS) break;
        await stopChild(child, 'SIGKILL');
        kills++;
        child = await spawnCoordinator();
      }
      const chaosMs = Date.now() - started;

      // The drain: no more kills, faults or new transactions; the last coordinator's recovery
      // finishes what the dead ones left.
      inventoryService.chaos = false;
      paymentService.chaos = false;
      child.stdin?.write('drain\n');
      const activeSql = `SELECT gid, state, attempts, last_error FROM "${order.schema}".tcc_transaction
      WHERE state NOT IN ('confirmed', 'cancelled') ORDER BY gid`;
      await waitUntil(
        async () => (await q(order, activeSql)).length === 0,
        'every transaction finished',
        DRAIN_MS,
        200,
      ).catch(async (err: unknown) => {
        const left = await q(order, activeSql);
        assert.fail(`${String(err)}: ${left.length} unfinished, e.g. ${JSON.stringify(left.slice(0, 5))}`);
      });
      await Promise.all([inventoryService.idle(), paymentService.idle()]);
      await stopChild(child);
      const drainMs = Date.now() - started - chaosMs;

      // The audit.
      const problems: string[] = [];
      const check = (ok: boolean, what: string) => {
        if (!ok) problems.push(what);
      };
      const transactions = await q<{ gid: string; state: string; reason: string | null }>(
        order,
        `SELECT gid, state, reason FROM "${order.schema}".tcc_transaction`,
      );
      const stateOf = new Map(transactions.map((t) => [t.gid, t.state]));
      const confirmed = transactions.filter((t) => t.state === 'confirmed');
      const cancelled = transactions.filter((t) => t.state === 'cancelled');
      check(
        confirmed.length + cancelled.length === transactions.length,
        `transactions not confirmed or cancelled: ${JSON.stringify(transactions.filter((t) => !['confirmed', 'cancelled'].includes(t.state)).slice(0, 5))}`,
      );

      for (const row of await q<{
        sku: string;
        initial: number;
        stock: number;
        reserved: number;
        sold: number;
      }>(inventory, `SELECT * FROM "${inventory.schema}".stock`)) {
        check(
          row.stock + row.reserved + row.sold === row.initial,
          `stock of ${row.sku} not whole: ${JSON.stringify(row)}`,
        );
        check(row.reserved === 0, `stock of ${row.sku} left reserved: ${JSON.stringify(row)}`);
      }
      for (const row of await q<{
        id: string;
        initial: number;
        balance: number;
        frozen: number;
        debited: number;
      }>(payment, `SELECT * FROM "${payment.schema}".account`)) {
        check(
          row.balance + row.frozen + row.debited === row.initial,
          `account ${row.id} not whole: ${JSON.stringify(row)}`,
        );
        check(row.frozen === 0, `account ${row.id} left frozen: ${JSON.stringify(row)}`);
      }

      // Effects per gid: [reserve, sell, release] at inventory, [freeze, debit, unfreeze] at payment.
      const effects = async (db: TestDb, kinds: [string, string, string]) => {
        const found = new Map<string, [number, number, number]>();
        for (const r of await q<{ gid: string; kind: string; n: number }>(
          db,
          `SELECT gid, kind, count(*)::int AS n FROM "${db.schema}".movement GROUP BY gid, kind`,
        )) {
          const e = found.get(r.gid) ?? [0, 0, 0];
          e[kinds.indexOf(r.kind)] = r.n;
          found.set(r.gid, e);
        }
        return found;
      };
      const participants = [
        { name: 'inventory', effects: await effects(inventory, ['reserve', 'sell', 'release']) },
        { name: 'payment', effects: await effects(payment, ['freeze', 'debit', 'unfreeze']) },
      ];
      for (const p of participants) {
        for (const gid of p.effects.keys()) {
          check(stateOf.has(gid), `${p.name} has effects of ${gid}, which the coordinator does not know`);
        }
        for (const t of transactions) {
          const [held, final, released] = p.effects.get(t.gid) ?? [0, 0, 0];
          if (t.state === 'confirmed') {
            check(
              held === 1 && final === 1 && released === 0,
              `${p.name}: confirmed ${t.gid} has effects try/confirm/cancel ${held}/${final}/${released}, not 1/1/0`,
            );
          } else {
            check(
              held <= 1 && final === 0 && released === held,
              `${p.name}: cancelled ${t.gid} has effects try/confirm/cancel ${held}/${final}/${released}`,
            );
          }
        }
      }
      const sold = await q<{ sku: string; n: number }>(
        inventory,
        `SELECT sku, sold AS n FROM "${inventory.schema}".stock`,
      );
      const confirmedQty = await q<{ sku: string; n: number }>(
        order,
        `SELECT sku, sum(qty)::int AS n FROM "${order.schema}".orders WHERE status = 'confirmed' GROUP BY sku`,
      );
      for (const s of sold) {
        check(
          s.n === (confirmedQty.find((c) => c.sku === s.sku)?.n ?? 0),
          `sold ${s.n} of ${s.sku}, confirmed orders say ${confirmedQty.find((c) => c.sku === s.sku)?.n ?? 0}`,
        );
      }

      // The order service's own records: one decision per order, matching the transaction.
      const orderRows = await q<{ id: string; status: string; decisions: number; by_recovery: boolean }>(
        order,
        `SELECT id, status, decisions, by_recovery FROM "${order.schema}".orders`,
      );
      const statusOf = new Map(orderRows.map((o) => [o.id, o.status]));
      check(
        orderRows.length === transactions.length,
        `${orderRows.length} orders for ${transactions.length} transactions`,
      );
      for (const t of transactions) {
        check(
          statusOf.get(t.gid) === t.state,
          `order ${t.gid} is ${statusOf.get(t.gid) ?? 'missing'}, its transaction ${t.state}`,
        );
      }
      for (const o of orderRows) check(o.decisions === 1, `order ${o.id} was decided ${o.decisions} times`);
      const messages = async (topic: string) =>
        q<{ key: string; n: number }>(
          order,
          `SELECT key, count(*)::int AS n FROM "${order.schema}".outbox WHERE topic = '${topic}' GROUP BY key`,
        );
      for (const [topic, expected] of [
        ['orders.confirmed', confirmed],
        ['orders.cancelled', cancelled],
      ] as const) {
        const found = await messages(topic);
        const keys = new Set(found.map((m) => m.key));
        check(
          found.every((m) => m.n === 1),
          `${topic}: keys with more than one message: ${JSON.stringify(found.filter((m) => m.n !== 1).slice(0, 5))}`,
        );
        check(
          keys.size === expected.length && expected.every((t) => keys.has(t.gid)),
          `${topic}: ${keys.size} message keys for ${expected.length} transactions`,
        );
      }

      const barrierCount = async (db: TestDb, where: string) =>
        (
          await q<{ n: number }>(
            db,
            `SELECT count(*)::int AS n FROM "${db.schema}".tcc_barrier WHERE ${where}`,
          )
        )[0]!.n;
      const nullCompensations =
        (await barrierCount(inventory, `phase = 'try' AND reason = 'cancel'`)) +
        (await barrierCount(payment, `phase = 'try' AND reason = 'cancel'`));
      const stats = [inventoryService.stats, paymentService.stats];
      const sum = (k: keyof ChaosStats) => stats.reduce((n, s) => n + s[k], 0);
      const figures = {
        seed: SEED,
        kills,
        transactions: transactions.length,
        confirmed: confirmed.length,
        cancelled: cancelled.length,
        refused: cancelled.filter((t) => / refused: /.test(t.reason ?? '')).length,
        cancelledUnknown: cancelled.filter((t) => /outcome unknown/.test(t.reason ?? '')).length,
        cancelledTimeout: cancelled.filter((t) => /^timeout/.test(t.reason ?? '')).length,
        decidedByRecovery: orderRows.filter((o) => o.by_recovery).length,
        phaseCalls: sum('requests'),
        unknownTries: sum('unknownTries'),
        failedBefore: sum('failedBefore'),
        failedAfter: sum('failedAfter'),
        heldBefore: sum('heldBefore'),
        heldAfter: sum('heldAfter'),
        duplicates: sum('duplicates'),
        nullCompensations,
        hangingTriesRefused: sum('hangingTriesRefused'),
        chaosMs,
        drainMs,
      };
      console.log(`# tcc chaos: ${JSON.stringify(figures)}`);
      // What the coordinators wrote to stderr (runs failing outside the TCC flow): shown, not failed on.
      if (stderr.length > 0)
        console.log(
          `# coordinator stderr (${stderr.length} chunks): ${stderr.slice(0, 5).join('').slice(0, 2000)}`,
        );
      assert.deepEqual(problems.slice(0, 20), [], `the audit found ${problems.length} problem(s)`);

      // The run did what it is for: enough kills and transactions, and every kind of trouble.
      assert.ok(kills >= MIN_KILLS, `only ${kills} kills`);
      assert.ok(transactions.length >= MIN_TRANSACTIONS, `only ${transactions.length} transactions`);
      assert.ok(
        confirmed.length > 0 && figures.refused > 0 && figures.cancelledUnknown > 0,
        JSON.stringify(figures),
      );
      assert.ok(figures.duplicates > 0 && nullCompensations > 0, JSON.stringify(figures));
    },
  );
});
