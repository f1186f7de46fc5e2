import type { Logger } from '../core/logger.js';
import { withLogFields } from '../core/logger.js';
import type { OutboxStats } from '../core/ports.js';
import type { Relay, RelayEvents } from '../core/relay.js';
import { settlesWithin } from './shutdown-deadline.js';

export interface RelayActivityLogOptions {
  relay: Relay;
  /** Where the progress line reads the backlog from. */
  stats: () => Promise<OutboxStats>;
  logger: Logger;
  /** Interval of the progress line; 0 turns it off. @default 10000 */
  progressEveryMs?: number;
  /** Longest a progress line waits for the backlog count before it is written without it. @default 2000 */
  statsTimeoutMs?: number;
}

/** Counts of one progress interval, or of the whole run. */
interface Counts {
  delivered: number;
  retried: number;
  dead: number;
  released: number;
  errors: number;
}

/** A topic whose messages fail: logged once when it starts failing and once when it delivers again. */
interface FailingTopic {
  since: number;
  retried: number;
  dead: number;
  /** The dead-letter warning was written (a topic may fail with retries first). */
  deadWarned: boolean;
}

/** relay:error phases the relay logs itself (with backoff): counted here, not logged twice. */
const LOGGED_BY_RELAY = new Set<RelayEvents['relay:error']['phase']>(['claim', 'listen']);

