import type { AckRecord, MessageStatus } from '../../core/ports.js';
import type { JsonValue } from '../../core/types.js';
import { isUuid } from '../../core/uuid.js';
import type { PostgresStore } from '../../stores/postgres/postgres-store.js';
import { UsageError } from '../cli-error.js';
import type { Command, CommandContext } from '../command.js';
import { CONNECTION_OPTIONS, openStore } from '../connect.js';
import { formatDuration, parseDuration } from '../duration.js';
import { COMMON_OPTIONS, type OptionSpec } from '../options.js';
import { formatTable, truncate } from '../table.js';

const SUBCOMMANDS = ['list', 'expired', 'show', 'prune'] as const;
type Subcommand = (typeof SUBCOMMANDS)[number];

/** What `--state` takes. `awaiting` covers messages being resent too, as `status` counts them. */
const STATES = ['awaiting', 'acknowledged', 'expired'] as const;
type StateFilter = (typeof STATES)[number];

/** Rows listed when `ack list` gets no `--limit`. */
export const DEFAULT_ACK_LIST_LIMIT = 100;

/** Records deleted per statement by `ack prune`; each statement is its own short transaction. */
export const ACK_PRUNE_BATCH = 1000;

const OPTIONS: OptionSpec[] = [
  ...COMMON_OPTIONS.filter((o) => o.key === 'databaseUrl' || o.key === 'schema'),
  ...CONNECTION_OPTIONS,
  {
    key: 'state',
    flag: 'state',
    type: 'enum',
    values: STATES,
    description: 'list: only messages in this state (awaiting includes those being resent)',
  },
  {
    key: 'limit',
    flag: 'limit',
    type: 'int',
    min: 1,
    max: 10_000_000,
    description: `list, expired: at most this many, most recently changed first (default ${DEFAULT_ACK_LIST_LIMIT})`,
  },
  {
    key: 'olderThan',
    flag: 'older-than',
    type: 'string',
    valueName: 'duration',
    description:
      'prune: delete acknowledged and expired records last changed more than this long ago: 1h, 7d',
  },
];

/** The flags each subcommand takes beyond the connection settings and `--json`. */
const SUBCOMMAND_FLAGS: Record<Subcommand, readonly string[]> = {
  list: ['state', 'limit'],
  expired: ['limit'],
  show: [],
  prune: ['older-than'],
};

/** A message with `ack` as `ack list --json` prints it. Fields are only ever added, never renamed. */
export interface AckRecordJson {
  id: string;
  /** `awaiting-ack`, `resending` (a copy is back in the outbox), `acknowledged` or `expired`. */
  state: AckRecord['state'];
  topic: string | null;
  key: string | null;
  resends: number;
  maxResends: number | null;
  deadline: string | null;
  sentAt: string | null;
  ackedAt: string | null;
  consumer: string | null;
  result: JsonValue | null;
  expiredAt: string | null;
}

/** One message's state as `ack show --json` prints it: {@link MessageStatus}, times as ISO strings. */
export interface MessageStatusJson {
  id: string;
  state: MessageStatus['state'];
  topic?: string;
  attempts?: number;
  resends?: number;
  ackedAt?: string;
  consumer?: string;
  result?: JsonValue;
  expiredAt?: string;
  ackDeadline?: string;
  lastError?: string;
}

const iso = (d: Date | null) => (d === null ? null : d.toISOString());

export function ackRecordJson(r: AckRecord): AckRecordJson {
  return {
    id: r.id,
    state: r.state,
    topic: r.topic,
    key: r.key,
    resends: r.resends,
    maxResends: r.maxResends,
    deadline: iso(r.deadline),
    sentAt: iso(r.sentAt),
    ackedAt: iso(r.ackedAt),
    consumer: r.consumer,
    result: r.result,
    expiredAt: iso(r.expiredAt),
  };
}

