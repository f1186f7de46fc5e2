import type { OutboxStats } from '../../core/ports.js';
import { openStore } from '../connect.js';
import { formatDuration } from '../duration.js';
import { COMMON_OPTIONS, type OptionSpec } from '../options.js';
import { formatTable } from '../table.js';
import type { Command } from '../command.js';

const OPTIONS: OptionSpec[] = COMMON_OPTIONS.filter((o) => o.key === 'databaseUrl' || o.key === 'schema');

/** What `mailroom status --json` prints. Fields are only ever added, never renamed. */
export interface StatusReport extends OutboxStats {
  schema: string;
}

function humanStatus(report: StatusReport): string {
  const age = report.oldestAgeMs === null ? '-' : formatDuration(report.oldestAgeMs);
  const lines = [
    `schema        ${report.schema}`,
    `backlog       ${report.backlog}`,
    `  in flight   ${report.inFlight}`,
    `  scheduled   ${report.scheduled}  (waiting for a retry or a delay)`,
    `oldest        ${age}`,
    `dead letters  ${report.deadLetters}`,
  ];
  if (report.topics.length > 0) {
    lines.push(
      '',
      formatTable(
        ['TOPIC', 'BACKLOG', 'DEAD'],
        report.topics.map((t) => [t.topic, String(t.backlog), String(t.deadLetters)]),
      ),
    );
  }
  return lines.join('\n');
}

export const statusCommand: Command = {
  name: 'status',
  summary: 'show the backlog, messages in flight, the oldest message and dead letters per topic',
  usage: 'mailroom status [--database-url URL] [--schema NAME] [--json]',
  options: OPTIONS,
  booleans: ['json'],
  required: ['databaseUrl'],
  details: [
    'backlog counts every undelivered message; in flight and scheduled are parts of it',
    '(claimed by a relay now; waiting for a retry or a delay). oldest is the age of the oldest',
    'undelivered message.',
    '',
    '--json prints one object instead of the table:',
    '  { schema, backlog, inFlight, scheduled, oldestAgeMs, deadLetters,',
    '    topics: [{ topic, backlog, deadLetters }] }',
  ].join('\n'),
  async run({ config, flags, out }) {
    const store = await openStore(config);
    try {
      const stats = await store.stats();
      const report: StatusReport = {
        schema: store.schema,
        backlog: stats.backlog,
        inFlight: stats.inFlight,
        scheduled: stats.scheduled,
        oldestAgeMs: stats.oldestAgeMs === null ? null : Math.round(stats.oldestAgeMs),
        deadLetters: stats.deadLetters,
        topics: stats.topics,
      };
      out(flags.get('json') === true ? JSON.stringify(report) : humanStatus(report));
      return 0;
    } finally {
      await store.close();
    }
  },
};
