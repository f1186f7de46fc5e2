import type { Logger } from '../core/logger.js';
import type { FlagValue, OptionSpec, ResolvedConfig } from './options.js';

export interface CommandContext {
  config: ResolvedConfig;
  flags: Map<string, FlagValue>;
  positionals: string[];
  /** Writes a line of data to stdout. */
  out: (line: string) => void;
  logger: Logger;
  env: NodeJS.ProcessEnv;
}

/** A subcommand of `mailroom`. */
export interface Command {
  name: string;
  summary: string;
  usage: string;
  options: OptionSpec[];
  /** Flags without a value that are not settings (`--dry-run`, `--print-config`). */
  booleans?: string[];
  /** Most words after the command name that are not flags (`dlq show <id>`: 2). @default 0 */
  positionals?: number;
  /** Setting keys that must be given. */
  required?: string[];
  /** Extra help text after the options. */
  details?: string;
  run(ctx: CommandContext): Promise<number>;
}
