import type { Lsn } from './lsn.js';
import type { PgClientSlice } from './pg-replication-client.js';
import { ReplicationError } from './replication-error.js';
import {
  replicationPrivilegeAdvice,
  toReplicationError,
  type ReplicationContext,
} from './replication-error-map.js';
import {
  CREATE_SLOT_SQL,
  createPublicationSql,
  OUTBOX_TABLE_SQL,
  PUBLICATION_SQL,
  SERVER_FACTS_SQL,
  SLOT_INFO_SQL,
  SLOT_SQL,
} from './replication-sql.js';

/**
 * The checks and creations `OutboxLogStream.start()` runs on an ordinary (non-replication)
 * connection, before it opens the replication connection: each problem becomes a
 * {@link ReplicationError} that says what to change, before anything half-works.
 */

/** The outbox table's name inside the schema. */
export const OUTBOX_TABLE = 'outbox';

/** SQLSTATE duplicate_object: another process created the same publication or slot first. */
const DUPLICATE_OBJECT = '42710';

type Row = Record<string, unknown>;

function first(rows: Row[]): Row | undefined {
  return rows[0];
}

/** What setup learned about the server. */
export interface ServerFacts {
  role: string;
  database: string;
}

/** Reads wal_level and the role's attributes; throws `wal_level` or `privilege`. */
export async function checkServer(client: PgClientSlice, ctx: ReplicationContext): Promise<ServerFacts> {
  let row: Row | undefined;
  try {
    row = first((await client.query(SERVER_FACTS_SQL)).rows);
  } catch (err) {
    throw toReplicationError(err, 'check', ctx);
  }
  if (!row)
    throw new ReplicationError('setup', `could not read the current role's attributes on ${ctx.target}`);
  const facts: ServerFacts = { role: String(row.role), database: String(row.database) };
  ctx.role = facts.role;
  ctx.database = facts.database;
  if (row.wal_level !== 'logical') {
    throw new ReplicationError(
      'wal_level',
      `wal_level is '${String(row.wal_level)}' on ${ctx.target}; logical replication needs 'logical': run ` +
        `\`ALTER SYSTEM SET wal_level = logical;\` as a superuser and restart PostgreSQL (a reload is not enough)`,
      { details: { walLevel: row.wal_level, target: ctx.target } },
    );
  }
  if (row.can_replicate !== true && row.is_superuser !== true) {
    throw new ReplicationError('privilege', replicationPrivilegeAdvice(ctx), {
      details: { role: facts.role, missing: 'REPLICATION', target: ctx.target },
    });
  }
  return facts;
}

/** One row of pg_publication_tables, as `to_jsonb` gives it. */
interface PublishedTable {
  schemaname: string;
  tablename: string;
  attnames?: string[] | null;
  rowfilter?: string | null;
}

/** Why an existing publication does not fit, in words; empty when it fits. */
function publicationProblems(row: Row, schema: string): string[] {
  const problems: string[] = [];
  const tables = (Array.isArray(row.tables) ? row.tables : []) as PublishedTable[];
  const outbox = tables.find((t) => t.schemaname === schema && t.tablename === OUTBOX_TABLE);
  if (row.all_tables === true) problems.push('is FOR ALL TABLES');
  if (!outbox) problems.push(`does not cover ${schema}.${OUTBOX_TABLE}`);
  const others = tables.filter((t) => t !== outbox).map((t) => `${t.schemaname}.${t.tablename}`);
  if (row.all_tables !== true && others.length > 0) {
    const shown = others.slice(0, 5).join(', ') + (others.length > 5 ? ` and ${others.length - 5} more` : '');
    problems.push(`also covers ${shown}`);
  }
  if (row.inserts !== true) problems.push('does not publish inserts');
  const extra = (['updates', 'deletes', 'truncates'] as const).filter((op) => row[op] === true);
  if (extra.length > 0) problems.push(`also publishes ${extra.map((op) => op.replace(/s$/, '')).join(', ')}`);
  if (outbox?.rowfilter) problems.push(`filters rows (WHERE ${outbox.rowfilter})`);
  if (Array.isArray(outbox?.attnames)) {
    const missing = ['id', 'seq', 'key'].filter((c) => !outbox.attnames?.includes(c));
    if (missing.length > 0) problems.push(`has a column list without ${missing.join(', ')}`);
  }
  return problems;
}

/**
 * Creates `CREATE PUBLICATION <publication> FOR TABLE <schema>.outbox WITH (publish = 'insert')`
 * when it is missing; checks one that exists and throws `publication` when it covers anything
 * else (other tables, other operations, a row filter), since altering it silently could break
 * whoever else uses it. Returns whether it created it.
 */
