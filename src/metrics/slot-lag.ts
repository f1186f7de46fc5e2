/** How far a replication slot's consumer (the relay's log source) is behind the server's log. */
export interface SlotLag {
  /** The slot's name: the `slot` label. */
  slot: string;
  /** Bytes of WAL written since the position the relay confirmed, or null when unknown. */
  bytes: number | null;
  /**
   * Seconds between the server flushing recent WAL and the relay confirming it, or null: nobody
   * streams the slot, the role may not see other roles' walsenders, or PostgreSQL stopped
   * measuring a while after the relay caught up with no new WAL.
   */
  seconds: number | null;
}

/**
 * Reads the lag of the slot a source streams from: null when there is no slot. Called on the
 * metrics' refresh schedule, never per scrape; `source` is the name the metrics label it with.
 */
export type SlotLagReader = (source: string) => Promise<SlotLag | null>;

/** The slice of a `pg.Pool` (or `pg.Client`) the PostgreSQL slot reader uses. */
export interface SlotLagQueryable {
  query(text: string, values?: unknown[]): Promise<{ rows: Array<Record<string, unknown>> }>;
}

/**
 * One catalog read: the slot's byte lag against the server's current position (the replayed
 * position on a standby), and its time lag from the walsender streaming it (`replay_lag`: the
 * stream reports its apply position equal to its flush position; `flush_lag` as the fallback).
 * No table is read, so it costs the same on any outbox size.
 */
export const SLOT_LAG_SQL = `SELECT
  pg_wal_lsn_diff(
    CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
    s.confirmed_flush_lsn)::bigint::text AS lag_bytes,
  EXTRACT(EPOCH FROM COALESCE(r.replay_lag, r.flush_lag))::float8 AS lag_seconds
FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
WHERE s.slot_name = $1`;

function finite(v: unknown): number | null {
  if (v === null || v === undefined) return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

/**
 * A {@link SlotLagReader} for a PostgreSQL logical replication slot (the one a
 * `PostgresLogSource` streams from), through any pool or client with `query`.
 *
 * @example
 * ```ts
 * metrics.observe(relay, { store, slotLag: postgresSlotLag(pool, 'mailroom_relay') });
 * ```
 */
export function postgresSlotLag(db: SlotLagQueryable, slot: string): SlotLagReader {
  return async () => {
    const row = (await db.query(SLOT_LAG_SQL, [slot])).rows[0];
    if (!row) return null;
    return { slot, bytes: finite(row.lag_bytes), seconds: finite(row.lag_seconds) };
  };
}