export function messageStatusJson(s: MessageStatus): MessageStatusJson {
  const out: MessageStatusJson = { id: s.id, state: s.state };
  if (s.topic !== undefined) out.topic = s.topic;
  if (s.attempts !== undefined) out.attempts = s.attempts;
  if (s.resends !== undefined) out.resends = s.resends;
  if (s.ackedAt !== undefined) out.ackedAt = s.ackedAt.toISOString();
  if (s.consumer !== undefined) out.consumer = s.consumer;
  if (s.result !== undefined) out.result = s.result;
  if (s.expiredAt !== undefined) out.expiredAt = s.expiredAt.toISOString();
  if (s.ackDeadline !== undefined) out.ackDeadline = s.ackDeadline.toISOString();
  if (s.lastError !== undefined) out.lastError = s.lastError;
  return out;
}

function shortTime(date: Date): string {
  return `${date.toISOString().slice(0, 19).replace('T', ' ')}Z`;
}

/** `in 4.2s` or `3m 10s ago`, from this machine's clock. */
function relative(date: Date, now = Date.now()): string {
  const ms = date.getTime() - now;
  return ms >= 0 ? `in ${formatDuration(ms)}` : `${formatDuration(-ms)} ago`;
}

/** The state column: `awaiting-ack` is shortened, the others are as the store names them. */
function stateCell(state: AckRecord['state']): string {
  return state === 'awaiting-ack' ? 'awaiting' : state;
}

/** The time that matters in each state: when it is resent or expires, or when it ended. */
function whenCell(r: AckRecord): string {
  switch (r.state) {
    case 'awaiting-ack':
      return r.deadline ? `deadline ${shortTime(r.deadline)}` : '-';
    case 'resending':
      return 'resend queued';
    case 'acknowledged':
      return r.ackedAt ? `acked ${shortTime(r.ackedAt)}` : '-';
    case 'expired':
      return r.expiredAt ? `expired ${shortTime(r.expiredAt)}` : '-';
  }
}

function resultText(result: JsonValue | null | undefined): string {
  return result === null || result === undefined ? '-' : JSON.stringify(result);
}

function listTable(rows: readonly AckRecord[]): string {
  return formatTable(
    ['ID', 'STATE', 'TOPIC', 'KEY', 'RESENDS', 'WHEN', 'CONSUMER', 'RESULT'],
    rows.map((r) => [
      r.id,
      stateCell(r.state),
      r.topic === null ? '-' : truncate(r.topic, 40),
      r.key === null ? '-' : truncate(r.key, 30),
      `${r.resends}/${r.maxResends ?? '-'}`,
      whenCell(r),
      r.consumer === null ? '-' : truncate(r.consumer, 30),
      truncate(resultText(r.result), 40),
    ]),
  );
}

/** What each state means, for `ack show`. */
const STATE_NOTES: Record<MessageStatus['state'], string> = {
  pending: 'in the outbox, waiting to be delivered (or resent)',
  'in-flight': 'in the outbox, claimed by a relay right now',
  'awaiting-ack': "delivered, waiting for the receiver's acknowledgement",
  acknowledged: 'the receiver acknowledged it',
  expired: 'no acknowledgement came after every resend; its cancellation was enqueued',
  dead: 'a dead letter: see mailroom dlq show',
  unknown: 'in no table: delivered and deleted (a message without ack), pruned, or never committed',
};

function showStatus(s: MessageStatus): string {
  const time = (d: Date | undefined) => (d === undefined ? '-' : `${d.toISOString()}  (${relative(d)})`);
  const value = <T>(v: T | undefined) => (v === undefined ? '-' : String(v));
  return [
    `id            ${s.id}`,
    `state         ${s.state}  (${STATE_NOTES[s.state]})`,
    `topic         ${value(s.topic)}`,
    `attempts      ${value(s.attempts)}`,
    `resends       ${value(s.resends)}`,
    `ack deadline  ${time(s.ackDeadline)}`,
    `acked at      ${time(s.ackedAt)}`,
    `consumer      ${value(s.consumer)}`,
    `result        ${resultText(s.result)}`,
    `expired at    ${time(s.expiredAt)}`,
    'last error',
    `  ${s.lastError ?? '(none)'}`,
  ].join('\n');
}

