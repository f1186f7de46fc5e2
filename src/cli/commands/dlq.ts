import type { DeadLetterFilter, DeadLetterOpResult, OutboxStore } from '../../core/ports.js';
import type { DeadLetter } from '../../core/types.js';
import { isUuid } from '../../core/uuid.js';
import { DEFAULT_DEAD_LETTER_BATCH, type PostgresStore } from '../../stores/postgres/postgres-store.js';
import { UsageError } from '../cli-error.js';
import type { Command, CommandContext } from '../command.js';
import { confirm, requireConfirmable } from '../confirm.js';
import { ALL_STORE_KINDS, CONNECTION_OPTIONS, openStore } from '../connect.js';
import { formatDuration, parseDuration } from '../duration.js';
import { type FlagValue, type OptionSpec, type ResolvedConfig } from '../options.js';
import { resolveSources, runPerSource, SOURCE_OPTIONS } from '../sources.js';
import { formatTable, truncate } from '../table.js';
import { compactJson, indentJson, RawJson, stringifyWithRaw } from '../json-text.js';

const SUBCOMMANDS = ['list', 'show', 'replay', 'purge'] as const;
type Subcommand = (typeof SUBCOMMANDS)[number];

/** Rows listed when `dlq list` gets no `--limit`; replay and purge have no default limit. */
export const DEFAULT_LIST_LIMIT = 100;

/** Dead letters replayed or purged per statement; progress is reported after each. */
const BATCH = DEFAULT_DEAD_LETTER_BATCH;

const OPTIONS: OptionSpec[] = [
  ...SOURCE_OPTIONS,
  ...CONNECTION_OPTIONS,
  {
    key: 'topic',
    flag: 'topic',
    type: 'string',
    valueName: 'topic',
    description: 'only dead letters of this topic',
  },
  {
    key: 'key',
    flag: 'key',
    type: 'string',
    valueName: 'key',
    description: 'only dead letters with this message key',
  },
  {
    key: 'id',
    flag: 'id',
    type: 'string',
    valueName: 'uuid,…',
    repeatable: true,
    description: 'only these message ids (UUIDs; repeat the flag or separate with commas)',
  },
  {
    key: 'olderThan',
    flag: 'older-than',
    type: 'string',
    valueName: 'duration',
    description: 'only dead letters that died more than this long ago: 30s, 10m, 2h, 7d',
  },
  {
    key: 'limit',
    flag: 'limit',
    type: 'int',
    min: 1,
    max: 10_000_000,
    description: `at most this many, oldest first (list: default ${DEFAULT_LIST_LIMIT})`,
  },
];

/** The filter the flags describe, and words for it in a confirmation question. */
interface ParsedFilter {
  filter: DeadLetterFilter;
  /** False when no flag narrows the set: the operation covers every dead letter. */
  narrowed: boolean;
  description: string;
}

function parseIds(raw: FlagValue | undefined): string[] | undefined {
  if (raw === undefined) return undefined;
  const values = (Array.isArray(raw) ? raw : [String(raw)])
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v !== '');
  if (values.length === 0) throw new UsageError('--id needs at least one message id (a UUID)');
  for (const v of values) {
    if (!isUuid(v)) {
      throw new UsageError(
        `--id ${JSON.stringify(truncate(v, 60))} is not a UUID; message ids look like 0190a1b2-…`,
        {
          flag: 'id',
        },
      );
    }
  }
  return [...new Set(values.map((v) => v.toLowerCase()))];
}

function parseFilter(config: ResolvedConfig, flags: Map<string, FlagValue>, now = Date.now()): ParsedFilter {
  const filter: DeadLetterFilter = {};
  const words: string[] = [];
  const ids = parseIds(flags.get('id'));
  if (ids) {
    filter.ids = ids;
    words.push(ids.length === 1 ? `id ${ids[0]}` : `${ids.length} ids`);
  }
  if (config.topic !== undefined) {
    filter.topic = String(config.topic);
    words.push(`topic ${JSON.stringify(filter.topic)}`);
  }
  if (config.key !== undefined) {
    filter.key = String(config.key);
    words.push(`key ${JSON.stringify(filter.key)}`);
  }
  if (config.olderThan !== undefined) {
    const ms = parseDuration('older-than', String(config.olderThan));
    filter.deadBefore = new Date(now - ms);
    words.push(`dead more than ${formatDuration(ms)} ago`);
  }
  if (config.limit !== undefined) {
    filter.limit = Number(config.limit);
    words.push(`oldest ${filter.limit}`);
  }
  return { filter, narrowed: words.length > 0, description: words.join(', ') };
}

