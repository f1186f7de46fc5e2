import { pendingSql } from '../../stores/postgres/migrate.js';
import { CONNECTION_OPTIONS, openStore } from '../connect.js';
import { COMMON_OPTIONS, type OptionSpec } from '../options.js';
import type { Command } from '../command.js';

const OPTIONS: OptionSpec[] = [
  ...COMMON_OPTIONS.filter((o) => o.key === 'databaseUrl' || o.key === 'schema'),
  ...CONNECTION_OPTIONS,
];

export const migrateCommand: Command = {
  name: 'migrate',
  summary: 'create or upgrade the outbox schema (safe to run twice, and from two processes at once)',
  usage: 'mailroom migrate [--database-url URL] [--schema NAME] [--dry-run]',
  options: OPTIONS,
  booleans: ['dry-run'],
  required: ['databaseUrl'],
  async run({ config, flags, out }) {
    const store = await openStore(config);
    try {
      const dryRun = flags.get('dry-run') === true;
      const results = await store.migrate({ dryRun });
      if (dryRun) {
        const pending = results.filter((r) => r.status === 'pending');
        if (pending.length === 0) out(`-- schema "${store.schema}" is up to date; nothing to apply`);
        else out(pendingSql(store.schema, results));
        return 0;
      }
      for (const r of results) {
        out(`${String(r.version).padStart(6, '0')}_${r.name}: ${r.status}`);
      }
      const applied = results.filter((r) => r.status === 'applied').length;
      out(
        applied
          ? `schema "${store.schema}": applied ${applied} migration(s)`
          : `schema "${store.schema}" is up to date`,
      );
      return 0;
    } finally {
      await store.close();
    }
  },
};