type AckStore = Pick<PostgresStore, 'listAcks' | 'status' | 'pruneAcks'>;

/**
 * Awaiting covers `awaiting-ack` and `resending` (the store filters one state at a time): the
 * messages being resent first, since their last change (the resend) came after every awaiting
 * message's delivery they could be compared with, then the awaiting ones, newest first.
 */
async function listAwaiting(store: AckStore, limit: number): Promise<AckRecord[]> {
  const resending = await store.listAcks({ state: 'resending', limit });
  const awaiting =
    resending.length < limit
      ? await store.listAcks({ state: 'awaiting-ack', limit: limit - resending.length })
      : [];
  return [...resending, ...awaiting];
}

async function list(store: AckStore, ctx: CommandContext, state: StateFilter | undefined): Promise<number> {
  const limit = ctx.config.limit === undefined ? DEFAULT_ACK_LIST_LIMIT : Number(ctx.config.limit);
  const rows =
    state === 'awaiting'
      ? await listAwaiting(store, limit)
      : await store.listAcks({ ...(state === undefined ? {} : { state }), limit });
  if (ctx.flags.get('json') === true) ctx.out(JSON.stringify(rows.map(ackRecordJson)));
  else if (rows.length === 0) ctx.out(state === undefined ? 'no messages with ack' : `no ${state} messages`);
  else ctx.out(listTable(rows));
  if (ctx.config.limit === undefined && rows.length === DEFAULT_ACK_LIST_LIMIT) {
    process.stderr.write(
      `showing the ${DEFAULT_ACK_LIST_LIMIT} most recently changed; pass --limit <n> to see more\n`,
    );
  }
  return 0;
}

async function show(store: AckStore, ctx: CommandContext, id: string): Promise<number> {
  const [status] = await store.status([id]);
  const s: MessageStatus = status ?? { id, state: 'unknown' };
  ctx.out(ctx.flags.get('json') === true ? JSON.stringify(messageStatusJson(s)) : showStatus(s));
  return 0;
}

async function prune(store: AckStore, ctx: CommandContext, olderThanMs: number): Promise<number> {
  let pruned = 0;
  let batches = 0;
  for (;;) {
    // Each batch is its own statement: a big backlog of records never holds locks for long.
    const n = await store.pruneAcks(olderThanMs, ACK_PRUNE_BATCH);
    pruned += n;
    batches++;
    if (n < ACK_PRUNE_BATCH) break;
    process.stderr.write(`pruned ${pruned} so far\n`);
  }
  if (ctx.flags.get('json') === true) ctx.out(JSON.stringify({ pruned, olderThanMs, batches }));
  else {
    const noun = pruned === 1 ? 'record' : 'records';
    ctx.out(
      `pruned ${pruned} acknowledged or expired ${noun} last changed more than ${formatDuration(olderThanMs)} ago`,
    );
  }
  return 0;
}

type Parsed =
  | { sub: 'list' | 'expired'; state?: StateFilter }
  | { sub: 'show'; id: string }
  | { sub: 'prune'; olderThanMs: number };

