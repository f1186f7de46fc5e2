import { ConfigError } from '../../core/errors/config-error.js';
import { redactUrl } from '../../core/redact.js';
import type { PostgresStore } from '../../stores/postgres/postgres-store.js';
import { SagaCoordinator } from '../../tcc/saga-coordinator.js';
import { TccStateStore, type GlobalRecord, type GlobalState } from '../../tcc/state.js';
import { TccCoordinator } from '../../tcc/tcc-coordinator.js';
import { UsageError } from '../cli-error.js';
import type { Command, CommandContext } from '../command.js';
import { CONNECTION_OPTIONS, openStore } from '../connect.js';
import { formatDuration } from '../duration.js';
import { COMMON_OPTIONS, type OptionSpec } from '../options.js';
import { SHUTDOWN_CLOSE_MARGIN_MS } from './relay.js';
import { ShutdownDeadline } from '../shutdown-deadline.js';
import { formatTable, truncate } from '../table.js';

const SUBCOMMANDS = ['list', 'show', 'recover'] as const;
type Subcommand = (typeof SUBCOMMANDS)[number];

const STATES: readonly GlobalState[] = [
  'trying',
  'confirming',
  'confirmed',
  'cancelling',
  'cancelled',
  'running',
  'succeeded',
  'compensating',
  'compensated',
];
const UNFINISHED: readonly GlobalState[] = ['trying', 'confirming', 'cancelling', 'running', 'compensating'];

const OPTIONS: OptionSpec[] = [
  ...COMMON_OPTIONS.filter((o) => o.key === 'databaseUrl' || o.key === 'schema'),
  ...CONNECTION_OPTIONS,
  {
    key: 'tccState',
    flag: 'state',
    type: 'string',
    valueName: 'state[,state]',
    description: `list: only these states (${STATES.join(', ')}, or "unfinished")`,
  },
  {
    key: 'tccLimit',
    flag: 'limit',
    type: 'int',
    min: 1,
    max: 10_000,
    default: 50,
    description: 'list: at most this many, newest first',
  },
  {
    key: 'tccSecret',
    flag: 'http-secret',
    env: 'MAILROOM_TCC_SECRET',
    type: 'string',
    secret: true,
    description: 'recover: the secret HTTP participants verify (Standard Webhooks signatures), if they do',
  },
];

const FLAGS: Record<Subcommand, readonly string[]> = {
  list: ['json', 'state', 'limit'],
  show: ['json'],
  recover: ['once', 'http-secret', 'json'],
};

function parse(ctx: CommandContext): { sub: Subcommand; gid?: string } {
  const [sub, ...rest] = ctx.positionals;
  if (sub === undefined || !(SUBCOMMANDS as readonly string[]).includes(sub)) {
    throw new UsageError(
      sub === undefined
        ? `tcc needs a subcommand: ${SUBCOMMANDS.join(', ')}; see mailroom tcc --help`
        : `unknown tcc subcommand ${JSON.stringify(truncate(sub, 40))}; use one of ${SUBCOMMANDS.join(', ')}`,
    );
  }
  const s = sub as Subcommand;
  for (const flag of ['json', 'state', 'limit', 'once', 'http-secret']) {
    if (ctx.flags.has(flag) && !FLAGS[s].includes(flag)) {
      throw new UsageError(`tcc ${s} takes no --${flag}; see mailroom tcc --help`, { flag });
    }
  }
  if (s === 'show') {
    if (rest.length !== 1) throw new UsageError('tcc show needs one global id: mailroom tcc show <gid>');
    return { sub: s, gid: rest[0] as string };
  }
  if (rest.length > 0)
    throw new UsageError(
      `tcc ${s} takes no arguments, got ${JSON.stringify(truncate(rest[0] as string, 40))}`,
    );
  return { sub: s };
}

function parseStates(value: unknown): GlobalState[] | undefined {
  if (value === undefined) return undefined;
  const out: GlobalState[] = [];
  for (const word of String(value)
    .split(',')
    .map((w) => w.trim())
    .filter(Boolean)) {
    if (word === 'unfinished') out.push(...UNFINISHED);
    else if ((STATES as readonly string[]).includes(word)) out.push(word as GlobalState);
    else {
      throw new ConfigError(
        'state',
        `--state ${JSON.stringify(truncate(word, 40))} is not a state; use ${STATES.join(', ')} or unfinished`,
      );
    }
  }
  return out;
}

const age = (d: Date | null) => (d === null ? '-' : formatDuration(Math.max(0, Date.now() - d.getTime())));

function listTable(rows: readonly GlobalRecord[]): string {
  return formatTable(
    ['GID', 'KIND', 'STATE', 'AGE', 'ATTEMPTS', 'NEXT', 'LAST ERROR / REASON'],
    rows.map((r) => [
      truncate(r.gid, 40),
      r.kind,
      r.state,
      age(r.createdAt),
      String(r.attempts),
      UNFINISHED.includes(r.state)
        ? r.nextAttemptAt.getTime() > Date.now()
          ? `in ${formatDuration(r.nextAttemptAt.getTime() - Date.now())}`
          : 'due'
        : '-',
      truncate(r.lastError ?? r.reason ?? '', 60),
    ]),
  );
}

