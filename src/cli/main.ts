import { readFileSync } from 'node:fs';
import { isMailroomError } from '../core/errors/mailroom-error.js';
import { createCliLogger } from './cli-logger.js';
import { UsageError } from './cli-error.js';
import type { Command } from './command.js';
import { ackCommand } from './commands/ack.js';
import { adminCommand } from './commands/admin.js';
import { demoCommand } from './commands/demo.js';
import { doctorCommand } from './commands/doctor.js';
import { dlqCommand } from './commands/dlq.js';
import { migrateCommand } from './commands/migrate.js';
import { relayCommand } from './commands/relay.js';
import { sendCommand } from './commands/send.js';
import { slotCommand } from './commands/slot.js';
import { statusCommand } from './commands/status.js';
import { tccCommand } from './commands/tcc.js';
import { verifyCommand } from './commands/verify.js';
import {
  formatOptions,
  loadConfigFile,
  parseFlags,
  requireOption,
  resolveConfig,
  type OptionSpec,
} from './options.js';

const COMMANDS: Command[] = [
  migrateCommand,
  relayCommand,
  adminCommand,
  statusCommand,
  doctorCommand,
  dlqCommand,
  ackCommand,
  slotCommand,
  sendCommand,
  verifyCommand,
  tccCommand,
  demoCommand,
];

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  return [
    'mailroom — transactional outbox and relay',
    '',
    'Usage: mailroom <command> [flags]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    `  ${'version'.padEnd(width)}print the version`,
    `  ${'help'.padEnd(width)}help for a command: mailroom help <command>`,
    '',
    'Settings come from flags, then environment variables, then --config FILE',
    '(or ./mailroom.config.{json,ts,mjs,js}), then defaults. Run `mailroom <command> --help` for its flags.',
  ].join('\n');
}

/** Names `mailroom` takes first: the commands, then `version` and `help`. */
function commandNames(): string[] {
  return [...COMMANDS.map((c) => c.name), 'version', 'help'];
}

/** Subcommands of `dlq` that people type as commands of their own (`mailroom replay`). */
const DLQ_SUBCOMMANDS = ['list', 'show', 'replay', 'purge'];

/**
 * Edit distance with adjacent transpositions (optimal string alignment): `sned` is one step
 * from `send`, where plain Levenshtein counts two.
 */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const row = d[i] as number[];
      const up = d[i - 1] as number[];
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min((up[j] as number) + 1, (row[j - 1] as number) + 1, (up[j - 1] as number) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        row[j] = Math.min(row[j] as number, ((d[i - 2] as number[])[j - 2] as number) + 1);
      }
    }
  }
  return (d[a.length] as number[])[b.length] as number;
}

/**
 * What a mistyped command most likely meant: the same name in another case, a `dlq`
 * subcommand, the nearest name by a typo or two, the one command a start abbreviates (`mig`),
 * or a name sharing a start of four or more letters (`migrations` → `migrate`). Undefined when nothing is close; a wild guess is worse
 * than the list of commands.
 */
export function suggestCommand(typed: string): string | undefined {
  const lower = typed.toLowerCase();
  const names = commandNames();
  const exact = names.find((n) => n === lower);
  if (exact) return exact;
  if (DLQ_SUBCOMMANDS.includes(lower)) return `dlq ${lower}`;
  const allowed = lower.length <= 4 ? 1 : 2;
  let best: { name: string; distance: number } | undefined;
  for (const name of names) {
    const distance = editDistance(lower, name);
    if (distance <= allowed && (!best || distance < best.distance)) best = { name, distance };
  }
  if (best) return best.name;
  const extending = names.filter((n) => n.startsWith(lower));
  if (lower.length >= 2 && extending.length === 1) return extending[0];
  const sharedStart = (n: string) => {
    let i = 0;
    while (i < n.length && i < lower.length && n[i] === lower[i]) i++;
    return i;
  };
  return names.find((n) => sharedStart(n) >= 4);
}

