import { MailroomError } from '../core/errors/mailroom-error.js';

/**
 * What went wrong with a replication stream, stable to branch on:
 *
 * - `connect`: the server could not be reached, refused the login, or `pg_hba.conf` has no entry
 *   for a replication connection.
 * - `wal_level`: `wal_level` is not `logical`.
 * - `privilege`: the role lacks `REPLICATION`, `CREATE` on the database, or ownership of the
 *   outbox table.
 * - `limit`: `max_replication_slots` or `max_wal_senders` is exhausted.
 * - `publication`: the publication is missing, covers more than the outbox's inserts, or the
 *   outbox table does not exist.
 * - `slot_in_use`: another connection (another relay) is streaming from the slot.
 * - `slot_missing`: the slot does not exist (and the stream was told not to create it).
 * - `slot_invalidated`: the server dropped the WAL the slot needed (`max_slot_wal_keep_size`).
 * - `slot_mismatch`: the slot exists but is not a logical `pgoutput` slot of this database.
 * - `setup`: another setup statement failed or timed out (the message has the server's words).
 * - `connection_lost`: the replication connection broke or the server went silent while streaming.
 * - `protocol`: the server sent something this decoder does not understand.
 * - `confirm_ahead`: `confirm()` was given a position the stream never handed out.
 * - `not_started`: `next()` before `start()`.
 * - `stopped`: `start()` on a stream that was stopped or failed (make a new stream).
 */
export type ReplicationErrorCode =
  | 'connect'
  | 'wal_level'
  | 'privilege'
  | 'limit'
  | 'publication'
  | 'slot_in_use'
  | 'slot_missing'
  | 'slot_invalidated'
  | 'slot_mismatch'
  | 'setup'
  | 'connection_lost'
  | 'protocol'
  | 'confirm_ahead'
  | 'not_started'
  | 'stopped';

/**
 * A logical replication stream could not start or broke. The message says what was wrong and
 * what to change (the setting, the `ALTER ROLE`, the `pg_hba.conf` line); `details` holds the
 * slot, publication and, for `slot_in_use`, the `activePid` holding the slot.
 */
export class ReplicationError extends MailroomError {
  override name = 'ReplicationError';
  declare readonly code: ReplicationErrorCode;

  constructor(
    code: ReplicationErrorCode,
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(code, message, options);
  }
}

export function isReplicationError(err: unknown): err is ReplicationError {
  return err instanceof ReplicationError || (err as { name?: unknown })?.name === 'ReplicationError';
}
