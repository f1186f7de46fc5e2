import { quoteIdent } from '../stores/sql-identifier.js';
import type { Lsn } from './lsn.js';

/**
 * Every statement the log stream runs, as values. Names that cannot be parameters (DDL, the
 * replication command) were validated to `[a-z0-9_]` before they get here, and are quoted all
 * the same.
 */

/** Facts about the server and the role, read before anything is created. */
export const SERVER_FACTS_SQL = `SELECT current_setting('wal_level') AS wal_level,
  current_user AS role,
  current_database() AS database,
  r.rolreplication AS can_replicate,
  r.rolsuper AS is_superuser,
  has_database_privilege(current_database(), 'CREATE') AS can_create
FROM pg_roles r WHERE r.rolname = current_user`;

/** The outbox table, whether the current role owns it (CREATE PUBLICATION needs that), and its owner. */
export const OUTBOX_TABLE_SQL = `SELECT c.oid::bigint::text AS oid,
  pg_has_role(current_user, c.relowner, 'USAGE') AS owned,
  pg_get_userbyid(c.relowner) AS owner
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`;

/**
 * A publication and what it covers. The tables come as whole rows of pg_publication_tables
 * (`to_jsonb`), so that PostgreSQL 15's column lists (`attnames`) and row filters (`rowfilter`)
 * are seen where they exist without naming columns older servers lack.
 */
export const PUBLICATION_SQL = `SELECT p.puballtables AS all_tables,
  p.pubinsert AS inserts, p.pubupdate AS updates, p.pubdelete AS deletes, p.pubtruncate AS truncates,
  COALESCE((SELECT jsonb_agg(to_jsonb(t)) FROM pg_publication_tables t WHERE t.pubname = p.pubname), '[]'::jsonb)
    AS tables
FROM pg_publication p WHERE p.pubname = $1`;

export function createPublicationSql(publication: string, schema: string, table: string): string {
  return (
    `CREATE PUBLICATION ${quoteIdent(publication)} FOR TABLE ${quoteIdent(schema)}.${quoteIdent(table)} ` +
    `WITH (publish = 'insert')`
  );
}

/** A slot as setup checks it. */
export const SLOT_SQL = `SELECT slot_name, plugin, slot_type, database, active, active_pid,
  confirmed_flush_lsn::text AS confirmed_flush_lsn, restart_lsn::text AS restart_lsn, wal_status
FROM pg_replication_slots WHERE slot_name = $1`;

/**
 * Creates the slot. It waits until every transaction running at that moment (in any database of
 * the server) has ended, since decoding needs a consistent starting snapshot.
 */
export const CREATE_SLOT_SQL = `SELECT lsn::text AS lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')`;

/** Slot health against the server's current WAL position. */
export const SLOT_INFO_SQL = `SELECT s.slot_name, s.active, s.active_pid,
  s.confirmed_flush_lsn::text AS confirmed_flush_lsn, s.restart_lsn::text AS restart_lsn, s.wal_status,
  w.lsn::text AS current_lsn,
  pg_wal_lsn_diff(w.lsn, s.restart_lsn)::bigint::text AS retained_bytes,
  pg_wal_lsn_diff(w.lsn, s.confirmed_flush_lsn)::bigint::text AS lag_bytes
FROM pg_replication_slots s,
  (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END AS lsn) w
WHERE s.slot_name = $1`;

/**
 * The replication command (walsender grammar; it takes no parameters). `proto_version '1'` is
 * understood by PostgreSQL 10 and later; `messages 'true'` (PostgreSQL 14+) adds logical decoding
 * messages. `streaming` is not requested: transactions arrive only once committed.
 */
export function startReplicationSql(slot: string, startLsn: Lsn, publication: string): string {
  return (
    `START_REPLICATION SLOT ${quoteIdent(slot)} LOGICAL ${startLsn} ` +
    `(proto_version '1', publication_names '${quoteIdent(publication)}', messages 'true')`
  );
}
