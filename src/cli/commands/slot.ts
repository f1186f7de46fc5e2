import { redactUrl } from '../../core/redact.js';
import type { PgClientSlice } from '../../replication/pg-replication-client.js';
import { ReplicationError } from '../../replication/replication-error.js';
import { SLOT_SQL } from '../../replication/replication-sql.js';
import { quoteIdent } from '../../stores/sql-identifier.js';
import { UsageError } from '../cli-error.js';
import type { Command, CommandContext } from '../command.js';
import { confirm, requireConfirmable } from '../confirm.js';
import { CONNECTION_OPTIONS } from '../connect.js';
import { COMMON_OPTIONS, type OptionSpec, type ResolvedConfig } from '../options.js';
import {
  BACKEND_SQL,
  closeSlotClient,
  CURRENT_DATABASE_SQL,
  describeSlotError,
  DROP_SLOT_SQL,
  formatBytes,
  formatLagSeconds,
  listSlotHealth,
  openSlotClient,
  readSlotHealth,
  SLOT_WARN_OPTION,
  validateSlotName,
  type SlotHealth,
} from '../slot-health.js';
import { formatTable, truncate } from '../table.js';

const SUBCOMMANDS = ['list', 'drop'] as const;
type Subcommand = (typeof SUBCOMMANDS)[number];

/** SQLSTATE object_in_use: the slot became active between the check and the drop. */
const OBJECT_IN_USE = '55006';
/** SQLSTATE undefined_object: the slot was dropped by someone else meanwhile. */
const UNDEFINED_OBJECT = '42704';

const OPTIONS: OptionSpec[] = [
  ...COMMON_OPTIONS.filter((o) => o.key === 'databaseUrl'),
  ...CONNECTION_OPTIONS,
  SLOT_WARN_OPTION,
];

/** The flags each subcommand reads beyond the connection settings. */
const SUBCOMMAND_FLAGS: Record<Subcommand, readonly string[]> = {
  list: ['json', 'slot-warn-bytes'],
  drop: ['json', 'yes'],
};

type Parsed = { sub: 'list' } | { sub: 'drop'; name: string };

function parse(ctx: CommandContext): Parsed {
  const [sub, ...rest] = ctx.positionals;
  if (sub === undefined) {
    throw new UsageError(`slot needs a subcommand: ${SUBCOMMANDS.join(', ')}; see mailroom slot --help`);
  }
  if (!(SUBCOMMANDS as readonly string[]).includes(sub)) {
    throw new UsageError(
      `unknown slot subcommand ${JSON.stringify(truncate(sub, 40))}; use one of ${SUBCOMMANDS.join(', ')}`,
      { subcommand: sub },
    );
  }
  const s = sub as Subcommand;
  // A flag the subcommand does not read would be ignored silently: say so instead.
  for (const flag of ['json', 'yes', 'slot-warn-bytes']) {
    if (ctx.flags.has(flag) && !SUBCOMMAND_FLAGS[s].includes(flag)) {
      throw new UsageError(`slot ${s} takes no --${flag}; see mailroom slot --help`, { flag });
    }
  }
  if (s === 'list') {
    if (rest.length > 0) {
      throw new UsageError(
        `slot list takes no arguments, got ${JSON.stringify(truncate(rest[0] as string, 40))}`,
      );
    }
    return { sub: 'list' };
  }
  const [name, ...extra] = rest;
  if (name === undefined) {
    throw new UsageError(
      'slot drop needs the name of a slot: mailroom slot drop <name> (mailroom slot list shows them)',
    );
  }
  if (extra.length > 0) {
    throw new UsageError(
      `slot drop takes one name, got extra ${JSON.stringify(truncate(extra[0] as string, 40))}`,
    );
  }
  return { sub: 'drop', name: validateSlotName(name, 'slot name') };
}

