import { SLOT_NAME } from '../stores/postgres/schema-name.js';
import { redactUrl } from '../core/redact.js';
import type { PgClientSlice } from '../replication/pg-replication-client.js';
import { loadPgClient } from '../replication/pg-replication-client.js';
import { readSlotInfo, type SlotInfo } from '../replication/replication-setup.js';
import { SLOT_SQL } from '../replication/replication-sql.js';
import { describeDbError } from '../stores/postgres/postgres-errors.js';
import { UsageError } from './cli-error.js';
import { formatDuration } from './duration.js';
import type { OptionSpec, ResolvedConfig } from './options.js';
import { truncate } from './table.js';

/**
 * Replication slot health for `mailroom status` and `mailroom slot`. The slot's positions come
 * from `readSlotInfo` (the statement `OutboxLogStream.slotInfo()` runs); the lag in seconds and
 * the list of slots are read here, beside it.
 */

/** What PostgreSQL accepts as a slot name, and what the relay's `--slot` takes. */
export { SLOT_NAME };

/** `--slot-warn-bytes` when not given: 1 GiB of WAL kept for one slot. */
export const DEFAULT_SLOT_WARN_BYTES = 1024 ** 3;

/** `--slot-warn-bytes`, shared by `status` and `slot list`. */
export const SLOT_WARN_OPTION: OptionSpec = {
  key: 'slotWarnBytes',
  flag: 'slot-warn-bytes',
  env: 'MAILROOM_SLOT_WARN_BYTES',
  type: 'int',
  min: 1,
  max: Number.MAX_SAFE_INTEGER,
  default: DEFAULT_SLOT_WARN_BYTES,
  valueName: 'n',
  description: 'warn when a slot keeps more WAL than this many bytes (1073741824 is 1 GiB)',
};

/**
 * Lag of an active slot in time, from the walsender that streams it: the time between the
 * server flushing recent WAL and the relay confirming it (`replay_lag`; the stream reports its
 * apply position equal to its flush position, `flush_lag` is the fallback). NULL when nobody
 * streams the slot, when the role may not see other roles' walsenders, and a little while after
 * the relay has caught up and no WAL is written (PostgreSQL stops measuring then).
 */
export const SLOT_LAG_SECONDS_SQL = `SELECT EXTRACT(EPOCH FROM COALESCE(r.replay_lag, r.flush_lag))::float8 AS lag_seconds
FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
WHERE s.slot_name = $1`;

/**
 * The logical slots of the current database, by name. A logical slot belongs to one database;
 * physical slots (standbys') and other databases' slots are not a relay's of this database.
 */
export const LOGICAL_SLOTS_SQL = `SELECT slot_name, plugin FROM pg_replication_slots
WHERE slot_type = 'logical' AND database = current_database()
ORDER BY slot_name`;

/** The backend holding a slot, to name it when a drop is refused. */
export const BACKEND_SQL = `SELECT application_name, client_addr::text AS client_addr FROM pg_stat_activity WHERE pid = $1`;

/** The database this connection is on: a logical slot belongs to one. */
export const CURRENT_DATABASE_SQL = `SELECT current_database() AS database`;

/** Drops one slot; fails (55006) when a connection holds it, never waits for it. */
export const DROP_SLOT_SQL = `SELECT pg_drop_replication_slot($1)`;

/**
 * A slot as `status --json` (`slot`) and `slot list --json` print it: {@link SlotInfo} plus the
 * lag in seconds and the warnings. Fields are only ever added, never renamed.
 */
export interface SlotHealth extends SlotInfo {
  /** The output plugin (`pgoutput` for a relay's slot); null for a physical slot. */
  plugin: string | null;
  /** Seconds between the server flushing WAL and the reader confirming it; null when not known. */
  lagSeconds: number | null;
  /** Sentences for an operator; empty when the slot is healthy. */
  warnings: string[];
}

/** Checks a slot name given on the command line; exit 2 naming the value otherwise. */
export function validateSlotName(name: string, flag: string): string {
  if (!SLOT_NAME.test(name)) {
    throw new UsageError(
      `${flag} ${JSON.stringify(truncate(name, 80))} is not a replication slot name: 1 to 63 characters from a-z, 0-9 and _`,
      { slot: name },
    );
  }
  return name;
}