async function recover(store: PostgresStore, ctx: CommandContext): Promise<number> {
  const secret = ctx.config.tccSecret === undefined ? {} : { httpSecret: String(ctx.config.tccSecret) };
  const common = { store, logger: ctx.logger, ...secret };
  const tcc = new TccCoordinator(common);
  const saga = new SagaCoordinator(common);
  if (ctx.flags.get('once') === true) {
    try {
      const took = {
        tcc: await tcc.recoverOnce({ httpOnly: true }),
        saga: await saga.recoverOnce({ httpOnly: true }),
      };
      const unfinished = await new TccStateStore(store).list({ states: UNFINISHED, limit: 10_000 });
      if (ctx.flags.get('json') === true) ctx.out(JSON.stringify({ took, unfinished: unfinished.length }));
      else
        ctx.out(
          `recovery round: took ${took.tcc} TCC and ${took.saga} saga transactions; ${unfinished.length} unfinished now`,
        );
      return 0;
    } finally {
      await tcc.close();
      await saga.close();
    }
  }
  const deadline = new ShutdownDeadline({
    logger: ctx.logger,
    deadlineMs: 10_000 + SHUTDOWN_CLOSE_MARGIN_MS,
  });
  deadline.install();
  ctx.logger.info(
    'tcc recovery running (HTTP and message participants; in-process ones are left to their app)',
    {
      schema: store.schema,
    },
  );
  tcc.start({ httpOnly: true });
  saga.start({ httpOnly: true });
  const signal = await deadline.requested;
  ctx.logger.info('stopping tcc recovery', { signal });
  await Promise.all([tcc.close(), saga.close()]);
  return 0;
}

export const tccCommand: Command = {
  name: 'tcc',
  summary: 'list and inspect TCC/saga global transactions; run their recovery worker',
  usage:
    'mailroom tcc list [--state unfinished] [--limit N] [--json] | mailroom tcc show <gid> [--json] | ' +
    'mailroom tcc recover [--once] [--http-secret S]',
  options: OPTIONS,
  positionals: 2,
  booleans: ['json', 'once'],
  required: ['databaseUrl'],
  details: [
    'Coordinators (TccCoordinator, SagaCoordinator from mailroom/tcc) keep their state in the schema.',
    'recover finishes what crashed coordinators left: confirms and cancels retried until done,',
    'transactions still trying past their timeout cancelled. It reaches HTTP participants by their',
    "stored URL; transactions with in-process participants are left to the app's own coordinator.start().",
  ].join('\n'),
  async run(ctx) {
    const { sub, gid } = parse(ctx);
    const states = parseStates(ctx.config.tccState);
    const schema = String(ctx.config.schema);
    const store = await openStore(ctx.config);
    try {
      // A schema before version 12 has no TCC tables: say which command adds them.
      await store.check();
      const state = new TccStateStore(store);
      if (sub === 'list') {
        const rows = await state.list({ ...(states ? { states } : {}), limit: Number(ctx.config.tccLimit) });
        if (ctx.flags.get('json') === true) ctx.out(JSON.stringify(rows));
        else if (rows.length === 0)
          ctx.out(states ? 'no global transactions in those states' : 'no global transactions');
        else ctx.out(listTable(rows));
        return 0;
      }
      if (sub === 'show') {
        const record = await state.get(String(gid));
        if (record === null) {
          throw new UsageError(
            `no global transaction ${JSON.stringify(truncate(String(gid), 60))} in schema ${schema} (mailroom tcc list shows them)`,
          );
        }
        const branches = await state.branches(record.gid);
        if (ctx.flags.get('json') === true) ctx.out(JSON.stringify({ ...record, branches }));
        else {
          ctx.out(
            [
              `${record.kind} ${record.gid}: ${record.state} (created ${age(record.createdAt)} ago, attempts ${record.attempts})`,
              ...(record.reason ? [`reason: ${record.reason}`] : []),
              ...(record.lastError ? [`last error: ${record.lastError}`] : []),
              '',
              formatTable(
                ['BRANCH', 'PARTICIPANT', 'STATE', 'ATTEMPTS', 'LAST ERROR'],
                branches.map((b) => [
                  b.branch,
                  b.participant.kind === 'http'
                    ? redactUrl(b.participant.url)
                    : b.participant.kind === 'message'
                      ? `message ${b.participant.topic}`
                      : 'in-process',
                  b.state,
                  String(b.attempts),
                  truncate(b.lastError ?? '', 60),
                ]),
              ),
            ].join('\n'),
          );
        }
        return 0;
      }
      return await recover(store, ctx);
    } finally {
      await store.close();
    }
  },
};
