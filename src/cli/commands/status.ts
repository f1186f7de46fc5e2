import { isStoreError } from '../../core/errors/store-error.js';
import type { AckCounts, OutboxStats } from '../../core/ports.js';
import { redactUrl } from '../../core/redact.js';
import { PostgresLedger } from '../../stores/postgres/ledger.js';
import { describeDbError } from '../../stores/postgres/postgres-errors.js';
import { openPgPool } from '../../stores/postgres/postgres-store.js';
import { MAX_TOPICS, type StatsCount } from '../../stores/postgres/postgres-stats.js';
import {
  ALL_STORE_KINDS,
  CONNECTION_OPTIONS,
  connectionSettings,
  openStore,
  parseStoreUrl,
} from '../connect.js';
import { formatDuration } from '../duration.js';
import { type OptionSpec, type ResolvedConfig } from '../options.js';
import { resolveSources, runPerSource, SOURCE_OPTIONS } from '../sources.js';
import { ConfigError } from '../../core/errors/config-error.js';
import {
  closeSlotClient,
  describeSlotError,
  formatBytes,
  formatLagSeconds,
  openSlotClient,
  readSlotHealth,
  SLOT_NAME,
  SLOT_WARN_OPTION,
  validateSlotName,
  type SlotHealth,
} from '../slot-health.js';
import { formatTable } from '../table.js';
import type { Command, CommandContext } from '../command.js';

const OPTIONS: OptionSpec[] = [
  ...SOURCE_OPTIONS,
  ...CONNECTION_OPTIONS,
  {
    key: 'slot',
    flag: 'slot',
    env: 'MAILROOM_SLOT',
    type: 'string',
    valueName: 'name',
    description: "the relay's logical replication slot to show (default <schema>_relay)",
  },
  SLOT_WARN_OPTION,
];

/** What `mailroom status --json` prints. Fields are only ever added, never renamed. */
export interface StatusReport extends OutboxStats {
  schema: string;
  /** True when a count is an estimate (a big table is not counted row by row). */
  approximate: boolean;
  /** Which counts are estimates. */
  estimated: StatsCount[];
  /** True when only the busiest topics are listed. */
  topicsTruncated: boolean;
  /**
   * True while the audit ledger of `mailroom verify` is on: every enqueue also writes a row
   * to `<schema>.ledger` until `mailroom verify stop`.
   */
  verifyLedger: boolean;
  /**
   * Messages sent with `ack`: awaiting an acknowledgement (resends included), acknowledged,
   * expired; callbacks not yet delivered and given up. Null on a schema older than version 8
   * (no acknowledgement tables: `mailroom migrate` adds them).
   */
  acks: AckCounts | null;
  /**
   * The relay's replication slot (`--slot`, default `<schema>_relay`): positions, lag in bytes
   * and seconds, WAL kept, warnings. Null when there is no such slot (relays use notify or poll).
   */
  slot: SlotHealth | null;
}

/** The slot `status` looks for: `--slot`, or `<schema>_relay` as the relay names it by default. */
function slotName(config: ResolvedConfig, schema: string): string {
  return config.slot === undefined ? `${schema}_relay` : validateSlotName(String(config.slot), '--slot');
}

/** Reads the slot's health on a connection of its own, with the command's deadlines. */
async function slotHealth(config: ResolvedConfig, name: string): Promise<SlotHealth | null> {
  const client = await openSlotClient(config);
  try {
    return await readSlotHealth(client, name, Number(config.slotWarnBytes));
  } catch (err) {
    throw describeSlotError(err, config);
  } finally {
    await closeSlotClient(client);
  }
}

function slotLines(slot: SlotHealth | null, name: string): string[] {
  if (slot === null) {
    const why = SLOT_NAME.test(name)
      ? `no slot ${name}: relays use notify or poll`
      : `"${name}" cannot be a slot name: pass --slot`;
    return [`slot          -  (${why})`];
  }
  const bytes = (n: number | null) => (n === null ? '-' : formatBytes(n));
  return [
    `slot          ${slot.slot}  ${slot.active ? `active (pid ${slot.activePid ?? '?'})` : 'inactive'}`,
    `  confirmed   ${slot.confirmedFlushLsn ?? '-'}`,
    `  lag         ${bytes(slot.lagBytes)}, ${formatLagSeconds(slot.lagSeconds)}`,
    `  retained    ${bytes(slot.retainedWalBytes)} of WAL  (wal_status ${slot.walStatus ?? '-'})`,
    ...slot.warnings.map((w) => `warning       ${w}`),
  ];
}