export async function ensurePublication(
  client: PgClientSlice,
  ctx: ReplicationContext,
  create: boolean,
): Promise<{ created: boolean }> {
  const read = async () => {
    try {
      return first((await client.query(PUBLICATION_SQL, [ctx.publication])).rows);
    } catch (err) {
      throw toReplicationError(err, 'check', ctx);
    }
  };
  let row = await read();
  let created = false;
  if (!row) {
    if (!create) {
      throw new ReplicationError(
        'publication',
        `publication "${ctx.publication}" does not exist: create it with \`CREATE PUBLICATION ${ctx.publication} ` +
          `FOR TABLE ${ctx.schema}.${OUTBOX_TABLE} WITH (publish = 'insert');\` or let the stream create it`,
        { details: { publication: ctx.publication } },
      );
    }
    await checkCanCreatePublication(client, ctx);
    try {
      await client.query(createPublicationSql(ctx.publication, ctx.schema, OUTBOX_TABLE));
      created = true;
    } catch (err) {
      // Another relay created it between the read and here: check theirs like any existing one.
      // Two creates at the same moment can also meet in the catalog's unique index (23505).
      const code = (err as { code?: unknown })?.code;
      if (code !== DUPLICATE_OBJECT && code !== '23505')
        throw toReplicationError(err, 'create_publication', ctx);
    }
    row = await read();
    if (!row)
      throw new ReplicationError(
        'publication',
        `publication "${ctx.publication}" vanished right after it was created`,
      );
  }
  const problems = publicationProblems(row, ctx.schema);
  if (problems.length > 0) {
    throw new ReplicationError(
      'publication',
      `publication "${ctx.publication}" exists but ${problems.join('; ')}. The stream needs exactly the inserts of ` +
        `${ctx.schema}.${OUTBOX_TABLE} and does not alter a publication others may use: drop it ` +
        `(\`DROP PUBLICATION ${ctx.publication};\`) to let the stream create it, or choose another publication name`,
      { details: { publication: ctx.publication, problems } },
    );
  }
  return { created };
}

/** Checks the table exists and the role may publish it, for messages better than the server's. */
async function checkCanCreatePublication(client: PgClientSlice, ctx: ReplicationContext): Promise<void> {
  let table: Row | undefined;
  let canCreate: unknown;
  try {
    table = first((await client.query(OUTBOX_TABLE_SQL, [ctx.schema, OUTBOX_TABLE])).rows);
    canCreate = first((await client.query(SERVER_FACTS_SQL)).rows)?.can_create;
  } catch (err) {
    throw toReplicationError(err, 'check', ctx);
  }
  if (!table) {
    throw new ReplicationError(
      'publication',
      `the outbox table ${ctx.schema}.${OUTBOX_TABLE} does not exist on ${ctx.target}: run \`mailroom migrate\` ` +
        `for schema ${ctx.schema} (or check the schema option)`,
      { details: { schema: ctx.schema } },
    );
  }
  const missing: string[] = [];
  if (canCreate !== true)
    missing.push(`\`GRANT CREATE ON DATABASE ${ctx.database ?? '<database>'} TO ${ctx.role ?? '<role>'};\``);
  if (table.owned !== true) {
    missing.push(
      `ownership of ${ctx.schema}.${OUTBOX_TABLE} (owned by ${String(table.owner)}; or have that role create it)`,
    );
  }
  if (missing.length > 0) {
    throw new ReplicationError(
      'privilege',
      `role "${ctx.role ?? '?'}" may not create publication "${ctx.publication}": it needs ${missing.join(' and ')}. ` +
        `Or create it once as a role that may: \`CREATE PUBLICATION ${ctx.publication} FOR TABLE ` +
        `${ctx.schema}.${OUTBOX_TABLE} WITH (publish = 'insert');\``,
      { details: { role: ctx.role, publication: ctx.publication } },
    );
  }
}

/** The slot as setup found or made it. */
export interface EnsuredSlot {
  created: boolean;
  /** Where streaming resumes: the slot's confirmed_flush_lsn. */
  confirmedFlushLsn: Lsn;
}

/**
 * Creates the slot (`pg_create_logical_replication_slot(slot, 'pgoutput')`) when missing, after
 * the publication (a slot decodes with the catalog as of each change: a publication created after
 * the slot's start is missing for earlier changes). Checks an existing one: logical, pgoutput,
 * this database, not invalidated, not held by another connection.
 */
