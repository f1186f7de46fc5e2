import { quoteIdent } from '../sql-identifier.js';
import type { PgPool, PgQueryable } from './postgres-driver.js';
import { parseSnapshot, type LedgerEntry, type OutboxState } from './ledger-entry.js';
import { validateSchemaName } from './schema-name.js';
import { ATOMIC_GROUP_CONTENT_TYPE as GROUP } from '../../core/atomic-group.js';

/**
 * The audit ledger of a PostgreSQL outbox (migration 000002): a trigger that records every
 * committed enqueue, for `mailroom verify`. Off by default, since it doubles the rows written
 * per message.
 */
export class PostgresLedger {
  readonly #db: PgQueryable & Partial<Pick<PgPool, 'connect'>>;
  readonly #s: string;

  /** `db`: a pg pool (needed by {@link PostgresLedger.start}) or a client. */
  constructor(db: PgQueryable & Partial<Pick<PgPool, 'connect'>>, schema = 'mailroom') {
    this.#db = db;
    this.#s = quoteIdent(validateSchemaName(schema));
  }

  /** Turns recording on or off for every writer (the trigger is on the table). */
  async setEnabled(enabled: boolean): Promise<void> {
    await this.#db.query(
      `ALTER TABLE ${this.#s}.outbox ${enabled ? 'ENABLE' : 'DISABLE'} TRIGGER outbox_ledger`,
    );
  }

  /**
   * Switches the ledger on for a verification that starts now, without false alarms at its
   * edge. In one transaction that holds off every enqueue and settle (a SHARE ROW EXCLUSIVE
   * lock on the outbox, for a moment): runs `whileLocked` (declare the verifier's queue there),
   * turns the trigger on, and records the messages already in the outbox as baseline entries.
   * Any message that reaches the verifier's queue is then either in the ledger or a phantom.
   */
  async start(whileLocked: () => Promise<void> = async () => undefined): Promise<{ baseline: number }> {
    if (typeof this.#db.connect !== 'function') throw new TypeError('PostgresLedger.start needs a pool');
    const client = await this.#db.connect();
    let broken: Error | undefined;
    const onError = (err: Error) => (broken = err);
    client.on('error', onError);
    try {
      await client.query('BEGIN');
      await client.query(`LOCK TABLE ${this.#s}.outbox IN SHARE ROW EXCLUSIVE MODE`);
      await whileLocked();
      await client.query(`ALTER TABLE ${this.#s}.outbox ENABLE TRIGGER outbox_ledger`);
      const res = await client.query(
        `INSERT INTO ${this.#s}.ledger (id, seq, topic, key, xid, snapshot, baseline)
         SELECT id, seq, topic, key, '0'::xid8, '1:1:'::pg_snapshot, true FROM ${this.#s}.outbox
         ON CONFLICT (id) DO NOTHING`,
      );
      await client.query('COMMIT');
      return { baseline: res.rowCount ?? 0 };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.removeListener('error', onError);
      client.release(broken ?? false);
    }
  }

  async enabled(): Promise<boolean> {
    const res = await this.#db.query(
      `SELECT tgenabled <> 'D' AS on FROM pg_trigger WHERE tgname = 'outbox_ledger' AND tgrelid = $1::regclass`,
      [`${this.#s}.outbox`],
    );
    return res.rows[0]?.on === true;
  }

  /** Ledger entries, optionally only those enqueued at or after `since`. */
  async entries(options: { since?: Date; topic?: string } = {}): Promise<LedgerEntry[]> {
    const conds: string[] = [];
    const params: unknown[] = [];
    if (options.since) {
      params.push(options.since);
      conds.push(`enqueued_at >= $${params.length}`);
    }
    if (options.topic) {
      params.push(options.topic);
      conds.push(`topic = $${params.length}`);
    }
    const res = await this.#db.query(
      `SELECT id::text AS id, seq::text AS seq, topic, key, xid::text AS xid, snapshot::text AS snapshot, baseline FROM ${this.#s}.ledger
       ${conds.length ? `WHERE ${conds.join(' AND ')}` : ''}`,
      params,
    );
    return res.rows.map((r) => ({
      id: String(r.id),
      seq: BigInt(String(r.seq)),
      topic: String(r.topic),
      key: (r.key as string | null) ?? null,
      xid: BigInt(String(r.xid)),
      snapshot: parseSnapshot(String(r.snapshot)),
      ...(r.baseline === true ? { baseline: true } : {}),
    }));
  }

  /** Which ids are still in the outbox or in the dead letters. */
  async state(): Promise<OutboxState> {
    // An atomic group is one row: each of its members is pending or dead with it.
    const ids = (table: string) =>
      `SELECT id::text AS id FROM ${this.#s}.${table} WHERE content_type <> '${GROUP}'
       UNION ALL
       SELECT m.value->>'id' FROM ${this.#s}.${table} t,
         json_array_elements(convert_from(t.payload, 'UTF8')::json->'members') AS m(value)
       WHERE t.content_type = '${GROUP}'`;
    const [pending, dead] = await Promise.all([
      this.#db.query(ids('outbox')),
      this.#db.query(ids('dead_letter')),
    ]);
    return {
      pending: new Set(pending.rows.map((r) => String(r.id))),
      dead: new Set(dead.rows.map((r) => String(r.id))),
    };
  }

  /** Appends deliveries (ids in arrival order) to the received log. */
  async recordReceived(ids: readonly string[]): Promise<void> {
    for (let i = 0; i < ids.length; i += 10_000) {
      await this.#db.query(
        `INSERT INTO ${this.#s}.ledger_received (id)
         SELECT t.id FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, o) ORDER BY t.o`,
        [ids.slice(i, i + 10_000)],
      );
    }
  }

  /** Every recorded delivery id, in arrival order. */
  async received(): Promise<string[]> {
    const res = await this.#db.query(`SELECT id::text AS id FROM ${this.#s}.ledger_received ORDER BY n`);
    return res.rows.map((r) => String(r.id));
  }

  /** Empties the ledger and the received log; returns how many ledger entries went. */
  async clear(): Promise<number> {
    const res = await this.#db.query(`DELETE FROM ${this.#s}.ledger`);
    await this.#db.query(`DELETE FROM ${this.#s}.ledger_received`);
    return res.rowCount ?? 0;
  }
}