/**
 * The acknowledgement counts, or null when the schema predates them: `status` keeps working on
 * a schema not migrated yet, which is when an operator most needs it.
 */
async function ackCounts(store: { ackCounts(): Promise<AckCounts> }): Promise<AckCounts | null> {
  try {
    return await store.ackCounts();
  } catch (err) {
    if (isStoreError(err) && err.code === 'schema_missing') return null;
    throw err;
  }
}

/**
 * Whether the verify ledger's trigger is on. Asked on a connection of its own (the store keeps
 * its pool to itself), opened only after the store answered, with deadlines so that a server
 * that stops answering now cannot hang `status`.
 */
async function verifyLedgerOn(config: ResolvedConfig, schema: string): Promise<boolean> {
  const url = String(config.databaseUrl);
  const pool = await openPgPool(url, { max: 1, ...connectionSettings(config) });
  try {
    return await new PostgresLedger(pool, schema).enabled();
  } catch (err) {
    throw describeDbError(err, { schema, target: redactUrl(url) });
  } finally {
    await pool.end();
  }
}

function ackLines(acks: AckCounts | null, kept: boolean): string[] {
  if (acks === null && !kept) return ['acks          -  (this store keeps no acknowledgements)'];
  if (acks === null) return ['acks          -  (schema older than version 8: run `npx mailroom migrate`)'];
  const expired = acks.expired > 0 ? '  (mailroom ack expired lists them)' : '';
  return [
    `acks          ${acks.awaiting} awaiting, ${acks.acknowledged} acknowledged, ${acks.expired} expired${expired}`,
    `callbacks     ${acks.callbacksPending} pending, ${acks.callbacksDead} dead`,
  ];
}

function humanStatus(report: StatusReport, slotLooked: string, acksKept: boolean): string {
  const age = report.oldestAgeMs === null ? '-' : formatDuration(report.oldestAgeMs);
  // An estimate is marked with "~" (backlog, dead letters: about; in flight, scheduled: at least).
  const n = (field: StatsCount, value: number) => `${report.estimated.includes(field) ? '~' : ''}${value}`;
  const lines = [
    `schema        ${report.schema}`,
    `backlog       ${n('backlog', report.backlog)}`,
    `  in flight   ${n('inFlight', report.inFlight)}`,
    `  scheduled   ${n('scheduled', report.scheduled)}  (waiting for a retry or a delay)`,
    `oldest        ${age}`,
    `dead letters  ${n('deadLetters', report.deadLetters)}`,
    ...ackLines(report.acks, acksKept),
    `verify ledger ${report.verifyLedger ? 'on  (every enqueue is recorded for mailroom verify; `mailroom verify stop` ends it)' : 'off'}`,
    ...slotLines(report.slot, slotLooked),
  ];
  if (report.topics.length > 0) {
    const notes = [
      ...(report.topicsTruncated ? [`the ${MAX_TOPICS} busiest topics`] : []),
      ...(report.estimated.includes('topics') ? ['counts estimated from a sample'] : []),
    ];
    lines.push(
      '',
      formatTable(
        ['TOPIC', 'BACKLOG', 'DEAD'],
        report.topics.map((t) => [t.topic, n('topics', t.backlog), n('topics', t.deadLetters)]),
      ),
      ...(notes.length ? [`(${notes.join('; ')})`] : []),
    );
  }
  if (report.approximate) {
    lines.push(
      '',
      '~ estimated: too many rows to count on every call; in flight and scheduled are at least this many',
    );
  }
  return lines.join('\n');
}