function parse(ctx: CommandContext): Parsed {
  const [sub, ...rest] = ctx.positionals;
  if (sub === undefined) {
    throw new UsageError(`ack needs a subcommand: ${SUBCOMMANDS.join(', ')}; see mailroom ack --help`);
  }
  if (!(SUBCOMMANDS as readonly string[]).includes(sub)) {
    throw new UsageError(
      `unknown ack subcommand ${JSON.stringify(truncate(sub, 40))}; use one of ${SUBCOMMANDS.join(', ')}`,
      { subcommand: sub },
    );
  }
  const s = sub as Subcommand;
  // A flag the subcommand does not read would be ignored silently: say so instead.
  for (const flag of ['state', 'limit', 'older-than']) {
    if (ctx.flags.has(flag) && !SUBCOMMAND_FLAGS[s].includes(flag)) {
      const hint =
        flag === 'state' && s === 'expired'
          ? ' (it lists the expired ones; ack list --state takes others)'
          : '';
      throw new UsageError(`ack ${s} takes no --${flag}${hint}; see mailroom ack --help`, { flag });
    }
  }
  if (s === 'show') {
    const [id, ...extra] = rest;
    if (id === undefined) throw new UsageError('ack show needs a message id: mailroom ack show <id>');
    if (extra.length > 0) {
      throw new UsageError(
        `ack show takes one id, got extra ${JSON.stringify(truncate(extra[0] as string, 40))}`,
      );
    }
    if (!isUuid(id)) {
      throw new UsageError(
        `${JSON.stringify(truncate(id, 60))} is not a UUID; message ids look like 0190a1b2-…`,
        {
          id,
        },
      );
    }
    return { sub: 'show', id: id.toLowerCase() };
  }
  if (rest.length > 0) {
    throw new UsageError(
      `ack ${s} takes no arguments, got ${JSON.stringify(truncate(rest[0] as string, 40))}; see mailroom ack --help`,
    );
  }
  if (s === 'prune') {
    const raw = ctx.config.olderThan;
    if (raw === undefined) {
      throw new UsageError(
        'ack prune needs --older-than <duration>: records last changed longer ago than that are deleted, e.g. --older-than 7d',
        { flag: 'older-than' },
      );
    }
    return { sub: 'prune', olderThanMs: parseDuration('older-than', String(raw)) };
  }
  if (s === 'expired') return { sub: s, state: 'expired' };
  return ctx.config.state === undefined
    ? { sub: 'list' }
    : { sub: 'list', state: ctx.config.state as StateFilter };
}

export const ackCommand: Command = {
  name: 'ack',
  summary: 'messages sent with ack: list them by state, show one, prune finished records',
  usage: 'mailroom ack list|expired|show <id>|prune [--state S] [--limit N] [--older-than D] [--json]',
  options: OPTIONS,
  positionals: 2,
  booleans: ['json'],
  required: ['databaseUrl'],
  details: [
    'Messages enqueued with ack wait after delivery for the receiver to acknowledge them, are',
    'resent (same id) when no acknowledgement comes in time, and expire after the last resend.',
    '',
    'Subcommands:',
    '  list           table: id, state, topic, key, resends/max, deadline or acked/expired time,',
    '                 consumer, result; most recently changed first',
    '  expired        list --state expired: the messages nobody acknowledged',
    "  show <id>      one message's state, wherever it is (outbox, ack records, dead letters)",
    '  prune          delete acknowledged and expired records older than --older-than, in batches',
    `                 of ${ACK_PRUNE_BATCH} (the relay also prunes them after ackRetentionMs)`,
    '',
    '--state: awaiting (waiting for an acknowledgement, or being resent), acknowledged, expired.',
    `--limit: list and expired show ${DEFAULT_ACK_LIST_LIMIT} unless given (and say so on stderr when they cut).`,
    '--json: list and expired print an array of { id, state, topic, key, resends, maxResends,',
    '  deadline, sentAt, ackedAt, consumer, result, expiredAt }; show prints { id, state, …',
    '  the fields known }; prune prints { pruned, olderThanMs, batches }.',
    'show of an id no table holds prints state unknown (exit 0).',
  ].join('\n'),
  async run(ctx) {
    const parsed = parse(ctx);
    const store = await openStore(ctx.config);
    try {
      switch (parsed.sub) {
        case 'list':
        case 'expired':
          return await list(store, ctx, parsed.state);
        case 'show':
          return await show(store, ctx, parsed.id);
        case 'prune':
          return await prune(store, ctx, parsed.olderThanMs);
      }
    } finally {
      await store.close();
    }
  },
};