export async function ensureSlot(
  client: PgClientSlice,
  ctx: ReplicationContext,
  create: boolean,
): Promise<EnsuredSlot> {
  const read = async () => {
    try {
      return first((await client.query(SLOT_SQL, [ctx.slot])).rows);
    } catch (err) {
      throw toReplicationError(err, 'check', ctx);
    }
  };
  let row = await read();
  let created = false;
  if (!row) {
    if (!create) {
      throw new ReplicationError(
        'slot_missing',
        `replication slot "${ctx.slot}" does not exist and the stream was told not to create it (createSlot: false); ` +
          `if it existed before, it was dropped (or lost in a failover): transactions since its last confirmed ` +
          `position are not in the log, deliver them from the outbox table, then create the slot`,
        { details: { slot: ctx.slot } },
      );
    }
    try {
      await client.query(CREATE_SLOT_SQL, [ctx.slot]);
      created = true;
    } catch (err) {
      if ((err as { code?: unknown })?.code !== DUPLICATE_OBJECT)
        throw toReplicationError(err, 'create_slot', ctx);
    }
    row = await read();
    if (!row)
      throw new ReplicationError(
        'slot_missing',
        `replication slot "${ctx.slot}" vanished right after it was created`,
      );
  }
  if (row.slot_type !== 'logical' || row.plugin !== 'pgoutput' || row.database !== ctx.database) {
    throw new ReplicationError(
      'slot_mismatch',
      `replication slot "${ctx.slot}" exists but is a ${String(row.slot_type)} slot` +
        `${row.plugin ? ` with plugin ${String(row.plugin)}` : ''} of database ${String(row.database ?? '(none)')}; ` +
        `the stream needs a logical pgoutput slot of database ${ctx.database ?? '?'}: choose another slot name ` +
        `or drop that one if nobody uses it`,
      { details: { slot: ctx.slot, slotType: row.slot_type, plugin: row.plugin, database: row.database } },
    );
  }
  if (row.wal_status === 'lost') {
    throw new ReplicationError(
      'slot_invalidated',
      `replication slot "${ctx.slot}" was invalidated (wal_status lost): the server removed WAL it still needed ` +
        `(max_slot_wal_keep_size). Drop it (\`SELECT pg_drop_replication_slot('${ctx.slot}');\`), deliver what ` +
        `was committed since its last confirmed position from the outbox table, and start again`,
      { details: { slot: ctx.slot } },
    );
  }
  if (row.active_pid !== null && row.active_pid !== undefined) {
    throw await slotInUse(client, ctx, Number(row.active_pid));
  }
  const confirmed = row.confirmed_flush_lsn;
  if (typeof confirmed !== 'string') {
    throw new ReplicationError('setup', `replication slot "${ctx.slot}" has no confirmed_flush_lsn yet`);
  }
  return { created, confirmedFlushLsn: confirmed };
}

/** The `slot_in_use` error, naming the PID and, when the server says, who it is. */
export async function slotInUse(
  client: PgClientSlice,
  ctx: ReplicationContext,
  pid: number,
): Promise<ReplicationError> {
  let who = '';
  try {
    const row = first(
      (
        await client.query(
          `SELECT application_name, client_addr::text AS client_addr, backend_start FROM pg_stat_activity WHERE pid = $1`,
          [pid],
        )
      ).rows,
    );
    if (row) {
      const parts = [
        row.application_name ? `application_name '${String(row.application_name)}'` : '',
        row.client_addr ? `from ${String(row.client_addr)}` : '',
        row.backend_start instanceof Date ? `since ${row.backend_start.toISOString()}` : '',
      ].filter(Boolean);
      if (parts.length > 0) who = ` (${parts.join(', ')})`;
    }
  } catch {
    // Who holds it is a courtesy; the PID is the finding.
  }
  return new ReplicationError(
    'slot_in_use',
    `replication slot "${ctx.slot}" is in use by PID ${pid}${who}: another relay streams from it. A slot has one ` +
      `consumer at a time: stop that relay, wait for it to end (a standby retries), or give this one another slot. ` +
      `If that backend is stale: \`SELECT pg_terminate_backend(${pid});\``,
    { details: { slot: ctx.slot, activePid: pid } },
  );
}

/** Slot health, from `OutboxLogStream.slotInfo()`. */
export interface SlotInfo {
  slot: string;
  /** A connection is streaming from it. */
  active: boolean;
  activePid: number | null;
  /** The position the server resumes from; what the stream's consumer last confirmed. */
  confirmedFlushLsn: Lsn | null;
  /** The oldest WAL the slot keeps. */
  restartLsn: Lsn | null;
  /** `reserved`, `extended`, `unreserved` or `lost` (pg_replication_slots.wal_status). */
  walStatus: string | null;
  /** The server's current WAL position. */
  currentLsn: Lsn | null;
  /** Bytes of WAL the server keeps for this slot (current position minus restart_lsn). */
  retainedWalBytes: number | null;
  /** Bytes of WAL written since the confirmed position. */
  lagBytes: number | null;
}

function numberOrNull(v: unknown): number | null {
  return v === null || v === undefined ? null : Number(v);
}

function textOrNull(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

/** Reads the slot's health; `null` when the slot does not exist. */
export async function readSlotInfo(client: PgClientSlice, slot: string): Promise<SlotInfo | null> {
  const row = first((await client.query(SLOT_INFO_SQL, [slot])).rows);
  if (!row) return null;
  return {
    slot,
    active: row.active === true,
    activePid: numberOrNull(row.active_pid),
    confirmedFlushLsn: textOrNull(row.confirmed_flush_lsn),
    restartLsn: textOrNull(row.restart_lsn),
    walStatus: textOrNull(row.wal_status),
    currentLsn: textOrNull(row.current_lsn),
    retainedWalBytes: numberOrNull(row.retained_bytes),
    lagBytes: numberOrNull(row.lag_bytes),
  };
}
