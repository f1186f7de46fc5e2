import { redactUrl } from '../core/redact.js';
import { UsageError } from './cli-error.js';

/** One entry of a `sources` list (config file, `MAILROOM_SOURCES`, `--sources`). */
export interface SourceEntry {
  /** Name in logs, status and JSON output. @default derived from the schema or the database */
  name?: string;
  /** @default the `databaseUrl` setting (`--database-url`, `DATABASE_URL`) */
  databaseUrl?: string;
  /** @default the `schema` setting (`--schema`, `MAILROOM_SCHEMA`, `mailroom`) */
  schema?: string;
}

const ENTRY_KEYS = new Set(['name', 'databaseUrl', 'schema']);

/**
 * Checks a `sources` list: an array (config file) or its JSON text (environment, flag) of
 * `{ name?, databaseUrl?, schema? }`. Errors name the entry and the key; URLs are shown redacted.
 */
export function parseSourceList(raw: unknown, where: string): SourceEntry[] {
  let list = raw;
  if (typeof raw === 'string') {
    try {
      list = JSON.parse(raw);
    } catch {
      throw new UsageError(
        `${where} must be a JSON list such as [{"name":"a","databaseUrl":"postgres://…","schema":"a"}]; it is not valid JSON`,
        { key: 'sources' },
      );
    }
  }
  if (!Array.isArray(list) || list.length === 0) {
    throw new UsageError(
      `${where} must be a non-empty list of { name, databaseUrl, schema }, e.g. [{ "name": "a", "schema": "tenant_a" }]`,
      { key: 'sources' },
    );
  }
  return list.map((entry: unknown, i): SourceEntry => {
    const at = `${where} entry ${i + 1}`;
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
      throw new UsageError(`${at} must be an object { name, databaseUrl, schema }`, { key: 'sources' });
    }
    const out: SourceEntry = {};
    for (const [key, value] of Object.entries(entry as Record<string, unknown>)) {
      if (!ENTRY_KEYS.has(key)) {
        throw new UsageError(`${at} has the unknown key "${key}"; allowed: name, databaseUrl, schema`, {
          key: 'sources',
        });
      }
      if (typeof value !== 'string' || value === '') {
        const shown = key === 'databaseUrl' ? 'a value' : JSON.stringify(value);
        throw new UsageError(`${at}: ${key} must be a non-empty string, got ${shown}`, { key: 'sources' });
      }
      if (key === 'databaseUrl') {
        try {
          new URL(value);
        } catch {
          throw new UsageError(`${at}: databaseUrl is not a valid URL: ${redactUrl(value)}`, {
            key: 'sources',
          });
        }
      }
      out[key as keyof SourceEntry] = value;
    }
    return out;
  });
}

/** A sources list with the passwords taken out of its URLs, for printing. */
export function redactSourceList(list: readonly SourceEntry[]): SourceEntry[] {
  return list.map((e) =>
    e.databaseUrl === undefined ? { ...e } : { ...e, databaseUrl: redactUrl(e.databaseUrl) },
  );
}
