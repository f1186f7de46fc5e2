import { readFileSync } from 'node:fs';
import { isMailroomError } from '../core/errors/mailroom-error.js';
import { createCliLogger } from './cli-logger.js';
import { UsageError } from './cli-error.js';
import type { Command } from './command.js';
import { demoCommand } from './commands/demo.js';
import { dlqCommand } from './commands/dlq.js';
import { migrateCommand } from './commands/migrate.js';
import { relayCommand } from './commands/relay.js';
import { sendCommand } from './commands/send.js';
import { statusCommand } from './commands/status.js';
import { verifyCommand } from './commands/verify.js';
import { formatOptions, loadConfigFile, parseFlags, requireOption, resolveConfig } from './options.js';

const COMMANDS: Command[] = [
  migrateCommand,
  relayCommand,
  statusCommand,
  dlqCommand,
  sendCommand,
  verifyCommand,
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

function commandHelp(c: Command): string {
  return [
    `${c.usage}`,
    '',
    c.summary,
    '',
    'Flags:',
    formatOptions(c.options),
    ...(c.booleans ?? []).map((b) => `  --${b}`),
    '  --config <file>   JSON file of settings (keys as in --print-config output)',
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
    const c = COMMANDS.find((x) => x.name === rest[0]);
    out(c ? commandHelp(c) : mainHelp());
    return c || rest[0] === undefined ? 0 : 2;
  }
  const command = COMMANDS.find((c) => c.name === name);
  try {
    if (!command) {
      throw new UsageError(
        `unknown command "${name}"; commands: ${COMMANDS.map((c) => c.name).join(', ')}, version, help`,
      );
    }
    const specs = [
      ...command.options,
      {
        key: 'config',
        flag: 'config',
        env: 'MAILROOM_CONFIG',
        type: 'string' as const,
        description: 'config file',
      },
    ];
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
