import type pg from 'pg';
import { waitUntil } from './wait.js';

/**
 * Drops a replication slot a test made: ends the walsender reading it (a relay not stopped, a
 * killed process's connection the server has not noticed yet), waits until the slot is inactive,
 * then drops it. A slot left behind would keep WAL on the machine for good.
 */
export async function dropSlot(pool: pg.Pool, name: string): Promise<void> {
  await pool
    .query(
      `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`,
      [name],
    )
    .catch(() => undefined);
  await waitUntil(
    async () =>
      (
        await pool.query(
          `SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = $1 AND active`,
          [name],
        )
      ).rows[0].n === 0,
    `slot ${name} inactive`,
  );
  await pool.query(
    `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`,
    [name],
  );
}
