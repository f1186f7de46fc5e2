import { StoreError } from '../../core/errors/store-error.js';
import { redactUrl } from '../../core/redact.js';
import { describeDbError } from '../../stores/postgres/postgres-errors.js';
import { PostgresLedger } from '../../stores/postgres/ledger.js';
import { openPgPool } from '../../stores/postgres/postgres-store.js';
import { RabbitMqCollector } from '../../verify/rabbitmq-collector.js';
import { verifyDeliveries, type VerifyReport } from '../../verify/verify-report.js';
import { quoteIdent } from '../../stores/sql-identifier.js';
import type { PgQueryable } from '../../stores/postgres/postgres-driver.js';
import { UsageError } from '../cli-error.js';
import { CONNECTION_OPTIONS, connectionSettings, openStore } from '../connect.js';
import { formatDuration } from '../duration.js';
import { type OptionSpec, type ResolvedConfig } from '../options.js';
import { resolveSources, SOURCE_OPTIONS, type ResolvedSource } from '../sources.js';
import { ConfigError } from '../../core/errors/config-error.js';
import type { Command } from '../command.js';

const OPTIONS: OptionSpec[] = [
  ...SOURCE_OPTIONS,
  ...CONNECTION_OPTIONS,
  {
    key: 'transport',
    flag: 'transport',
    env: 'MAILROOM_TRANSPORT',
    type: 'url',
    secret: true,
    description: 'the broker the relay delivers to: amqp://user:password@host:5672/vhost',
  },
  {
    key: 'exchange',
    flag: 'exchange',
    env: 'MAILROOM_EXCHANGE',
    type: 'string',
    default: 'mailroom',
    description: 'exchange the relay publishes to',
  },
  {
    key: 'verifyQueue',
    flag: 'queue',
    env: 'MAILROOM_VERIFY_QUEUE',
    type: 'string',
    default: 'mailroom.verify',
    description: "the verifier's durable queue",
  },
  {
    key: 'binding',
    flag: 'binding',
    env: 'MAILROOM_VERIFY_BINDING',
    type: 'string',
    default: '#',
    description: 'routing pattern of the messages to verify (e.g. orders.#)',
  },
  {
    key: 'idleMs',
    flag: 'idle-ms',
    type: 'int',
    min: 100,
    max: 600000,
    default: 2000,
    description: 'check: consider the queue drained after this long without a delivery',
  },
  {
    key: 'waitMs',
    flag: 'wait-ms',
    type: 'int',
    min: 0,
    max: 86400000,
    default: 60000,
    description: 'check: wait at most this long for the outbox to empty before comparing',
  },
];

async function openPool(config: ResolvedConfig) {
  const url = String(config.databaseUrl);
  // First contact through the store, with its deadlines and explanations (a server that is not
  // PostgreSQL, a schema to migrate), the same as every other command gives.
  const store = await openStore(config, {
    kinds: ['postgres'],
    needs: 'the verify ledger is a PostgreSQL trigger and table, read over connections of its own',
  });
  try {
    await store.check();
  } finally {
    await store.close();
  }
  // The ledger needs a pool of its own (the store keeps its pool to itself), with the same
  // deadlines: reading a soak's ledger may need a larger --statement-timeout-ms.
  return openPgPool(url, { max: 2, ...connectionSettings(config) });
}

function messages(n: number): string {
  return `${n} message${n === 1 ? '' : 's'}`;
}

/** How often `check` says how many messages are still in the outbox while it waits. */
const WAIT_PROGRESS_MS = 5000;

/**
 * Waits up to `waitMs` for the outbox to empty, so what the relay still owes is delivered
 * before the comparison. Polls with EXISTS (one index probe) and counts the rows only for the
 * progress lines, at most every {@link WAIT_PROGRESS_MS}: a count reads the whole table.
 */
