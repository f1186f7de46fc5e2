import { existsSync } from 'node:fs';
import { pendingMySqlSql } from '../../stores/mysql/migrate.js';
import { loadMigrations, pendingSql } from '../../stores/postgres/migrate.js';
import { PostgresStore } from '../../stores/postgres/postgres-store.js';
import { loadSqliteMigrations, pendingSqliteSql } from '../../stores/sqlite/migrate.js';
import {
  ALL_STORE_KINDS,
  checkStoreSchema,
  CONNECTION_OPTIONS,
  openStore,
  parseStoreUrl,
  storeLocation,
} from '../connect.js';
import { COMMON_OPTIONS, type OptionSpec, type ResolvedConfig } from '../options.js';
import type { Command } from '../command.js';

const OPTIONS: OptionSpec[] = [
  ...COMMON_OPTIONS.filter((o) => o.key === 'databaseUrl' || o.key === 'schema'),
  ...CONNECTION_OPTIONS,
];

/**
 * The dry run of a SQLite file or PGlite directory that does not exist yet (or `pglite:memory:`):
 * every migration is pending, so the SQL is known without opening anything, which would create
 * the file or directory (and, for PGlite, start PostgreSQL in WebAssembly for nothing).
 * Undefined for a database that exists.
 */
function emptyDatabasePlan(config: ResolvedConfig): string | undefined {
  const parsed = parseStoreUrl(String(config.databaseUrl));
  const schema = String(config.schema);
  if (parsed.kind !== 'sqlite' && parsed.kind !== 'pglite') return undefined;
  if (parsed.path !== undefined && existsSync(parsed.path)) return undefined;
  checkStoreSchema(parsed.kind, schema);
  const pending = <T extends { version: number; name: string }>(list: T[]) =>
    list.map((m) => ({ version: m.version, name: m.name, status: 'pending' as const }));
  return parsed.kind === 'sqlite'
    ? pendingSqliteSql(pending(loadSqliteMigrations()))
    : pendingSql(schema, pending(loadMigrations(schema)));
}

export const migrateCommand: Command = {
  name: 'migrate',
  summary: 'create or upgrade the outbox schema (safe to run twice, and from two processes at once)',
  usage: 'mailroom migrate [--database-url URL] [--schema NAME] [--dry-run]',
  options: OPTIONS,
  booleans: ['dry-run'],
  required: ['databaseUrl'],
  details: [
    'The URL picks the database: postgres://…, mysql://… or mariadb://…, sqlite:./app.db (the file is',
    'created when missing), pglite:./data (a PGlite data directory, created when missing).',
    '--schema is the PostgreSQL/PGlite schema; for MySQL the prefix of the tables (mailroom makes',
    'mailroom_outbox…) in the database of the URL; SQLite has one outbox per file (mailroom_*).',
    '--dry-run prints the SQL that would run, and changes nothing: for a SQLite file or PGlite',
    'directory that does not exist yet (or pglite:memory:), the whole schema, creating nothing.',
  ].join('\n'),
  async run({ config, flags, out }) {
    const dryRun = flags.get('dry-run') === true;
    const plan = dryRun ? emptyDatabasePlan(config) : undefined;
    if (plan !== undefined) {
      out(plan);
      return 0;
    }
    const url = String(config.databaseUrl);
    const store = await openStore(config, { kinds: ALL_STORE_KINDS, create: !dryRun });
    try {
      const where = storeLocation(store, url);
      if (dryRun) {
        // Each store's results, with the SQL text its own migrations would run.
        let pending: boolean;
        let sql: string;
        if (store instanceof PostgresStore) {
          const results = await store.migrate({ dryRun });
          pending = results.some((r) => r.status === 'pending');
          sql = pendingSql(store.schema, results);
        } else if ('tablePrefix' in store) {
          const results = await store.migrate({ dryRun });
          pending = results.some((r) => r.status === 'pending');
          sql = pendingMySqlSql(store.database, store.tablePrefix, results);
        } else {
          const results = await store.migrate({ dryRun });
          pending = results.some((r) => r.status === 'pending');
          sql = pendingSqliteSql(results);
        }
        out(pending ? sql : `-- ${where} is up to date; nothing to apply`);
        return 0;
      }
      const results = await store.migrate();
      for (const r of results) {
        out(`${String(r.version).padStart(6, '0')}_${r.name}: ${r.status}`);
      }
      const applied = results.filter((r) => r.status === 'applied').length;
      out(applied ? `${where}: applied ${applied} migration(s)` : `${where} is up to date`);
      return 0;
    } finally {
      await store.close();
    }
  },
};