const JSON_TYPE_RE = /^(application|text)\/([\w.-]+\+)?json\s*(;|$)/i;

/** A dead letter as `--json` prints it. Fields are only ever added, never renamed. */
export interface DeadLetterJson {
  id: string;
  topic: string;
  key: string | null;
  type: string | null;
  contentType: string;
  headers: Record<string, string>;
  attempts: number;
  createdAt: string;
  deadAt: string;
  lastError: string | null;
  /**
   * `json`: `payload` is the JSON value, printed with the payload's own tokens (see
   * {@link stringifyWithRaw}); `base64`: `payload` is the bytes in base64.
   */
  payloadEncoding: 'json' | 'base64';
  payload: RawJson | string;
}

function decodePayload(
  d: DeadLetter,
): { payloadEncoding: 'json'; payload: RawJson } | { payloadEncoding: 'base64'; payload: string } {
  if (JSON_TYPE_RE.test(d.contentType)) {
    const text = d.payload.toString('utf8');
    try {
      JSON.parse(text);
      // Kept as text: a parsed value would print 12345678901234567890123 as 1.2345678901234568e+22.
      return { payloadEncoding: 'json', payload: new RawJson(compactJson(text)) };
    } catch {
      // Labelled JSON but is not: show the bytes as they are.
    }
  }
  return { payloadEncoding: 'base64', payload: d.payload.toString('base64') };
}

export function deadLetterJson(d: DeadLetter): DeadLetterJson {
  return {
    id: d.id,
    topic: d.topic,
    key: d.key,
    type: d.type,
    contentType: d.contentType,
    headers: d.headers,
    attempts: d.attempts,
    createdAt: d.createdAt.toISOString(),
    deadAt: d.deadAt.toISOString(),
    lastError: d.lastError,
    ...decodePayload(d),
  };
}

function shortTime(date: Date): string {
  return `${date.toISOString().slice(0, 19).replace('T', ' ')}Z`;
}

function showDeadLetter(d: DeadLetter): string {
  const decoded = decodePayload(d);
  const headers = Object.entries(d.headers);
  return [
    `id            ${d.id}`,
    `topic         ${d.topic}`,
    `key           ${d.key ?? '(none)'}`,
    `type          ${d.type ?? '(none)'}`,
    `attempts      ${d.attempts}`,
    `created at    ${d.createdAt.toISOString()}`,
    `dead at       ${d.deadAt.toISOString()}  (${formatDuration(Date.now() - d.deadAt.getTime())} ago)`,
    `content type  ${d.contentType}`,
    `headers       ${headers.length === 0 ? '(none)' : ''}`.trimEnd(),
    ...headers.map(([name, value]) => `  ${name}: ${value}`),
    'last error',
    `  ${d.lastError ?? '(none)'}`,
    `payload (${decoded.payloadEncoding === 'json' ? 'JSON' : `base64, ${d.payload.byteLength} bytes`})`,
    decoded.payloadEncoding === 'json' ? indentJson(decoded.payload.text) : decoded.payload,
  ].join('\n');
}

function listTable(rows: readonly DeadLetter[]): string {
  return formatTable(
    ['ID', 'TOPIC', 'KEY', 'ATTEMPTS', 'DEAD AT', 'LAST ERROR'],
    rows.map((d) => [
      d.id,
      truncate(d.topic, 40),
      d.key === null ? '-' : truncate(d.key, 30),
      String(d.attempts),
      shortTime(d.deadAt),
      truncate(d.lastError ?? '', 60),
    ]),
  );
}

async function list(store: OutboxStore, ctx: CommandContext, parsed: ParsedFilter): Promise<number> {
  const limited = parsed.filter.limit === undefined;
  const filter = limited ? { ...parsed.filter, limit: DEFAULT_LIST_LIMIT } : parsed.filter;
  const rows = await store.listDeadLetters(filter);
  if (ctx.flags.get('json') === true) ctx.out(stringifyWithRaw(rows.map(deadLetterJson)));
  else if (rows.length === 0) ctx.out(parsed.narrowed ? 'no dead letters match' : 'no dead letters');
  else ctx.out(listTable(rows));
  if (limited && rows.length === DEFAULT_LIST_LIMIT) {
    process.stderr.write(`showing the oldest ${DEFAULT_LIST_LIMIT}; pass --limit <n> to see more\n`);
  }
  return 0;
}

