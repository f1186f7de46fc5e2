import { readFileSync, existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { rangeText, type Field } from '../core/options-schema.js';
import { redactUrl } from '../core/redact.js';
import { UsageError } from './cli-error.js';
import { parseSourceList, redactSourceList, type SourceEntry } from './source-list.js';

/** One configurable setting, reachable from a flag, an environment variable and the config file. */
export interface OptionSpec {
  /** Name in the config file and in the resolved configuration. */
  key: string;
  flag: string;
  /**
   * Environment variable of the setting. Absent for per-invocation flags (filters, payloads,
   * message fields): those come only from the command line, never from the environment or the
   * config file, so a stray variable cannot widen a destructive command.
   */
  env?: string;
  type: 'string' | 'int' | 'bool' | 'enum' | 'url' | 'sources';
  values?: readonly string[];
  default?: string | number | boolean;
  min?: number;
  max?: number;
  /** Printed redacted. */
  secret?: boolean;
  /** What the value is, for help: `--older-than <duration>`. @default derived from `type` */
  valueName?: string;
  /**
   * The flag may be given several times (`--header a=1 --header b=2`); `parseFlags` collects
   * the values, in order, as a `string[]`. Command-line only (no `env`); not in the resolved
   * configuration: commands read it from the parsed flags.
   */
  repeatable?: boolean;
  /**
   * The flag may be given several times, and the setting also comes from the environment and
   * the config file as usual (`--database-url`, `--schema` of the commands that serve several
   * sources: see {@link resolveSources}). `parseFlags` collects the values as a `string[]`; the
   * resolved configuration holds the last one.
   */
  multiple?: boolean;
  description: string;
}

export type ResolvedConfig = Record<string, string | number | boolean | undefined>;

/** A parsed flag: a value, `true`/`false` for booleans, every value of a repeatable flag. */
export type FlagValue = string | boolean | string[];

/**
 * The bounds and default of a library option, for the flag that sets it: one source for both
 * (`{ type: 'int', ...bounds(relayOptionsSchema.fields.batchSize) }`).
 */
export function bounds(field: Field<number>): Pick<OptionSpec, 'min' | 'max' | 'default'> {
  return {
    ...(field.min === undefined ? {} : { min: field.min }),
    ...(field.max === undefined ? {} : { max: field.max }),
    ...(field.default === undefined ? {} : { default: field.default }),
  };
}

/** Options every database-facing command takes. */
export const COMMON_OPTIONS: OptionSpec[] = [
  {
    key: 'databaseUrl',
    flag: 'database-url',
    env: 'DATABASE_URL',
    type: 'url',
    secret: true,
    description: 'PostgreSQL URL, postgres://user:password@host:5432/database',
  },
  {
    key: 'schema',
    flag: 'schema',
    env: 'MAILROOM_SCHEMA',
    type: 'string',
    default: 'mailroom',
    description: "schema of Mailroom's tables",
  },
  {
    key: 'logLevel',
    flag: 'log-level',
    env: 'MAILROOM_LOG_LEVEL',
    type: 'enum',
    values: ['debug', 'info', 'warn', 'error'],
    default: 'info',
    description: 'least severe log level printed',
  },
  {
    key: 'logFormat',
    flag: 'log-format',
    env: 'MAILROOM_LOG_FORMAT',
    type: 'enum',
    values: ['auto', 'json', 'pretty'],
    default: 'auto',
    description: 'auto: JSON lines when stderr is not a terminal',
  },
];

/**
 * Reads `--flag value`, `--flag=value`, `--bool`, `--no-bool`; rejects unknown flags. A flag
 * given twice keeps the last value, except a `repeatable` one, which keeps them all.
 */
export function parseFlags(
  argv: readonly string[],
  specs: readonly OptionSpec[],
  extraBooleans: readonly string[] = [],
): { flags: Map<string, FlagValue>; positionals: string[] } {
  const byFlag = new Map(specs.map((s) => [s.flag, s]));
  const flags = new Map<string, FlagValue>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positionals.push(arg);
      continue;
    }
    if (!arg.startsWith('--')) {
      if (arg === '-h') {
        flags.set('help', true);
        continue;
      }
      if (arg === '-y') {
        flags.set('yes', true);
        continue;
      }
      throw new UsageError(`unknown flag ${arg}; run with --help to see the flags`);
    }
    const eq = arg.indexOf('=');
    let name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    let value: string | boolean | undefined = eq === -1 ? undefined : arg.slice(eq + 1);
    if (name === 'help' || extraBooleans.includes(name)) {
      flags.set(name, true);
      continue;
    }
    let spec = byFlag.get(name);
    if (!spec && name.startsWith('no-') && byFlag.get(name.slice(3))?.type === 'bool') {
      spec = byFlag.get(name.slice(3));
      name = name.slice(3);
      value = false;
    }
    if (!spec) {
      const close = [...byFlag.keys(), 'help', ...extraBooleans].find((f) => f.startsWith(name.slice(0, 3)));
      throw new UsageError(
        `unknown flag --${name}${close ? ` (did you mean --${close}?)` : ''}; run with --help to see the flags`,
        { flag: name },
      );
    }
    if (value === undefined) {
      if (spec.type === 'bool') value = true;
      else {
        const next = argv[i + 1];
        if (next === undefined || (next.startsWith('--') && next.length > 2)) {
          throw new UsageError(`flag --${name} needs a value: ${spec.description}`, { flag: name });
        }
        value = next;
        i++;
      }
    }
    if ((spec.repeatable || spec.multiple) && typeof value === 'string') {
      const seen = flags.get(name);
      flags.set(name, [...(Array.isArray(seen) ? seen : []), value]);
      continue;
    }
    flags.set(name, value);
  }
  return { flags, positionals };
}