function slotTable(slots: readonly SlotHealth[]): string {
  const bytes = (n: number | null) => (n === null ? '-' : formatBytes(n));
  return formatTable(
    ['SLOT', 'PLUGIN', 'ACTIVE', 'CONFIRMED', 'LAG', 'LAG TIME', 'RETAINED', 'WAL STATUS'],
    slots.map((s) => [
      s.slot,
      s.plugin ?? '-',
      s.active ? `pid ${s.activePid ?? '?'}` : 'no',
      s.confirmedFlushLsn ?? '-',
      bytes(s.lagBytes),
      formatLagSeconds(s.lagSeconds),
      bytes(s.retainedWalBytes),
      s.walStatus ?? '-',
    ]),
  );
}

async function list(client: PgClientSlice, ctx: CommandContext): Promise<number> {
  const slots = await listSlotHealth(client, Number(ctx.config.slotWarnBytes));
  if (ctx.flags.get('json') === true) ctx.out(JSON.stringify(slots));
  else if (slots.length === 0) ctx.out('no logical replication slots in this database');
  else {
    const warnings = slots.flatMap((s) => s.warnings);
    ctx.out(
      [slotTable(slots), ...(warnings.length ? ['', ...warnings.map((w) => `warning: ${w}`)] : [])].join(
        '\n',
      ),
    );
  }
  return 0;
}

/** Who holds a slot, as far as pg_stat_activity says: ` (application_name 'x' from 10.0.0.5)`. */
async function backendWords(client: PgClientSlice, pid: number): Promise<string> {
  try {
    const row = (await client.query(BACKEND_SQL, [pid])).rows[0];
    if (!row) return '';
    const parts = [
      row.application_name ? `application_name '${String(row.application_name)}'` : '',
      row.client_addr ? `from ${String(row.client_addr)}` : '',
    ].filter(Boolean);
    return parts.length ? ` (${parts.join(', ')})` : '';
  } catch {
    // Who holds it is a courtesy; the PID is the finding.
    return '';
  }
}

function inUse(name: string, pid: number, who: string): ReplicationError {
  return new ReplicationError(
    'slot_in_use',
    `replication slot "${name}" is active: PID ${pid}${who} reads it. Stop that relay first (a slot a relay ` +
      `reads is not left behind), then run mailroom slot drop ${name} again; nothing was dropped`,
    { details: { slot: name, activePid: pid } },
  );
}

/**
 * Checks the slot is an inactive logical slot of this database, asks, and drops it and nothing
 * else (the publication stays: other slots may use it).
 */