async function show(store: OutboxStore, ctx: CommandContext, id: string): Promise<number> {
  const [dead] = await store.listDeadLetters({ ids: [id] });
  if (!dead) {
    process.stderr.write(`mailroom dlq show: no dead letter with id ${id}\n`);
    return 1;
  }
  ctx.out(ctx.flags.get('json') === true ? stringifyWithRaw(deadLetterJson(dead)) : showDeadLetter(dead));
  return 0;
}

/** A dead letter a replay or purge changed, as `--json` lists it in `results`. */
export type DlqItemResult = DeadLetterOpResult;

/** What `replay`/`purge` need beyond the port: a count that reads no payloads, and batches. */
type DlqStore = Pick<
  PostgresStore,
  'countDeadLetters' | 'replayDeadLetters' | 'purgeDeadLetters' | 'listDeadLetters'
>;

async function mutate(
  store: DlqStore,
  ctx: CommandContext,
  action: 'replay' | 'purge',
  parsed: ParsedFilter,
): Promise<number> {
  const json = ctx.flags.get('json') === true;
  const done = action === 'replay' ? 'replayed' : 'purged';
  const verb = action === 'replay' ? 'Replay' : 'Purge';
  // Counted, not listed: a run over a million dead letters never holds their payloads (the
  // store moves or deletes them in batches inside the database).
  const { count: n, asOf } = await store.countDeadLetters(parsed.filter);
  const noun = n === 1 ? 'dead letter' : 'dead letters';
  if (n === 0) {
    if (json) ctx.out(JSON.stringify({ action, matched: 0, [done]: 0, skipped: 0, failed: 0, results: [] }));
    else ctx.out(parsed.narrowed ? 'no dead letters match' : 'no dead letters');
    return 0;
  }
  if (ctx.flags.get('dry-run') === true) {
    if (json) ctx.out(stringifyWithRaw((await store.listDeadLetters(parsed.filter)).map(deadLetterJson)));
    else {
      const shown = await store.listDeadLetters({
        ...parsed.filter,
        limit: Math.min(parsed.filter.limit ?? DEFAULT_LIST_LIMIT, DEFAULT_LIST_LIMIT),
      });
      const more =
        n > shown.length ? ` (the oldest ${shown.length} shown; dlq list --limit <n> shows more)` : '';
      ctx.out(`${listTable(shown)}\n(dry run) would ${action} ${n} ${noun}${more}`);
    }
    return 0;
  }
  const question = parsed.narrowed
    ? `${verb} ${n} ${noun} (${parsed.description})?`
    : `${verb} all ${n} ${noun}?`;
  if (!(await confirm(question, { yes: ctx.flags.get('yes') === true, command: `dlq ${action}` }))) {
    process.stderr.write('aborted; nothing changed\n');
    return 1;
  }

  // What the operator confirmed is what gets changed: dead letters that die while the question
  // is open (after the count, to the millisecond) are left alone.
  const countedUpTo = new Date(asOf.getTime() + 1);
  const deadBefore =
    parsed.filter.deadBefore !== undefined && parsed.filter.deadBefore < countedUpTo
      ? parsed.filter.deadBefore
      : countedUpTo;
  const filter: DeadLetterFilter = { ...parsed.filter, deadBefore };
  const results: DlqItemResult[] = [];
  const onBatch = (batch: DeadLetterOpResult[]) => {
    results.push(...batch);
    if (!json) for (const r of batch) ctx.out(`${r.id}  ${r.status}`);
    if (n > BATCH) process.stderr.write(`${done} ${results.length}/${n}\n`);
  };
  let failure: { error: unknown } | undefined;
  try {
    if (action === 'replay') await store.replayDeadLetters(filter, { batchSize: BATCH, onBatch });
    else await store.purgeDeadLetters(filter, { batchSize: BATCH, onBatch });
  } catch (error) {
    // Batches before the failing one are committed and already reported through onBatch.
    failure = { error };
  }

  const rest = Math.max(0, n - results.length);
  const summary = {
    action,
    matched: n,
    [done]: results.length,
    skipped: failure ? 0 : rest,
    failed: failure ? rest : 0,
  };
  if (json) ctx.out(JSON.stringify({ ...summary, results }));
  else {
    const skipped = summary.skipped
      ? `; ${summary.skipped} skipped (no longer dead letters${action === 'replay' ? ', or already in the outbox' : ''})`
      : '';
    const failed = summary.failed ? `; ${summary.failed} not ${done} because of the error below` : '';
    ctx.out(`${done} ${results.length} of ${n} ${noun}${skipped}${failed}`);
  }
  if (failure) throw failure.error;
  return 0;
}