const zero = (): Counts => ({ delivered: 0, retried: 0, dead: 0, released: 0, errors: 0 });

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The logger to give the relay: its lines carry `component: 'relay'`, and its lines about one
 * message (they carry the message's `id` or `messageId`, and `topic`: a dead letter) are written
 * at `debug`, since {@link RelayActivityLog} reports them once per topic, with what to do, and
 * counts the rest. Everything else passes unchanged.
 */
export function relayLogger(logger: Logger): Logger {
  const relay = withLogFields(logger, { component: 'relay' });
  const aboutOneMessage = (fields: Record<string, unknown> | undefined) =>
    (typeof fields?.id === 'string' || typeof fields?.messageId === 'string') &&
    typeof fields.topic === 'string';
  return {
    debug: (m, f) => relay.debug(m, f),
    info: (m, f) => relay.info(m, f),
    warn: (m, f) => (aboutOneMessage(f) ? relay.debug(m, f) : relay.warn(m, f)),
    error: (m, f) => relay.error(m, f),
  };
}

/**
 * What `mailroom relay` says while it runs, as changes of state rather than one line per message
 * per attempt:
 *
 * - a topic whose messages start failing: one warning (retried) and one when they are
 *   dead-lettered, naming the first error and the `dlq` commands; one info line when a message
 *   of that topic is delivered again. Each retry and dead letter is also logged at `debug`.
 * - an error of the relay's machinery (lease, settle, publish): the first of each kind per
 *   progress interval at `warn`, the rest counted in the progress line.
 * - every `progressEveryMs` while there is work (something happened, or messages are due): one
 *   info line with what happened since the last one and the backlog. Nothing when idle.
 *
 * Broker outages are logged by the relay itself, once per change of state.
 */
export class RelayActivityLog {
  readonly totals: Counts = zero();
  readonly #o: Required<RelayActivityLogOptions>;
  readonly #failing = new Map<string, FailingTopic>();
  readonly #errorPhasesLogged = new Set<string>();
  readonly #unsubscribe: Array<() => void> = [];
  #interval: Counts = zero();
  #lastError: string | undefined;
  /** Messages due or in flight at the last progress line: more work may be under way. */
  #due = 0;
  #timer: NodeJS.Timeout | undefined;
  #reporting = false;
  #statsPending = false;

  constructor(options: RelayActivityLogOptions) {
    this.#o = {
      progressEveryMs: 10_000,
      statsTimeoutMs: 2000,
      ...options,
      logger: withLogFields(options.logger, { component: 'relay' }),
    };
  }

  start(): void {
    const { relay, logger } = this.#o;
    this.#unsubscribe.push(
      relay.on('relay:batch:settled', (e) => {
        logger.debug('batch settled', {
          event: 'batch_settled',
          count: e.count,
          delivered: e.delivered,
          released: e.released,
          retried: e.retried,
          dead: e.dead,
          publishMs: Math.round(e.publishMs),
        });
        this.#add({ delivered: e.delivered, released: e.released });
        if (this.#failing.size > 0) for (const m of e.messages) this.#recovered(m.topic);
      }),
      relay.on('relay:message:retry', (e) => {
        logger.debug('delivery failed; will retry', {
          event: 'message_retry',
          messageId: e.message.id,
          topic: e.message.topic,
          attempt: e.message.attempts,
          delayMs: e.delayMs,
          error: e.error,
        });
        this.#add({ retried: 1 });
        this.#lastError = e.error.message;
        const topic = this.#failingTopic(e.message.topic);
        topic.retried++;
        if (topic.retried === 1 && topic.dead === 0) {
          logger.warn(`messages of topic ${JSON.stringify(e.message.topic)} fail and are retried`, {
            event: 'topic_failing',
            topic: e.message.topic,
            messageId: e.message.id,
            error: e.error,
            attempt: e.message.attempts,
            delayMs: e.delayMs,
          });
        }
      }),
      relay.on('relay:message:dead', (e) => {
        logger.debug('message dead-lettered', {
          event: 'message_dead_lettered',
          messageId: e.message.id,
          topic: e.message.topic,
          attempt: e.message.attempts,
          error: e.error,
        });
        this.#add({ dead: 1 });
        this.#lastError = e.error.message;
        const topic = this.#failingTopic(e.message.topic);
        topic.dead++;
        if (!topic.deadWarned) {
          topic.deadWarned = true;
          const t = e.message.topic;
          logger.warn(
            `messages of topic ${JSON.stringify(t)} are being dead-lettered; ` +
              `\`mailroom dlq list --topic ${t}\` lists them, \`mailroom dlq replay --topic ${t} --yes\` ` +
              'sends them again once the cause is fixed',
            { event: 'topic_dead_lettering', topic: t, messageId: e.message.id, error: e.error },
          );
        }
      }),
      relay.on('relay:error', (e) => {
        this.#add({ errors: 1 });
        const error = errorText(e.error);
        this.#lastError = error;
        if (LOGGED_BY_RELAY.has(e.phase) || this.#errorPhasesLogged.has(e.phase)) {
          logger.debug(`${e.phase} error`, { event: 'relay_error', phase: e.phase, error: e.error });
          return;
        }
        this.#errorPhasesLogged.add(e.phase);
        logger.warn(`${e.phase} error`, { event: 'relay_error', phase: e.phase, error: e.error });
      }),
    );
    if (this.#o.progressEveryMs > 0) {
      this.#timer = setInterval(() => void this.#progress(), this.#o.progressEveryMs);
      // The progress line must never be what keeps a stopping process alive.
      this.#timer.unref();
    }
  }

  stop(): void {
    clearInterval(this.#timer);
    for (const off of this.#unsubscribe.splice(0)) off();
  }

  #add(counts: Partial<Counts>): void {
    for (const [k, n] of Object.entries(counts) as Array<[keyof Counts, number]>) {
      this.#interval[k] += n;
      this.totals[k] += n;
    }
  }

  #failingTopic(name: string): FailingTopic {
    let topic = this.#failing.get(name);
    if (!topic) {
      topic = { since: Date.now(), retried: 0, dead: 0, deadWarned: false };
      this.#failing.set(name, topic);
    }
    return topic;
  }

  #recovered(name: string): void {
    const topic = this.#failing.get(name);
    if (!topic) return;
    this.#failing.delete(name);
    this.#o.logger.info(`messages of topic ${JSON.stringify(name)} are delivered again`, {
      event: 'topic_recovered',
      topic: name,
      retried: topic.retried,
      dead: topic.dead,
      durationMs: Date.now() - topic.since,
    });
  }

  async #progress(): Promise<void> {
    if (this.#reporting) return;
    const counts = this.#interval;
    const active = Object.values(counts).some((n) => n > 0);
    if (!active && this.#due === 0) return;
    this.#reporting = true;
    this.#interval = zero();
    this.#errorPhasesLogged.clear();
    try {
      let stats: OutboxStats | undefined;
      let answered = false;
      // A read that never answers (a database gone silent) is not joined by another one each
      // tick: the lines go on without the backlog until it settles.
      if (!this.#statsPending) {
        this.#statsPending = true;
        const read = this.#o
          .stats()
          .then((s) => (stats = s))
          .finally(() => (this.#statsPending = false));
        answered = await settlesWithin(read, this.#o.statsTimeoutMs);
        read.catch(() => undefined);
      }
      if (stats) {
        this.#due = stats.backlog - stats.scheduled;
        // Nothing happened and nothing is due: the work is done, stay quiet.
        if (!active && this.#due === 0) return;
      }
      this.#o.logger.info('relay progress', {
        event: 'relay_progress',
        ...counts,
        ...(stats
          ? {
              backlog: stats.backlog,
              scheduled: stats.scheduled,
              oldestAgeMs: stats.oldestAgeMs,
              deadLetters: stats.deadLetters,
            }
          : // `backlog` stays a number in every line (log indexes type a field once): the reason is apart.
            { backlogUnknown: answered ? 'the read failed' : 'the database did not answer' }),
        ...(this.#o.relay.transportAvailable ? {} : { transport: 'unavailable' }),
        ...(counts.retried + counts.dead + counts.errors > 0 && this.#lastError
          ? { lastError: this.#lastError }
          : {}),
      });
    } finally {
      this.#reporting = false;
    }
  }
}
