import { parseSnapshot, type LedgerEntry, type OutboxState } from '../../verify/verify-report.js';
import { quoteIdent, validateIdentifier } from '../sql-identifier.js';
import type { PgQueryable } from './postgres-driver.js';

/**
 * The audit ledger of a PostgreSQL outbox (migration 000002): a trigger that records every
 * committed enqueue, for `mailroom verify`. Off by default, since it doubles the rows written
 * per message.
 */
export class PostgresLedger {
  readonly #db: PgQueryable;
  readonly #s: string;

  constructor(db: PgQueryable, schema = 'mailroom') {
    this.#db = db;
    this.#s = quoteIdent(validateIdentifier('schema', schema));
  }

  /** Turns recording on or off for every writer (the trigger is on the table). */
  async setEnabled(enabled: boolean): Promise<void> {
    await this.#db.query(
      `ALTER TABLE ${this.#s}.outbox ${enabled ? 'ENABLE' : 'DISABLE'} TRIGGER outbox_ledger`,
    );
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
      `SELECT id::text AS id, topic, key, xid::text AS xid, snapshot::text AS snapshot FROM ${this.#s}.ledger
       ${conds.length ? `WHERE ${conds.join(' AND ')}` : ''}`,
      params,
    );
    return res.rows.map((r) => ({
      id: String(r.id),
      topic: String(r.topic),
      key: (r.key as string | null) ?? null,
      xid: BigInt(String(r.xid)),
      snapshot: parseSnapshot(String(r.snapshot)),
    }));
  }

  /** Which ids are still in the outbox or in the dead letters. */
  async state(): Promise<OutboxState> {
    const [pending, dead] = await Promise.all([
      this.#db.query(`SELECT id::text AS id FROM ${this.#s}.outbox`),
      this.#db.query(`SELECT id::text AS id FROM ${this.#s}.dead_letter`),
    ]);
    return {
      pending: new Set(pending.rows.map((r) => String(r.id))),
      dead: new Set(dead.rows.map((r) => String(r.id))),
    };
  }

  /** Deletes ledger entries enqueued before `before` (all when omitted); returns how many. */
  async clear(before?: Date): Promise<number> {
    const res = before
      ? await this.#db.query(`DELETE FROM ${this.#s}.ledger WHERE enqueued_at < $1`, [before])
      : await this.#db.query(`DELETE FROM ${this.#s}.ledger`);
    return res.rowCount ?? 0;
  }
}