function coerce(spec: OptionSpec, raw: unknown, source: string): string | number | boolean {
  const where = `${source} ${source === 'flag' ? `--${spec.flag}` : source === 'environment' ? spec.env : spec.key}`;
  const shown = spec.secret && typeof raw === 'string' ? redactSecret(spec, raw) : JSON.stringify(raw);
  switch (spec.type) {
    case 'int': {
      const n =
        typeof raw === 'number'
          ? raw
          : typeof raw === 'string' && /^-?\d+$/.test(raw.trim())
            ? Number(raw)
            : NaN;
      if (
        !Number.isSafeInteger(n) ||
        (spec.min !== undefined && n < spec.min) ||
        (spec.max !== undefined && n > spec.max)
      ) {
        const range = spec.min === undefined ? '' : ` ${rangeText({ min: spec.min, max: spec.max })}`;
        throw new UsageError(`${where} must be a whole number${range}, got ${shown}`, { key: spec.key });
      }
      return n;
    }
    case 'bool': {
      if (typeof raw === 'boolean') return raw;
      if (typeof raw === 'string' && /^(true|1|yes|on)$/i.test(raw)) return true;
      if (typeof raw === 'string' && /^(false|0|no|off)$/i.test(raw)) return false;
      throw new UsageError(`${where} must be true or false, got ${shown}`, { key: spec.key });
    }
    case 'enum': {
      if (typeof raw !== 'string' || !spec.values?.includes(raw)) {
        throw new UsageError(`${where} must be one of ${spec.values?.join(', ')}, got ${shown}`, {
          key: spec.key,
        });
      }
      return raw;
    }
    case 'url': {
      if (typeof raw !== 'string' || raw.length === 0) {
        throw new UsageError(`${where} must be a URL, got ${shown}`, { key: spec.key });
      }
      try {
        new URL(raw);
      } catch {
        throw new UsageError(`${where} is not a valid URL: ${shown}`, { key: spec.key });
      }
      return raw;
    }
    case 'sources':
      return JSON.stringify(parseSourceList(raw, where));
    default: {
      if (typeof raw !== 'string')
        throw new UsageError(`${where} must be a string, got ${shown}`, { key: spec.key });
      return raw;
    }
  }
}

const DEFAULT_CONFIG_FILES = [
  'mailroom.config.json',
  'mailroom.config.ts',
  'mailroom.config.mjs',
  'mailroom.config.js',
];

