import { createInterface } from 'node:readline';
import { UsageError } from './cli-error.js';

/**
 * Asks a yes/no question for a destructive command. `--yes` answers it; on a terminal the
 * user is asked (default no); without a terminal there is nobody to ask, so the command
 * refuses with a {@link UsageError} rather than guess.
 */
export async function confirm(
  question: string,
  options: { yes: boolean; command: string },
  stdin: NodeJS.ReadStream = process.stdin,
  stderr: NodeJS.WriteStream = process.stderr,
): Promise<boolean> {
  if (options.yes) return true;
  requireConfirmable(options, stdin);
  const rl = createInterface({ input: stdin, output: stderr });
  try {
    const answer = await new Promise<string>((resolve) => {
      rl.question(`${question} [y/N] `, resolve);
      rl.once('close', () => resolve(''));
    });
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}

/** Fails before any work is done when a destructive command could not be confirmed later. */
export function requireConfirmable(
  options: { yes: boolean; command: string },
  stdin: { isTTY?: boolean | undefined } = process.stdin,
): void {
  if (!options.yes && !stdin.isTTY) {
    throw new UsageError(
      `${options.command} changes data and stdin is not a terminal to confirm on: pass --yes (-y) to go ahead`,
    );
  }
}
