import { ConfigError } from '../core/errors/config-error.js';
import { redactUrl } from '../core/redact.js';
import { SOURCE_NAME } from '../core/relay-group.js';
import { UsageError } from './cli-error.js';
import { parseStoreUrl } from './connect.js';
import type { CommandContext } from './command.js';
import { COMMON_OPTIONS, type FlagValue, type OptionSpec, type ResolvedConfig } from './options.js';
import type { SourceEntry } from './source-list.js';

export { parseSourceList, redactSourceList, type SourceEntry } from './source-list.js';

/** One database and schema a command works on, with its name and its own configuration. */
export interface ResolvedSource {
  name: string;
  databaseUrl: string;
  schema: string;
  /** The command's configuration with this source's `databaseUrl` and `schema`. */
  config: ResolvedConfig;
}

/**
 * The database settings of the commands that serve several sources (`relay`, `status`, `dlq`,
 * `verify`): `--database-url` and `--schema` may repeat, and `sources` lists pairs by name.
 */
export const SOURCE_OPTIONS: OptionSpec[] = [
  ...COMMON_OPTIONS.filter((o) => o.key === 'databaseUrl' || o.key === 'schema').map((o): OptionSpec => ({
    ...o,
    multiple: true,
    description: `${o.description}; ${
      o.key === 'databaseUrl'
        ? 'repeat it for several databases (the same --schema in each)'
        : 'repeat it for several schemas of one --database-url'
    }`,
  })),
  {
    key: 'sources',
    flag: 'sources',
    env: 'MAILROOM_SOURCES',
    type: 'sources',
    secret: true,
    valueName: 'json',
    description:
      'several databases or schemas by name: [{"name":"a","databaseUrl":"postgres://…","schema":"a"}, …] (a list in the config file); missing keys come from --database-url and --schema',
  },
];

/**
 * Where a source is, without user or password: `host:port/database` of a server's URL, the file
 * or directory of a SQLite or PGlite one.
 */
export function databaseTarget(url: string): string {
  try {
    const parsed = parseStoreUrl(url);
    if (parsed.kind === 'sqlite' || parsed.kind === 'pglite') return parsed.path ?? 'memory';
    const u = new URL(url);
    return `${u.hostname || 'localhost'}:${u.port || (parsed.kind === 'mysql' ? '3306' : '5432')}${u.pathname || '/'}`;
  } catch {
    return redactUrl(url);
  }
}

/** A name that {@link SOURCE_NAME} accepts, made from a schema or a database name. */
function nameFrom(text: string): string {
  const cleaned = text
    .replace(/[^A-Za-z0-9_.-]/g, '_')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, 63);
  return cleaned === '' ? 'source' : cleaned;
}