/** Reads a config file: JSON, or a module whose default export is the settings object. */
async function readConfigFile(file: string): Promise<unknown> {
  const abs = resolve(file);
  if (!/\.(c|m)?(j|t)s$/.test(file)) {
    let text: string;
    try {
      text = readFileSync(abs, 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read config file ${file}: ${(err as Error).message}`);
    }
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new UsageError(`config file ${file} is not valid JSON: ${(err as Error).message}`);
    }
  }
  if (!existsSync(abs)) throw new UsageError(`cannot read config file ${file}: it does not exist`);
  let mod: { default?: unknown };
  try {
    if (/\.(c|m)?ts$/.test(file)) {
      // Node 20 cannot import TypeScript by itself; tsx can, when the project has it.
      let tsImport: (specifier: string, parent: string) => Promise<unknown>;
      try {
        ({ tsImport } = (await import('tsx/esm/api')) as { tsImport: typeof tsImport });
      } catch {
        throw new UsageError(
          `config file ${file} is TypeScript: install tsx (npm install -D tsx) to load it, or use mailroom.config.json`,
        );
      }
      mod = (await tsImport(pathToFileURL(abs).href, import.meta.url)) as { default?: unknown };
    } else {
      mod = (await import(pathToFileURL(abs).href)) as { default?: unknown };
    }
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(
      `cannot load config file ${file}: ${((err as Error).message ?? String(err)).split('\n')[0]}`,
    );
  }
  if (!('default' in mod)) {
    throw new UsageError(`config file ${file} must export its settings as the default export`);
  }
  // A .ts file outside an ESM package is loaded as CommonJS: its `export default` arrives as
  // the `default` property of the module object.
  const value = mod.default as Record<string, unknown> | null;
  if (
    typeof value === 'object' &&
    value !== null &&
    'default' in value &&
    Object.keys(value).every((k) => k === 'default' || k === '__esModule')
  ) {
    return value.default;
  }
  return value;
}

/**
 * Loads `--config FILE`, or the first of `./mailroom.config.{json,ts,mjs,js}` that exists, and
 * validates its keys against `specs` (every command's settings: one file serves them all).
 */
export async function loadConfigFile(
  path: string | undefined,
  specs: readonly OptionSpec[],
): Promise<Record<string, unknown>> {
  const file = path ?? DEFAULT_CONFIG_FILES.find((f) => existsSync(f));
  if (!file) return {};
  const data = await readConfigFile(file);
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new UsageError(`config file ${file} must hold an object of settings`);
  }
  const known = new Set(specs.filter((s) => s.env !== undefined).map((s) => s.key));
  for (const key of Object.keys(data)) {
    if (!known.has(key)) {
      throw new UsageError(`unknown key "${key}" in config file ${file}; allowed: ${[...known].join(', ')}`, {
        key,
      });
    }
  }
  return data as Record<string, unknown>;
}

/** Resolves settings with precedence defaults < config file < environment < flags. */
export function resolveConfig(
  specs: readonly OptionSpec[],
  flags: Map<string, FlagValue>,
  env: NodeJS.ProcessEnv,
  file: Record<string, unknown>,
): ResolvedConfig {
  const out: ResolvedConfig = {};
  for (const spec of specs) {
    if (spec.repeatable) continue;
    let value: string | number | boolean | undefined = spec.default;
    if (spec.env !== undefined) {
      if (file[spec.key] !== undefined) value = coerce(spec, file[spec.key], 'config file key');
      const fromEnv = env[spec.env];
      if (fromEnv !== undefined && fromEnv !== '') value = coerce(spec, fromEnv, 'environment');
    }
    const fromFlag = flags.get(spec.flag);
    if (Array.isArray(fromFlag)) {
      for (const one of fromFlag) value = coerce(spec, one, 'flag');
    } else if (fromFlag !== undefined) value = coerce(spec, fromFlag, 'flag');
    out[spec.key] = value;
  }
  return out;
}

/** Throws a UsageError for a required setting that is missing, naming every way to give it. */
export function requireOption(config: ResolvedConfig, specs: readonly OptionSpec[], key: string): string {
  const value = config[key];
  if (value === undefined || value === '') {
    const spec = specs.find((s) => s.key === key) as OptionSpec;
    throw new UsageError(
      `missing ${spec.description}: pass --${spec.flag}${spec.env ? ` or set ${spec.env}` : ''}`,
      { key },
    );
  }
  return String(value);
}

/** A secret option's value as printed: a URL without its password, any other secret not at all. */
function redactSecret(spec: OptionSpec, value: string): string {
  if (spec.type === 'sources') {
    try {
      return JSON.stringify(redactSourceList(JSON.parse(value) as SourceEntry[]));
    } catch {
      return '***';
    }
  }
  return spec.type === 'url' ? redactUrl(value) : '***';
}

/** The configuration as printable lines, secrets redacted. */
export function printableConfig(
  config: ResolvedConfig,
  specs: readonly OptionSpec[],
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const spec of specs) {
    const v = config[spec.key];
    if (spec.type === 'sources' && typeof v === 'string') {
      out[spec.key] = redactSourceList(JSON.parse(v) as SourceEntry[]);
      continue;
    }
    out[spec.key] = spec.secret && typeof v === 'string' ? redactSecret(spec, v) : v;
  }
  return out;
}

/** Help text for a command's options. */
export function formatOptions(specs: readonly OptionSpec[]): string {
  const rows = specs.map((s) => {
    const value = s.valueName ?? (s.type === 'enum' ? s.values?.join('|') : s.type === 'int' ? 'n' : s.type);
    const flag = `--${s.flag}${s.type === 'bool' ? '' : ` <${value}>`}`;
    const def = s.default !== undefined ? ` (default ${String(s.default)})` : '';
    const more = s.repeatable ? ' (repeatable)' : '';
    return [flag, `${s.description}${def}${more}${s.env ? `  [${s.env}]` : ''}`];
  });
  const width = Math.max(...rows.map((r) => (r[0] as string).length)) + 2;
  return rows.map(([f, d]) => `  ${(f as string).padEnd(width)}${d}`).join('\n');
}