async function drop(client: PgClientSlice, ctx: CommandContext, name: string): Promise<number> {
  const target = redactUrl(String(ctx.config.databaseUrl));
  const row = (await client.query(SLOT_SQL, [name])).rows[0];
  if (!row) {
    throw new ReplicationError(
      'slot_missing',
      `no replication slot "${name}" on ${target}; nothing was dropped (mailroom slot list shows the slots of this database)`,
      { details: { slot: name } },
    );
  }
  const database = (await client.query(CURRENT_DATABASE_SQL)).rows[0]?.database;
  if (row.slot_type !== 'logical') {
    throw new ReplicationError(
      'slot_mismatch',
      `replication slot "${name}" is a ${String(row.slot_type)} slot (a standby's or a backup tool's), not a relay's: ` +
        `mailroom slot drop only drops logical slots; nothing was dropped`,
      { details: { slot: name, slotType: row.slot_type } },
    );
  }
  if (row.database !== database) {
    throw new ReplicationError(
      'slot_mismatch',
      `replication slot "${name}" belongs to database ${String(row.database)}, not ${String(database)}: ` +
        `run mailroom slot drop with a --database-url of that database; nothing was dropped`,
      { details: { slot: name, database: row.database } },
    );
  }
  if (row.active_pid !== null && row.active_pid !== undefined) {
    const pid = Number(row.active_pid);
    throw inUse(name, pid, await backendWords(client, pid));
  }
  const health = await readSlotHealth(
    client,
    name,
    Number.MAX_SAFE_INTEGER,
    typeof row.plugin === 'string' ? row.plugin : null,
  );
  const kept = health?.retainedWalBytes;
  const question =
    `Drop replication slot "${name}" (inactive, confirmed ${health?.confirmedFlushLsn ?? '-'}, keeps ` +
    `${kept === null || kept === undefined ? 'an unknown amount' : formatBytes(kept)} of WAL)? A relay started on ` +
    `it again creates a new slot and delivers what was committed since from the outbox table ` +
    `(table-less messages committed meanwhile are lost).`;
  if (!(await confirm(question, { yes: ctx.flags.get('yes') === true, command: 'slot drop' }))) {
    process.stderr.write('aborted; nothing dropped\n');
    return 1;
  }
  try {
    await client.query(DROP_SLOT_SQL, [name]);
  } catch (err) {
    const code = (err as { code?: unknown })?.code;
    if (code === OBJECT_IN_USE) {
      // A relay took the slot while the question was open.
      const pid = Number((await client.query(SLOT_SQL, [name])).rows[0]?.active_pid ?? NaN);
      throw inUse(name, pid, Number.isFinite(pid) ? await backendWords(client, pid) : '');
    }
    if (code === UNDEFINED_OBJECT) {
      throw new ReplicationError(
        'slot_missing',
        `replication slot "${name}" was dropped by someone else meanwhile; nothing to do`,
        { details: { slot: name } },
      );
    }
    throw err;
  }
  // The slot's read mark goes with it: a relay that creates the slot again then starts fresh,
  // without a log_gap error for a drop that was meant. A schema without it (before version 10)
  // has nothing to forget.
  await client
    .query(`DELETE FROM ${quoteIdent(String(ctx.config.schema ?? 'mailroom'))}.log_mark WHERE slot = $1`, [
      name,
    ])
    .catch((err: unknown) => {
      const code = (err as { code?: unknown })?.code;
      if (code !== '42P01' && code !== '3F000') throw err;
    });
  if (ctx.flags.get('json') === true) ctx.out(JSON.stringify({ dropped: name, slot: health }));
  else {
    ctx.out(
      `dropped replication slot ${name}${kept === null || kept === undefined ? '' : ` (the server no longer keeps its ${formatBytes(kept)} of WAL)`}`,
    );
  }
  return 0;
}

async function withClient(
  config: ResolvedConfig,
  work: (client: PgClientSlice) => Promise<number>,
): Promise<number> {
  const client = await openSlotClient(config);
  try {
    return await work(client);
  } catch (err) {
    throw describeSlotError(err, config);
  } finally {
    await closeSlotClient(client);
  }
}

export const slotCommand: Command = {
  name: 'slot',
  summary: 'list the logical replication slots of the database, drop one a relay left behind',
  usage: 'mailroom slot list [--json] | mailroom slot drop <name> [--yes] [--json]',
  options: OPTIONS,
  positionals: 2,
  booleans: ['json', 'yes'],
  required: ['databaseUrl'],
  details: [
    'Relays started with --wakeup replication read the log through a slot (default <schema>_relay).',
    'The server keeps all WAL a slot has not confirmed: a slot whose relay is gone fills the disk.',
    '',
    'Subcommands:',
    '  list           every logical slot of this database: plugin, active (pid), confirmed position,',
    '                 lag (bytes, and time when the server measures it), WAL kept, wal_status;',
    '                 warnings for inactive slots and those over --slot-warn-bytes',
    '  drop <name>    drop one slot, and nothing else (the publication stays). Refused while a',
    '                 relay reads it (stop that relay first), for physical slots and for slots of',
    '                 another database',
    '',
    'drop asks "… [y/N]" on a terminal; without one (scripts, CI) pass --yes (-y), or it exits 2.',
    '--json: list prints an array of { slot, plugin, active, activePid, confirmedFlushLsn,',
    '  restartLsn, walStatus, currentLsn, retainedWalBytes, lagBytes, lagSeconds, warnings };',
    '  drop prints { dropped, slot } (the slot as it was).',
  ].join('\n'),
  async run(ctx) {
    const parsed = parse(ctx);
    if (parsed.sub === 'drop') {
      // Refuse before connecting: a script that forgot --yes learns it at once.
      requireConfirmable({ yes: ctx.flags.get('yes') === true, command: 'slot drop' });
      return withClient(ctx.config, (client) => drop(client, ctx, parsed.name));
    }
    return withClient(ctx.config, (client) => list(client, ctx));
  },
};
