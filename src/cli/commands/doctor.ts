import { isStoreError } from '../../core/errors/store-error.js';
import type { OutboxStore } from '../../core/ports.js';
import { ALL_STORE_KINDS, CONNECTION_OPTIONS, openStore, parseStoreUrl } from '../connect.js';
import { formatDuration } from '../duration.js';
import type { OptionSpec, ResolvedConfig } from '../options.js';
import { closeSlotClient, openSlotClient, SLOT_WARN_OPTION } from '../slot-health.js';
import { databaseTarget, resolveSources, runPerSource, SOURCE_OPTIONS } from '../sources.js';
import { formatTable, truncate } from '../table.js';
import type { Command, CommandContext } from '../command.js';
import { bindingsCheck, transportCheck, type UnroutableTopic } from '../doctor/broker-checks.js';
import {
  CHECK_IDS,
  check,
  errorText,
  skip,
  type CheckStatus,
  type DoctorCheck,
  type DoctorReport,
} from '../doctor/check.js';
import { postgresChecks, unroutableTopics } from '../doctor/postgres-checks.js';

export type { DoctorCheck, DoctorReport } from '../doctor/check.js';

const OPTIONS: OptionSpec[] = [
  ...SOURCE_OPTIONS,
  ...CONNECTION_OPTIONS,
  {
    key: 'transport',
    flag: 'transport',
    env: 'MAILROOM_TRANSPORT',
    type: 'url',
    secret: true,
    description:
      'the broker the relays publish to, to check it answers: amqp://user:password@host:5672/vhost',
  },
  {
    key: 'exchange',
    flag: 'exchange',
    env: 'MAILROOM_EXCHANGE',
    type: 'string',
    default: 'mailroom',
    description: 'RabbitMQ exchange the relays publish to (checked passively: never declared)',
  },
  {
    key: 'webhookSecret',
    flag: 'webhook-secret',
    env: 'MAILROOM_WEBHOOK_SECRET',
    type: 'string',
    secret: true,
    description: 'signing secret of an http(s):// --transport (needed to open it); never printed',
  },
  {
    key: 'longTransactionMs',
    flag: 'long-transaction-ms',
    env: 'MAILROOM_DOCTOR_LONG_TRANSACTION_MS',
    type: 'int',
    min: 0,
    max: 7 * 86_400_000,
    default: 300_000,
    description: 'warn about transactions (and prepared transactions) open longer than this',
  },
  {
    key: 'staleMessageMs',
    flag: 'stale-message-ms',
    env: 'MAILROOM_DOCTOR_STALE_MESSAGE_MS',
    type: 'int',
    min: 0,
    max: 7 * 86_400_000,
    default: 60_000,
    description: 'warn when the oldest message has been due this long without a relay claiming it',
  },
  SLOT_WARN_OPTION,
];

const COUNTS_ZERO: Record<CheckStatus, number> = { ok: 0, warn: 0, fail: 0, skip: 0 };

/** The checks in report order, with a `skip` for any a store did not run. */
function ordered(checks: DoctorCheck[]): DoctorCheck[] {
  const byId = new Map(checks.map((c) => [c.id, c]));
  return CHECK_IDS.map((id) => byId.get(id) ?? skip(id, 'does not apply to this store'));
}

/** Checks of PostgreSQL: the store's schema and everything the server can tell. */
async function checkPostgres(config: ResolvedConfig): Promise<DoctorCheck[]> {
  const schema = String(config.schema ?? 'mailroom');
  let client: Awaited<ReturnType<typeof openSlotClient>>;
  try {
    client = await openSlotClient(config);
  } catch (err) {
    return [
      check('connection', 'fail', errorText(err), {
        fix: ['check --database-url (host, port, database, user, password) and that the server runs'],
      }),
      ...CHECK_IDS.filter((id) => id !== 'connection' && id !== 'transport' && id !== 'bindings').map((id) =>
        skip(id, 'no database connection'),
      ),
      await transportCheck(config),
      await bindingsCheck(config, null),
    ];
  }
  try {
    const [server] = (
      await client.query("SELECT current_setting('server_version') AS v, current_database() AS db")
    ).rows;
    const connection = check(
      'connection',
      'ok',
      `PostgreSQL ${String(server?.v)}, database ${String(server?.db)} at ${databaseTarget(String(config.databaseUrl))}`,
    );
    const found = await postgresChecks(client, schema, {
      longTransactionMs: Number(config.longTransactionMs),
      staleMessageMs: Number(config.staleMessageMs),
      slotWarnBytes: Number(config.slotWarnBytes),
    });
    let unroutable: UnroutableTopic[] | null = null;
    if (found.migrated) unroutable = await unroutableTopics(client, schema).catch(() => null);
    return [
      connection,
      ...found.checks,
      await transportCheck(config),
      await bindingsCheck(config, unroutable),
    ];
  } finally {
    await closeSlotClient(client);
  }
}