async function waitForEmptyOutbox(
  pool: PgQueryable,
  schema: string,
  waitMs: number,
  progress: (line: string) => void,
): Promise<void> {
  const table = `${quoteIdent(schema)}.outbox`;
  const empty = async () =>
    (await pool.query(`SELECT NOT EXISTS (SELECT 1 FROM ${table}) AS empty`)).rows[0]?.empty === true;
  const left = async () => Number((await pool.query(`SELECT count(*) AS n FROM ${table}`)).rows[0]?.n);
  if (await empty()) return;
  const deadline = Date.now() + waitMs;
  progress(`waiting up to ${formatDuration(waitMs)} for the outbox to empty: ${messages(await left())} left`);
  let nextLine = Date.now() + WAIT_PROGRESS_MS;
  for (;;) {
    if (await empty()) {
      progress('the outbox is empty');
      return;
    }
    if (Date.now() >= deadline) {
      progress(`${messages(await left())} still in the outbox; reported as pending`);
      return;
    }
    if (Date.now() >= nextLine) {
      progress(`${messages(await left())} left in the outbox`);
      nextLine = Date.now() + WAIT_PROGRESS_MS;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

function printReport(report: VerifyReport, out: (line: string) => void): void {
  const list = (ids: string[]) =>
    ids.length ? `  ${ids.slice(0, 20).join(', ')}${ids.length > 20 ? ', …' : ''}` : '';
  out(`committed      ${report.committed}`);
  out(`received       ${report.received}  (${report.delivered} distinct)`);
  out(`lost           ${report.lost.length}${list(report.lost)}`);
  out(`phantom        ${report.phantom.length}${list(report.phantom)}`);
  out(`out of order   ${report.orderViolations.length}`);
  for (const v of report.orderViolations.slice(0, 20)) {
    out(
      `  key ${JSON.stringify(v.key)}: ${v.late} committed before ${v.overtaken} was written, delivered after it`,
    );
  }
  out(`duplicates     ${report.duplicates}  (same id each time)`);
  out(`dead letters   ${report.deadLettered.length}${list(report.deadLettered)}`);
  out(`pending        ${report.pending.length}  (still in the outbox)`);
  if (report.unverifiable.length) {
    out(
      `unverifiable   ${report.unverifiable.length}  (in flight when verification started; may have been published before the queue existed)`,
    );
  }
  out(report.ok ? 'verify: OK' : 'verify: FAILED');
}

export const verifyCommand: Command = {
  name: 'verify',
  summary: 'prove nothing was lost: compare what was committed with what the broker delivered',
  usage: 'mailroom verify start|check|stop --database-url URL --transport amqp://… [options]',
  options: OPTIONS,
  positionals: 1,
  booleans: ['json', 'keep'],
  details: [
    'start  turn the audit ledger on (every committed enqueue is recorded) and bind a durable',
    '       queue to the exchange that keeps a copy of every delivered message',
    'check  read the queue, wait for the outbox to drain, then report lost (committed, never',
    '       delivered), phantom (delivered, never committed), per-key order violations and',
    '       duplicates; exit code 1 when anything is lost, phantom or out of order. Repeatable:',
    '       deliveries are saved in <schema>.ledger_received',
    'stop   turn the ledger off, empty it and delete the queue (--keep keeps both)',
    '',
    'The relay must publish with the default exchange type (topic). The ledger costs one extra',
    'row per message while it is on.',
  ].join('\n'),
  async run({ config: settings, flags, positionals, out }) {
    const sources = resolveSources(settings, flags);
    if (sources.length > 1) {
      // One queue receives what the relay delivers from every source, and a delivery does not
      // say which source it came from: checked against one source's ledger, the others' messages
      // would all count as phantoms.
      throw new ConfigError(
        'sources',
        `verify checks one source at a time (${sources.length} given: ${sources.map((s) => s.name).join(', ')}): ` +
          "the verifier's queue cannot tell which source a delivery came from. Run it per source with one " +
          '--database-url and --schema, while only that source is relayed',
      );
    }
    const config = (sources[0] as ResolvedSource).config;
    const action = positionals[0];
    if (action !== 'start' && action !== 'check' && action !== 'stop') {
      throw new UsageError(
        `verify needs an action: start, check or stop${action ? `, got ${JSON.stringify(action)}` : ''}`,
      );
    }
    if (config.transport === undefined) {
      throw new UsageError('missing the broker URL: pass --transport or set MAILROOM_TRANSPORT');
    }
    const pool = await openPool(config);
    const schema = String(config.schema);
    const ledger = new PostgresLedger(pool, schema);
    // Progress of `check` goes to stderr, so stdout holds only the report (`--json` stays
    // parseable); a line per phase and per 10,000 deliveries read, each with the time so far.
    const started = Date.now();
    const progress = (line: string) =>
      process.stderr.write(`verify check: ${line} (${formatDuration(Date.now() - started)})\n`);
    const collector = new RabbitMqCollector({
      url: String(config.transport),
      exchange: String(config.exchange),
      queue: String(config.verifyQueue),
      binding: String(config.binding),
      ack: 'manual',
      ...(action === 'check' ? { onProgress: (n: number) => progress(`${n} deliveries read`) } : {}),
    });
    const target = redactUrl(String(config.databaseUrl));
    try {
      try {
        await ledger.enabled();
      } catch (err) {
        const described = describeDbError(err, { schema, target });
        if ((err as { code?: string }).code === '42P01' || (err as { code?: string }).code === '42704') {
          throw new StoreError(
            'schema_outdated',
            `the audit ledger is missing in schema "${schema}": run \`npx mailroom migrate --schema ${schema}\``,
            { cause: err },
          );
        }
        throw described;
      }
      if (action === 'start') {
        const { baseline } = await ledger.start(() => collector.attach());
        out(
          `ledger on in schema "${schema}"; queue ${collector.queue} bound to ${collector.exchange} (${String(config.binding)})`,
        );
        out(`${baseline} message(s) already in the outbox are checked for loss, not for order`);
        return 0;
      }
      if (action === 'stop') {
        if (flags.get('keep') === true) {
          await ledger.setEnabled(false);
          out('ledger off; entries and queue kept');
          return 0;
        }
        await ledger.setEnabled(false);
        const n = await ledger.clear();
        await collector.attach();
        await collector.close({ deleteQueue: true });
        out(`ledger off; ${n} entries removed; queue ${collector.queue} deleted`);
        return 0;
      }
      // check
      if (!(await ledger.enabled())) {
        throw new UsageError(`the ledger is off in schema "${schema}": run \`mailroom verify start\` first`);
      }
      await collector.attach();
      await collector.start();
      await waitForEmptyOutbox(pool, schema, Number(config.waitMs), progress);
      const idleMs = Number(config.idleMs);
      progress(`reading queue ${collector.queue} until nothing arrives for ${formatDuration(idleMs)}`);
      await collector.settle(idleMs, Math.max(idleMs * 5, 60_000));
      progress(`${collector.ids.length} deliveries read; saving them and reading the ledger`);
      await ledger.recordReceived(collector.ids);
      collector.ackAll();
      const [entries, received, state] = [
        await ledger.entries(),
        await ledger.received(),
        await ledger.state(),
      ];
      progress(
        `comparing ${entries.length} ledger entries with ${received.length} deliveries recorded since start`,
      );
      const report = verifyDeliveries(entries, received, state);
      progress('done');
      if (flags.get('json') === true) out(JSON.stringify(report));
      else printReport(report, out);
      return report.ok ? 0 : 1;
    } finally {
      await collector.close();
      await pool.end();
    }
  },
};