export const statusCommand: Command = {
  name: 'status',
  summary:
    'show the backlog, messages in flight, the oldest message, dead letters per topic, acknowledgements, the verify ledger and the replication slot',
  usage:
    'mailroom status [--database-url URL]… [--schema NAME]… [--sources JSON] [--slot NAME] [--slot-warn-bytes N] [--json]',
  options: OPTIONS,
  booleans: ['json'],
  details: [
    'backlog counts every undelivered message; in flight and scheduled are parts of it',
    '(claimed by a relay now; waiting for a retry or a delay). oldest is the age of the oldest',
    'undelivered message (the head of the outbox). Topics: the 50 with the largest backlog.',
    'Up to 100,000 rows a table is counted exactly; beyond, counts are estimates, marked ~.',
    '',
    'acks: messages sent with ack, awaiting an acknowledgement (resends included), acknowledged',
    'and expired (mailroom ack lists them); callbacks: outcomes not yet POSTed, and given up.',
    '',
    'verify ledger: on while `mailroom verify` records every enqueue (one more row each).',
    '',
    'slot: the replication slot of relays started with --wakeup replication (--slot, default',
    '<schema>_relay), when it exists: active and by which pid, the confirmed position, the lag',
    '(bytes of WAL since the confirmed position, and the time when the server measures it),',
    'the WAL the server keeps for it and wal_status. A warning when it keeps more than',
    '--slot-warn-bytes or nobody reads it (mailroom slot drop removes a slot left behind).',
    '',
    '--json prints one object instead of the table:',
    '  { schema, backlog, inFlight, scheduled, oldestAgeMs, deadLetters,',
    '    topics: [{ topic, backlog, deadLetters }], approximate, estimated, topicsTruncated,',
    '    verifyLedger, acks: { awaiting, acknowledged, expired, callbacksPending,',
    '    callbacksDead } or null on a schema older than version 8,',
    '    slot: { slot, plugin, active, activePid, confirmedFlushLsn, restartLsn, walStatus,',
    '    currentLsn, retainedWalBytes, lagBytes, lagSeconds, warnings } or null without a slot }',
    '',
    'Several sources (repeated --database-url or --schema, or a sources list): one report per',
    'source under a header line; --json prints { "<source>": { …report… } or { "error": "…" } }.',
  ].join('\n'),
  async run(ctx) {
    const sources = resolveSources(ctx.config, ctx.flags);
    if (sources.length > 1 && ctx.config.slot !== undefined) {
      throw new ConfigError(
        'slot',
        '--slot names one replication slot; with several sources each shows its own <schema>_relay slot: leave --slot out',
      );
    }
    return runPerSource(ctx, sources, statusOfOne);
  },
};

/** `status` of one database and schema. */
async function statusOfOne({ config, flags, out }: CommandContext): Promise<number> {
  // A bad --slot is a usage error before anything connects.
  const slotLooked = slotName(config, String(config.schema));
  const store = await openStore(config, { kinds: ALL_STORE_KINDS });
  try {
    // The verify ledger and replication slots are PostgreSQL's, read on connections of their own.
    const postgres = parseStoreUrl(String(config.databaseUrl)).kind === 'postgres';
    const acksKept = 'ackCounts' in store;
    const stats = await store.stats();
    const report: StatusReport = {
      schema: String(config.schema),
      backlog: stats.backlog,
      inFlight: stats.inFlight,
      scheduled: stats.scheduled,
      oldestAgeMs: stats.oldestAgeMs === null ? null : Math.round(stats.oldestAgeMs),
      deadLetters: stats.deadLetters,
      topics: stats.topics,
      approximate: stats.approximate ?? false,
      estimated: stats.estimated ?? [],
      topicsTruncated: stats.topicsTruncated ?? false,
      verifyLedger: postgres ? await verifyLedgerOn(config, String(config.schema)) : false,
      acks: 'ackCounts' in store ? await ackCounts(store) : null,
      slot: postgres && SLOT_NAME.test(slotLooked) ? await slotHealth(config, slotLooked) : null,
    };
    out(flags.get('json') === true ? JSON.stringify(report) : humanStatus(report, slotLooked, acksKept));
    return 0;
  } finally {
    await store.close();
  }
}