function databaseName(url: string): string {
  try {
    return decodeURIComponent(new URL(url).pathname.replace(/^\//, '')) || new URL(url).hostname;
  } catch {
    return 'database';
  }
}

function values(flag: FlagValue | undefined): string[] {
  if (flag === undefined || typeof flag === 'boolean') return [];
  return Array.isArray(flag) ? flag : [flag];
}

/**
 * The sources a command works on, from (first that applies):
 *
 * 1. the command line: `--database-url` and `--schema`, either of them repeated. One URL and
 *    M schemas: the M schemas of that database (named by schema). N URLs and one schema: that
 *    schema in each database (named by database). N URLs and M schemas, both above one, is
 *    refused: which pairs are meant is not clear; list them in `sources`. The other half comes
 *    from the environment or the config file as usual.
 * 2. `sources` (`--sources`, `MAILROOM_SOURCES`, or the config file's list): each entry's
 *    missing `databaseUrl` and `schema` come from the single settings.
 * 3. the single `databaseUrl` and `schema`: one source, named by its schema.
 *
 * Names must be unique and match {@link SOURCE_NAME}; two sources on the same database and
 * schema are refused.
 */
export function resolveSources(config: ResolvedConfig, flags: Map<string, FlagValue>): ResolvedSource[] {
  const urls = values(flags.get('database-url'));
  const schemas = values(flags.get('schema'));
  let entries: SourceEntry[];
  let derive: (e: { databaseUrl: string; schema: string }) => string;
  if (urls.length > 1 || schemas.length > 1) {
    if (flags.get('sources') !== undefined) {
      throw new ConfigError(
        'sources',
        'give the sources either with repeated --database-url/--schema or with --sources, not both',
      );
    }
    if (urls.length > 1 && schemas.length > 1) {
      throw new ConfigError(
        'databaseUrl',
        `${urls.length} --database-url and ${schemas.length} --schema flags: give one --database-url with several --schema ` +
          '(schemas of one database), or several --database-url with one --schema (the same schema in each database); ' +
          'for other pairs list them by name: --sources \'[{"name":"a","databaseUrl":"postgres://…","schema":"s1"}, …]\' ' +
          'or "sources" in the config file',
        { urls: urls.length, schemas: schemas.length },
      );
    }
    if (urls.length > 1) {
      entries = urls.map((databaseUrl) => ({ databaseUrl }));
      derive = (e) => nameFrom(databaseName(e.databaseUrl));
    } else {
      entries = schemas.map((schema) => ({ schema }));
      derive = (e) => nameFrom(e.schema);
    }
  } else if (config.sources !== undefined && urls.length === 0 && schemas.length === 0) {
    entries = JSON.parse(String(config.sources)) as SourceEntry[];
    const allSameUrl = new Set(entries.map((e) => e.databaseUrl ?? config.databaseUrl)).size === 1;
    derive = (e) =>
      nameFrom(
        allSameUrl ? e.schema : `${databaseName(e.databaseUrl)}${entries.length > 1 ? `.${e.schema}` : ''}`,
      );
  } else {
    entries = [{}];
    derive = (e) => nameFrom(e.schema);
  }
  const sources = entries.map((entry, i): ResolvedSource => {
    const databaseUrl =
      entry.databaseUrl ?? (config.databaseUrl === undefined ? undefined : String(config.databaseUrl));
    if (databaseUrl === undefined || databaseUrl === '') {
      throw new UsageError(
        entries.length === 1
          ? `missing ${COMMON_OPTIONS.find((o) => o.key === 'databaseUrl')?.description ?? 'database URL'}: pass --database-url or set DATABASE_URL`
          : `source ${entry.name ?? i + 1} has no databaseUrl: give it in the entry, or pass --database-url or set DATABASE_URL for all`,
        { key: 'databaseUrl' },
      );
    }
    const schema = entry.schema ?? String(config.schema ?? 'mailroom');
    const name = entry.name ?? derive({ databaseUrl, schema });
    if (!SOURCE_NAME.test(name)) {
      throw new ConfigError(
        'sources',
        `source name ${JSON.stringify(name)} is not allowed: 1 to 63 letters, digits, "_", "." or "-", starting with a letter or digit`,
        { value: name },
      );
    }
    return { name, databaseUrl, schema, config: { ...config, databaseUrl, schema } };
  });
  const byName = new Map<string, ResolvedSource>();
  const byPlace = new Map<string, ResolvedSource>();
  for (const source of sources) {
    const place = `${databaseTarget(source.databaseUrl)}#${source.schema}`;
    const same = byPlace.get(place);
    if (same) {
      throw new ConfigError(
        'sources',
        `sources ${JSON.stringify(same.name)} and ${JSON.stringify(source.name)} are the same database and schema ` +
          `(${databaseTarget(source.databaseUrl)}, schema ${source.schema}); list each once`,
        { value: source.name },
      );
    }
    byPlace.set(place, source);
    const twin = byName.get(source.name);
    if (twin) {
      throw new ConfigError(
        'sources',
        `two sources are named ${JSON.stringify(source.name)} (${databaseTarget(twin.databaseUrl)} schema ${twin.schema}, ` +
          `${databaseTarget(source.databaseUrl)} schema ${source.schema}); name them in a sources list: [{"name":"a",…},{"name":"b",…}]`,
        { value: source.name },
      );
    }
    byName.set(source.name, source);
  }
  return sources;
}

/**
 * Runs a single-source command once per source and reports each under its name: with `--json`,
 * one object keyed by source name (each value what the command prints for that source, or
 * `{ "error": "…" }`); as text, a header line per source. A source that fails does not stop the
 * others; the exit code is the worst one.
 */
export async function runPerSource(
  ctx: CommandContext,
  sources: readonly ResolvedSource[],
  runOne: (ctx: CommandContext) => Promise<number>,
): Promise<number> {
  if (sources.length === 1) {
    const [only] = sources as [ResolvedSource];
    return runOne({ ...ctx, config: only.config });
  }
  const json = ctx.flags.get('json') === true;
  // Each source's JSON as the command wrote it (payload tokens kept as they are), under its name.
  const report: string[] = [];
  let worst = 0;
  for (const source of sources) {
    // Text goes out as it comes, under the source's header (a confirmation question of
    // `dlq replay` must show which source it is about); JSON is gathered per source.
    const lines: string[] = [];
    if (!json)
      ctx.out(`== ${source.name} (${databaseTarget(source.databaseUrl)}, schema ${source.schema}) ==`);
    let code: number;
    let failure: string | undefined;
    try {
      code = await runOne({
        ...ctx,
        config: source.config,
        out: json ? (line) => lines.push(line) : ctx.out,
      });
    } catch (err) {
      code = err instanceof UsageError || (err as { code?: unknown })?.code === 'invalid_config' ? 2 : 1;
      failure = (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, ' ');
    }
    worst = Math.max(worst, code);
    if (!json) {
      if (failure !== undefined) ctx.out(`error: ${failure}`);
      ctx.out('');
      continue;
    }
    const value =
      failure !== undefined
        ? JSON.stringify({ error: failure })
        : lines.length === 1
          ? (lines[0] as string)
          : `[${lines.join(',')}]`;
    report.push(`${JSON.stringify(source.name)}:${value}`);
  }
  if (json) ctx.out(`{${report.join(',')}}`);
  return worst;
}