/** Checks of MySQL, SQLite and PGlite through the store: schema, relays, oldest message, broker. */
async function checkThroughStore(config: ResolvedConfig): Promise<DoctorCheck[]> {
  const kind = parseStoreUrl(String(config.databaseUrl)).kind;
  const serverOnly = 'reads PostgreSQL server statistics (a postgres:// --database-url)';
  let store: Awaited<ReturnType<typeof openStore<(typeof ALL_STORE_KINDS)[number]>>>;
  try {
    store = await openStore(config, { kinds: ALL_STORE_KINDS });
  } catch (err) {
    return [check('connection', 'fail', errorText(err)), await transportCheck(config)];
  }
  try {
    const checks: DoctorCheck[] = [
      check('connection', 'ok', `${kind} at ${databaseTarget(String(config.databaseUrl))}`),
    ];
    let migrated = true;
    try {
      await store.check();
      checks.push(check('schema', 'ok', 'the schema is at the version this Mailroom needs'));
    } catch (err) {
      migrated = false;
      const outdated = isStoreError(err);
      checks.push(
        check('schema', 'fail', errorText(err), {
          fix: outdated
            ? [`run mailroom migrate --database-url … --schema ${String(config.schema ?? 'mailroom')}`]
            : [],
        }),
      );
    }
    const port: OutboxStore = store;
    if (migrated && port.listRelays) {
      const relays = await port.listRelays();
      const alive = relays.filter((r) => r.alive);
      checks.push(
        check(
          'relays',
          alive.length > 0 ? (alive.length === relays.length ? 'ok' : 'warn') : 'warn',
          `${alive.length} relay(s) alive, ${relays.length - alive.length} dead`,
          {
            detail: relays.map(
              (r) =>
                `${r.owner}: ${r.alive ? r.state : 'DEAD'}, host ${r.host} pid ${r.pid}, last heartbeat ${formatDuration(r.heartbeatAgeMs)} ago, ${r.inFlight.messages} in flight`,
            ),
          },
        ),
      );
    } else {
      checks.push(skip('relays', `${kind} keeps no relay presence`));
    }
    if (migrated) {
      const stats = await store.stats();
      checks.push(
        check(
          'oldest-message',
          'ok',
          stats.oldestAgeMs === null
            ? 'the outbox is empty'
            : `the oldest message is ${formatDuration(stats.oldestAgeMs)} old (${stats.backlog} waiting, ${stats.inFlight} in flight, ${stats.scheduled} scheduled); why it waits is read on PostgreSQL only`,
        ),
      );
    }
    for (const id of [
      'blocked-keys',
      'xmin-horizon',
      'replication-slots',
      'bloat',
      'autovacuum',
      'notify-queue',
    ] as const) {
      checks.push(skip(id, serverOnly));
    }
    checks.push(await transportCheck(config), await bindingsCheck(config, null));
    return checks;
  } finally {
    await store.close();
  }
}

function humanReport(report: DoctorReport): string {
  const rows = report.checks.map((c) => [c.id, c.status.toUpperCase(), truncate(c.summary, 160)]);
  const lines = [
    `mailroom doctor: ${report.store} ${report.database}, schema ${report.schema}`,
    '',
    formatTable(['CHECK', 'STATUS', 'SUMMARY'], rows),
  ];
  for (const c of report.checks) {
    if (c.status === 'ok' || c.status === 'skip') continue;
    if (c.detail.length === 0 && c.fix.length === 0 && c.summary.length <= 160) continue;
    lines.push('', `${c.id} (${c.status}): ${c.summary}`);
    for (const d of c.detail) lines.push(`  ${d}`);
    for (const f of c.fix) lines.push(`  fix: ${f}`);
  }
  const { ok, warn, fail, skip: skipped } = report.counts;
  lines.push('', `${ok} ok, ${warn} warning(s), ${fail} failure(s), ${skipped} skipped`);
  return lines.join('\n');
}

export const doctorCommand: Command = {
  name: 'doctor',
  summary:
    'check a deployment and say what to do: schema, relays, stuck messages, vacuum, slots, NOTIFY queue, broker',
  usage:
    'mailroom doctor [--database-url URL]… [--schema NAME]… [--transport URL] [--exchange NAME] [--strict] [--json]',
  options: OPTIONS,
  booleans: ['json', 'strict'],
  details: [
    'Each check reports ok, warn, fail or skip, with what it found and what to do (fix:).',
    `Checks: ${CHECK_IDS.join(', ')}. See docs/doctor.md.`,
    '',
    'Exit code: 1 when a check fails; 0 otherwise (warnings included), unless --strict,',
    'which also exits 1 on a warning. 2 on a usage error.',
    '',
    '--json prints { database, schema, store, checkedAt, counts: { ok, warn, fail, skip }, exitCode,',
    '  checks: [{ id, status, summary, detail: [], fix: [] }] } (fields are only ever added).',
    'Several sources: one report per source; --json prints { "<source>": { …report… } }.',
  ].join('\n'),
  async run(ctx) {
    return runPerSource(ctx, resolveSources(ctx.config, ctx.flags), doctorOfOne);
  },
};

/** `doctor` of one database and schema. */
async function doctorOfOne({ config, flags, out }: CommandContext): Promise<number> {
  const url = String(config.databaseUrl);
  const kind = parseStoreUrl(url).kind;
  const checks = ordered(kind === 'postgres' ? await checkPostgres(config) : await checkThroughStore(config));
  const counts = { ...COUNTS_ZERO };
  for (const c of checks) counts[c.status]++;
  const strict = flags.get('strict') === true;
  const exitCode = counts.fail > 0 || (strict && counts.warn > 0) ? 1 : 0;
  const report: DoctorReport = {
    database: databaseTarget(url),
    schema: String(config.schema ?? 'mailroom'),
    store: kind,
    checkedAt: new Date().toISOString(),
    counts,
    exitCode,
    checks,
  };
  out(flags.get('json') === true ? JSON.stringify(report) : humanReport(report));
  return exitCode;
}
