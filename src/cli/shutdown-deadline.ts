import type { Logger } from '../core/logger.js';

/** Exit code of a process that had to be ended by its shutdown deadline, something still open. */
export const EXIT_SHUTDOWN_DEADLINE = 3;

/** Exit code after a second SIGINT/SIGTERM: the operator asked not to wait any longer. */
export const EXIT_SECOND_SIGNAL = 130;

export interface ShutdownDeadlineOptions {
  logger: Logger;
  /** From the first signal to the forced exit. */
  deadlineMs: number;
  /** Ends the process. @default process.exit */
  exit?: (code: number) => void;
  /** Where the signals come from. @default process */
  signals?: Pick<NodeJS.Process, 'on' | 'off'>;
}

/**
 * The hard end of a long-running command. The first SIGINT/SIGTERM resolves `requested` (the
 * command then stops its work gracefully) and arms a last-resort timer: when it fires, the
 * process exits with {@link EXIT_SHUTDOWN_DEADLINE} and one log line naming the steps that had
 * not finished (`store (closing 10.0.0.5:5432/orders)`).
 *
 * Why a timer and not only deadlines on each step: a socket that a firewall black-holes never
 * errors, and a driver waiting on it (a pool ending, a LISTEN connection, a TLS close) keeps the
 * event loop alive after every `await` has given up, so the process would outlive the command.
 * The timer is `unref`ed: a process that has nothing left open exits by itself, earlier.
 */
export class ShutdownDeadline {
  /** Resolves with the first signal. */
  readonly requested: Promise<NodeJS.Signals>;
  readonly #o: Required<ShutdownDeadlineOptions>;
  /** Steps under way, in the order they began, with what each is doing. */
  readonly #steps = new Map<symbol, string>();
  #signals = 0;
  #timer: NodeJS.Timeout | undefined;
  #resolve!: (signal: NodeJS.Signals) => void;
  readonly #onSignal = (signal: NodeJS.Signals) => this.#signal(signal);

  constructor(options: ShutdownDeadlineOptions) {
    this.#o = {
      exit: (code) => process.exit(code),
      signals: process,
      ...options,
    };
    this.requested = new Promise((resolve) => (this.#resolve = resolve));
  }

  /** True once a signal arrived. */
  get stopping(): boolean {
    return this.#signals > 0;
  }

  /** Listens for SIGINT and SIGTERM; from now on they stop the command instead of killing it. */
  install(): void {
    this.#o.signals.on('SIGINT', this.#onSignal);
    this.#o.signals.on('SIGTERM', this.#onSignal);
  }

  /** Stops listening and disarms the timer. */
  dispose(): void {
    this.#o.signals.off('SIGINT', this.#onSignal);
    this.#o.signals.off('SIGTERM', this.#onSignal);
    clearTimeout(this.#timer);
  }

  /**
   * Starts the countdown to the forced exit, if it is not running yet: a signal does, and so does
   * a command that gives up on its own (a failed start) and now closes what it opened.
   */
  begin(): void {
    if (this.#timer) return;
    this.#timer = setTimeout(() => this.#expire(), this.#o.deadlineMs);
    this.#timer.unref();
  }

  /**
   * Runs `work` as a named step: until it settles, the forced-exit line names it as `doing`
   * (`store (connecting to db:5432/orders)`). Returns `work` itself.
   */
  step<T>(doing: string, work: Promise<T>): Promise<T> {
    const id = Symbol(doing);
    this.#steps.set(id, doing);
    const done = () => void this.#steps.delete(id);
    work.then(done, done);
    return work;
  }

  /**
   * `work`, or `undefined` if a signal comes first. A step that loses the race goes on in the
   * background (a connect cannot be taken back) and stays named until it settles.
   */
  async unlessStopped<T>(doing: string, work: Promise<T>): Promise<T | undefined> {
    const step = this.step(doing, work);
    // Once the signal won, a late failure of the step is nobody's to report.
    step.catch(() => undefined);
    if (this.stopping) return undefined;
    return Promise.race([step, this.requested.then(() => undefined)]);
  }

  #signal(signal: NodeJS.Signals): void {
    this.#signals++;
    if (this.#signals > 1) {
      this.#o.logger.error('second signal: exiting without waiting for anything to close', {
        event: 'cli_shutdown_deadline',
        signal,
        open: this.#open(),
        exitCode: EXIT_SECOND_SIGNAL,
      });
      this.#o.exit(EXIT_SECOND_SIGNAL);
      return;
    }
    this.begin();
    this.#resolve(signal);
  }

  #open(): string[] {
    return [...this.#steps.values()];
  }

  #expire(): void {
    const open = this.#open();
    // Nothing of ours open, yet the process is alive: say what Node still holds, so the line is
    // never empty-handed.
    const held = open.length === 0 ? process.getActiveResourcesInfo() : [];
    const what =
      open.length > 0
        ? `${open.join(', ')} did not finish`
        : `everything closed, but the process was kept alive by ${held.join(', ') || 'nothing Node reports'}`;
    this.#o.logger.error(`shutdown deadline passed: ${what}; exiting`, {
      event: 'cli_shutdown_deadline',
      deadlineMs: this.#o.deadlineMs,
      open: open.join(', '),
      ...(held.length > 0 ? { held: held.join(', ') } : {}),
      exitCode: EXIT_SHUTDOWN_DEADLINE,
    });
    this.#o.exit(EXIT_SHUTDOWN_DEADLINE);
  }
}

/**
 * Resolves when `work` settles or `ms` pass, whichever is first: true when it settled in time.
 * Never rejects; the caller moves on either way.
 */
export async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([
      work.then(
        () => true,
        () => true,
      ),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