function unknownCommand(typed: string): UsageError {
  const guess = suggestCommand(typed);
  const shown = JSON.stringify(typed.slice(0, 40));
  return new UsageError(
    `unknown command ${shown}${guess ? ` (did you mean "${guess}"?)` : ''}; commands: ${commandNames().join(', ')}`,
    { command: typed },
  );
}

/** `--config`, which every command takes; main() reads it before the command's own settings. */
const CONFIG_OPTION: OptionSpec = {
  key: 'config',
  flag: 'config',
  env: 'MAILROOM_CONFIG',
  type: 'string',
  valueName: 'file',
  description: 'settings file: .json, or .ts/.mjs/.js exporting them as default (else ./mailroom.config.*)',
};

function commandHelp(c: Command): string {
  return [
    `${c.usage}`,
    '',
    c.summary,
    '',
    'Flags:',
    formatOptions([...c.options, CONFIG_OPTION]),
    ...(c.booleans ?? []).map((b) => `  --${b}`),
    ...(c.details ? ['', c.details] : []),
  ].join('\n');
}

/**
 * Runs the `mailroom` command line; resolves to the exit code: 0 success, 1 failure,
 * 2 bad usage (unknown flag, missing or invalid setting).
 */
export async function main(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const out = (line: string) => process.stdout.write(`${line}\n`);
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h') {
    out(mainHelp());
    return name === undefined ? 2 : 0;
  }
  if (name === 'version' || name === '--version' || name === '-v') {
    out(version());
    return 0;
  }
  if (name === 'help') {
    const [topic, extra] = rest;
    const c = COMMANDS.find((x) => x.name === topic);
    if (c && extra === undefined) {
      out(commandHelp(c));
      return 0;
    }
    if (topic === undefined || topic === 'help' || topic === 'version') {
      out(mainHelp());
      return 0;
    }
    // The same answer as `mailroom <topic>` would give: a help that printed the command list
    // for a typo would hide the typo.
    const err =
      c === undefined
        ? unknownCommand(topic)
        : new UsageError(
            `help takes one command, got also ${JSON.stringify(String(extra).slice(0, 40))}; e.g. mailroom help ${c.name}`,
          );
    process.stderr.write(`mailroom help: ${oneLine(err)}\n`);
    return 2;
  }
  const command = COMMANDS.find((c) => c.name === name);
  try {
    if (!command) throw unknownCommand(name);
    const specs = [...command.options, CONFIG_OPTION];
    const { flags, positionals } = parseFlags(rest, specs, command.booleans ?? []);
    if (flags.get('help') === true) {
      out(commandHelp(command));
      return 0;
    }
    const extra = positionals[command.positionals ?? 0];
    if (extra !== undefined) {
      throw new UsageError(
        `unexpected argument ${JSON.stringify(extra.slice(0, 60))}; see mailroom ${command.name} --help`,
      );
    }
    const configPath = (flags.get('config') as string | undefined) ?? env.MAILROOM_CONFIG;
    // One config file serves every command: its keys are checked against all commands' settings,
    // and each command reads the ones it has.
    const file = await loadConfigFile(
      configPath || undefined,
      COMMANDS.flatMap((c) => c.options),
    );
    const config = resolveConfig(command.options, flags, env, file);
    if (flags.get('print-config') !== true) {
      for (const key of command.required ?? []) requireOption(config, command.options, key);
    }
    const logger = createCliLogger({
      level: (config.logLevel as 'info' | undefined) ?? 'info',
      ...(config.logFormat === 'json'
        ? { json: true }
        : config.logFormat === 'pretty'
          ? { json: false }
          : {}),
    });
    return await command.run({ config, flags, positionals, out, logger, env });
  } catch (err) {
    const usage = err instanceof UsageError || (isMailroomError(err) && err.code === 'invalid_config');
    process.stderr.write(`mailroom${command ? ` ${command.name}` : ''}: ${oneLine(err)}\n`);
    return usage ? 2 : 1;
  }
}

function oneLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.replace(/\s*\n\s*/g, ' ');
}