function parseSubcommand(positionals: readonly string[]): { sub: Subcommand; id?: string } {
  const [sub, ...rest] = positionals;
  if (sub === undefined) {
    throw new UsageError(`dlq needs a subcommand: ${SUBCOMMANDS.join(', ')}; see mailroom dlq --help`);
  }
  if (!(SUBCOMMANDS as readonly string[]).includes(sub)) {
    throw new UsageError(
      `unknown dlq subcommand ${JSON.stringify(truncate(sub, 40))}; use one of ${SUBCOMMANDS.join(', ')}`,
    );
  }
  if (sub === 'show') {
    const [id, ...extra] = rest;
    if (id === undefined)
      throw new UsageError('dlq show needs the id of a dead letter: mailroom dlq show <id>');
    if (extra.length > 0)
      throw new UsageError(`dlq show takes one id, got extra ${JSON.stringify(extra[0])}`);
    if (!isUuid(id))
      throw new UsageError(
        `${JSON.stringify(truncate(id, 60))} is not a UUID; message ids look like 0190a1b2-…`,
      );
    return { sub, id: id.toLowerCase() };
  }
  if (rest.length > 0) {
    throw new UsageError(
      `dlq ${sub} takes no arguments, got ${JSON.stringify(truncate(rest[0] as string, 40))}; filter with --id, --topic, --key, --older-than`,
    );
  }
  return { sub: sub as Subcommand };
}

export const dlqCommand: Command = {
  name: 'dlq',
  summary: 'list, show, replay or purge dead letters',
  usage: 'mailroom dlq list|show <id>|replay|purge [filters] [--json] [--yes] [--dry-run]',
  options: OPTIONS,
  positionals: 2,
  booleans: ['json', 'yes', 'dry-run'],
  details: [
    '--json: print JSON instead of a table. --yes, -y: do not ask. --dry-run: change nothing.',
    '',
    'Subcommands:',
    '  list           table of dead letters (id, topic, key, attempts, dead at, last error)',
    '  show <id>      one dead letter with headers, last error and payload',
    '  replay         move dead letters back into the outbox (ids kept, attempts reset, due now)',
    '  purge          delete dead letters for good',
    '',
    'Filters (--id, --topic, --key, --older-than, --limit) all have to match. Without any,',
    'replay and purge act on ALL dead letters, and say so when they ask.',
    '',
    'replay and purge ask "… [y/N]" on a terminal; without one (scripts, CI) pass --yes (-y).',
    '--dry-run lists what they would change and changes nothing. They print one line per',
    `message and a total; with more than ${BATCH}, progress goes to stderr after each batch of ${BATCH}.`,
    '--json: list prints an array, show an object, replay/purge { action, matched, replayed|purged,',
    'skipped, failed, results: [{ id, status }] }. Payloads are JSON values when the content',
    'type is JSON, otherwise base64 (payloadEncoding says which).',
    '',
    'Several sources (repeated --database-url or --schema, or a sources list): each source in',
    'turn under a header line (replay and purge ask per source unless --yes); --json prints',
    '{ "<source>": …what one source prints… or { "error": "…" } }.',
  ].join('\n'),
  async run(ctx) {
    const { sub, id } = parseSubcommand(ctx.positionals);
    const parsed = parseFilter(ctx.config, ctx.flags);
    if ((sub === 'replay' || sub === 'purge') && ctx.flags.get('dry-run') !== true) {
      // Refuse before connecting: a script that forgot --yes learns it at once.
      requireConfirmable({ yes: ctx.flags.get('yes') === true, command: `dlq ${sub}` });
    }
    // Each source in turn, under its name; a source that fails does not stop the others.
    return runPerSource(ctx, resolveSources(ctx.config, ctx.flags), (one) => dlqOfOne(one, sub, id, parsed));
  },
};

/** A `dlq` subcommand on one database and schema. */
async function dlqOfOne(
  ctx: CommandContext,
  sub: Subcommand,
  id: string | undefined,
  parsed: ReturnType<typeof parseFilter>,
): Promise<number> {
  const store = await openStore(ctx.config, { kinds: ALL_STORE_KINDS });
  try {
    switch (sub) {
      case 'list':
        return await list(store, ctx, parsed);
      case 'show':
        return await show(store, ctx, id as string);
      case 'replay':
      case 'purge':
        return await mutate(store, ctx, sub, parsed);
    }
  } finally {
    await store.close();
  }
}