/** 2184 → `2.1 KiB`; below 1 KiB in bytes. Binary units, as PostgreSQL's pg_size_pretty. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit] as string}`;
}

/** What is wrong with a slot, each in words that say what to do; empty when nothing is. */
export function slotWarnings(info: SlotInfo, warnBytes: number): string[] {
  const warnings: string[] = [];
  const retained = info.retainedWalBytes;
  if (info.walStatus === 'lost') {
    warnings.push(
      `slot ${info.slot} was invalidated (wal_status lost): the server removed WAL it needed. A relay cannot ` +
        `read it again: \`mailroom slot drop ${info.slot}\`, and the relay creates a new one and delivers ` +
        `the gap from the outbox table`,
    );
  } else if (info.walStatus === 'unreserved') {
    warnings.push(
      `slot ${info.slot} keeps more WAL than max_wal_size (wal_status unreserved): it is invalidated at the ` +
        `next checkpoint once over max_slot_wal_keep_size; start its relay or drop the slot`,
    );
  }
  if (!info.active && info.walStatus !== 'lost') {
    warnings.push(
      `slot ${info.slot} is inactive: no relay reads it and the server keeps every WAL byte from its ` +
        `restart position on (${retained === null ? 'amount unknown' : formatBytes(retained)} now) until one ` +
        `does. If its relay will not come back: \`mailroom slot drop ${info.slot}\``,
    );
  }
  if (retained !== null && retained > warnBytes) {
    warnings.push(
      `slot ${info.slot} keeps ${formatBytes(retained)} of WAL, over --slot-warn-bytes ` +
        `(${formatBytes(warnBytes)}): its relay is ${info.active ? 'behind' : 'not running'}, and the ` +
        `server's disk fills until it catches up or the slot is dropped`,
    );
  }
  return warnings;
}

/**
 * A connection for slot queries, with the deadlines the command's other connections have
 * (`--connect-timeout-ms`, `--statement-timeout-ms`, `--server-statement-timeout`). A plain
 * `pg.Client`, not a pool: one connection for a handful of statements.
 */
export async function openSlotClient(config: ResolvedConfig): Promise<PgClientSlice> {
  const url = String(config.databaseUrl);
  const statementTimeoutMs = Number(config.statementTimeoutMs ?? 30_000);
  const serverTimeout = config.serverStatementTimeout !== false;
  const Client = await loadPgClient();
  const client = new Client({
    connectionString: url,
    connectionTimeoutMillis: Number(config.connectTimeoutMs ?? 10_000),
    // Server side first (its error says which statement); the driver's own deadline catches a
    // server that does not answer at all.
    ...(serverTimeout ? { statement_timeout: statementTimeoutMs } : {}),
    query_timeout: serverTimeout ? statementTimeoutMs + 5000 : statementTimeoutMs,
    application_name: 'mailroom-cli',
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    throw describeSlotError(err, config, 'connect');
  }
  return client;
}

/** A driver error explained like the store's (server named, password hidden). */
export function describeSlotError(
  err: unknown,
  config: ResolvedConfig,
  phase: 'connect' | 'statement' = 'statement',
): unknown {
  return describeDbError(err, {
    // `slot` has no schema: slots belong to the database.
    schema: config.schema === undefined ? '-' : String(config.schema),
    target: redactUrl(String(config.databaseUrl)),
    phase,
    connectTimeoutMs: Number(config.connectTimeoutMs ?? 10_000),
  });
}

/** Ends the client, waiting at most `ms` for the server to say goodbye. */
export async function closeSlotClient(client: PgClientSlice, ms = 5000): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    client.end().catch(() => undefined),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
  ]);
  clearTimeout(timer);
}

/** One slot's health; null when no slot has that name. */
export async function readSlotHealth(
  client: PgClientSlice,
  slot: string,
  warnBytes: number,
  plugin?: string | null,
): Promise<SlotHealth | null> {
  const info = await readSlotInfo(client, slot);
  if (!info) return null;
  const lag = (await client.query(SLOT_LAG_SECONDS_SQL, [slot])).rows[0]?.lag_seconds;
  const resolvedPlugin =
    plugin !== undefined ? plugin : (await client.query(SLOT_SQL, [slot])).rows[0]?.plugin;
  return {
    ...info,
    plugin: typeof resolvedPlugin === 'string' ? resolvedPlugin : null,
    lagSeconds: typeof lag === 'number' && Number.isFinite(lag) ? lag : null,
    warnings: slotWarnings(info, warnBytes),
  };
}

/** Every logical slot of the current database, by name; a slot dropped meanwhile is left out. */
export async function listSlotHealth(client: PgClientSlice, warnBytes: number): Promise<SlotHealth[]> {
  const { rows } = await client.query(LOGICAL_SLOTS_SQL);
  const out: SlotHealth[] = [];
  for (const row of rows) {
    const health = await readSlotHealth(
      client,
      String(row.slot_name),
      warnBytes,
      typeof row.plugin === 'string' ? row.plugin : null,
    );
    if (health) out.push(health);
  }
  return out;
}

/** `340ms`, `1.2s`, `4m 10s`, or `-` when the lag in time is not known. */
export function formatLagSeconds(seconds: number | null): string {
  return seconds === null ? '-' : formatDuration(seconds * 1000);
}
