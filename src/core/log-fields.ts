/**
 * The names of Mailroom's log fields, the ids of the state changes it logs, and the one
 * function that turns a call's fields into what a log line holds (errors as objects, secrets
 * masked). Every logger Mailroom ships writes these names; a log shipper can index on them.
 *
 * Glossary:
 * - **line**: one record, one JSON object per line in JSON format.
 * - **event**: a stable snake_case id of the state change a line reports (`relay_started`,
 *   `transport_unavailable`). The `msg` is for people and may be reworded; the `event` is not.
 * - **component**: the part of Mailroom that wrote the line.
 *
 * docs/logging.md is the reference for operators; test/cli-logger.test.ts checks that it lists
 * every event declared here.
 *
 * @module
 */
import { isSecretName, redactSecrets } from './redact.js';

/** The parts of Mailroom that write log lines: the `component` field. */
export type LogComponent =
  'relay' | 'consumer' | 'callbacks' | 'cli' | 'replication' | 'inbox' | 'tcc' | 'webhook' | 'transport';

/** The levels, least severe first. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** Order of the levels, for filtering: a line is written when its level is at least the minimum. */
export const LOG_LEVEL_ORDER: Readonly<Record<LogLevel, number>> = {
  debug: 10,
  info: 20,
  warn: 30,
  error: 40,
};

/**
 * An error as a log line holds it: never a bare string, so that `error.message` is the same
 * path in every line. `stack` only when the logger writes `debug`.
 */
export interface LoggedError {
  /** The error's class name (`RelayStateError`, `Error`); `Error` for a thrown non-error. */
  name: string;
  /** Mailroom's stable error `code` (`invalid_topic`), or a driver's (`ECONNREFUSED`, SQLSTATE `57P01`). */
  code?: string;
  /** What went wrong, with credentials masked. */
  message: string;
  /** Only when the logger's level is `debug`. */
  stack?: string;
  /** What caused it, the same shape, up to {@link MAX_CAUSE_DEPTH} deep. */
  cause?: LoggedError;
}

/**
 * The fields of a log line, with their meaning. Every field but `time`, `level` and `msg` is
 * optional; a line holds those that apply. A call may pass more fields (counts such as
 * `delivered`, `backlog`): they are written as they are, under the same rules (numbers as
 * numbers, errors as {@link LoggedError}, secrets masked).
 */
export interface LogFields {
  /** When the line was written: ISO 8601 in UTC, milliseconds (`2026-12-03T19:21:25.123Z`). */
  time: string;
  /** `debug`, `info`, `warn` or `error`. */
  level: LogLevel;
  /** What happened, for people. May be reworded between versions: match on `event`. */
  msg: string;
  /** Which part of Mailroom wrote the line; see {@link LogComponent}. */
  component?: LogComponent;
  /** The stable id of the state change; see {@link LOG_EVENTS}. Absent on `debug` detail lines. */
  event?: LogEvent;
  /** The relay instance (`hostname:pid:random` unless configured) that holds leases. */
  owner?: string;
  /** The source (outbox) of a relay group, by its configured name. */
  source?: string;
  /** A message's topic. */
  topic?: string;
  /** A message's id (UUIDv7): only on lines about one message, which are `debug` or rare `warn`s. */
  messageId?: string;
  /** The error behind the line. */
  error?: LoggedError;
  /** How long the state lasted or the step took, in milliseconds (a number). */
  durationMs?: number;
  /** The transport's name (`rabbitmq`, `nats`, …). */
  transport?: string;
  /** How many attempts or failures in a row so far. */
  attempt?: number;
  /** A count of messages the line is about. */
  count?: number;
}

/** What {@link LOG_EVENTS} says about one event. */
export interface LogEventInfo {
  component: LogComponent;
  /** The level it is written at. */
  level: Exclude<LogLevel, 'debug'>;
  /** What state changed. */
  meaning: string;
  /** What an operator does about it; `—` when nothing. */
  action: string;
}

/**
 * Every state change Mailroom logs at `info`, `warn` or `error`, by its `event` id. Lines about
 * single messages, batches and attempts are `debug`, or are counted into a progress line.
 */
export const LOG_EVENTS = {
  // relay
  relay_started: {
    component: 'relay',
    level: 'info',
    meaning: 'the relay claims and delivers from now on',
    action: '—',
  },
  relay_stopped: {
    component: 'relay',
    level: 'info',
    meaning: 'the relay stopped; `abandoned` batches were still in flight at its deadline',
    action: 'abandoned batches are delivered by another relay once their lease expires',
  },
  relay_stop_deadline_passed: {
    component: 'relay',
    level: 'warn',
    meaning: 'stop() gave up waiting for batches in flight',
    action: 'a slow or hung broker; raise --shutdown-timeout-ms if it is routine',
  },
  claim_failed: {
    component: 'relay',
    level: 'warn',
    meaning: 'the first of a run of failed claims (the database); the relay retries with backoff',
    action: 'check the database; `claim_recovered` follows when it answers again',
  },
  claim_recovered: {
    component: 'relay',
    level: 'info',
    meaning: 'a claim succeeded after failures; `attempt` failures, `durationMs` long',
    action: '—',
  },
  batch_failed: {
    component: 'relay',
    level: 'error',
    meaning: 'a batch failed in an unexpected way; its leases expire and it is delivered again',
    action: 'a defect: report it with the error',
  },
  settle_failed: {
    component: 'relay',
    level: 'error',
    meaning:
      'settling a published batch failed past its retries; its messages are delivered again after the lease',
    action: 'check the database; consumers see duplicates (same message id)',
  },
  message_dead_lettered: {
    component: 'relay',
    level: 'warn',
    meaning:
      'one message became a dead letter (`messageId`); `mailroom relay` writes it at debug and one `topic_dead_lettering` per topic instead',
    action: 'as for topic_dead_lettering',
  },
  key_order_broken: {
    component: 'relay',
    level: 'warn',
    meaning: 'the broker refused one message of a key and accepted a later one',
    action: 'check the broker (a queue limit, a policy) for the refused message',
  },
  transport_unavailable: {
    component: 'relay',
    level: 'warn',
    meaning: 'the broker is unreachable; claims paused, no attempts spent',
    action: 'check the broker; `transport_available` follows when a probe succeeds',
  },
  transport_available: {
    component: 'relay',
    level: 'info',
    meaning: 'a probe succeeded after an outage; claims resume (`durationMs`: the outage)',
    action: '—',
  },
  topic_failing: {
    component: 'relay',
    level: 'warn',
    meaning: 'messages of `topic` started failing and are retried',
    action: 'read `error`; `topic_recovered` follows when one is delivered again',
  },
  topic_dead_lettering: {
    component: 'relay',
    level: 'warn',
    meaning: 'messages of `topic` exhausted their attempts or failed permanently: dead letters',
    action: '`mailroom dlq list --topic …`, fix the cause, `mailroom dlq replay --topic … --yes`',
  },
  topic_recovered: {
    component: 'relay',
    level: 'info',
    meaning: 'a message of a failing `topic` was delivered again (`durationMs`: how long it failed)',
    action: '—',
  },
  relay_error: {
    component: 'relay',
    level: 'warn',
    meaning:
      'the first error of one phase (`phase`: lease, settle, publish) in a progress interval; the rest are counted',
    action: 'read `error`; repeated lines name a database or broker problem',
  },
  relay_progress: {
    component: 'relay',
    level: 'info',
    meaning: 'what happened since the last progress line, and the backlog; only while there is work',
    action: 'watch `backlog` and `oldestAgeMs`',
  },
  listen_lost: {
    component: 'relay',
    level: 'warn',
    meaning: 'the LISTEN connection was lost or cannot be opened; the relay polls meanwhile',
    action: 'check the database; delivery goes on at the poll interval',
  },
  wake_gate_failed: {
    component: 'relay',
    level: 'warn',
    meaning:
      'the wake gate could not be taken or was lost; writers may skip wake-ups, polling finds their messages',
    action: 'check the database connection',
  },
  log_stream_lost: {
    component: 'relay',
    level: 'warn',
    meaning:
      'the log (replication) stream was lost or could not reconnect; the relay claims from the table meanwhile',
    action: 'check the database and its replication slot',
  },
  log_stream_reconnected: {
    component: 'relay',
    level: 'info',
    meaning: 'the log stream is back',
    action: '—',
  },
  log_slot_recreated: {
    component: 'relay',
    level: 'error',
    meaning: 'the replication slot was missing and was created again',
    action:
      'messages of that gap are delivered by claims from the table; table-less ones are lost: see docs/replication.md',
  },
  log_standby: {
    component: 'relay',
    level: 'warn',
    meaning:
      'another relay reads the log; this one claims from the table and takes the log over when it is free',
    action: '—',
  },
  log_taken_over: {
    component: 'relay',
    level: 'warn',
    meaning: 'this relay took the log over from one that let go',
    action: '—',
  },
  source_start_failed: {
    component: 'relay',
    level: 'warn',
    meaning: 'one source of a relay group did not start; the group retries it',
    action: 'check that source\u2019s database',
  },
  source_started: {
    component: 'relay',
    level: 'info',
    meaning: 'a source of a relay group started after retrying',
    action: '—',
  },
  log_slot_created: {
    component: 'relay',
    level: 'info',
    meaning: 'the relay created its replication slot; messages already in the table are delivered by claims',
    action: '—',
  },
  log_behind: {
    component: 'relay',
    level: 'info',
    meaning: 'the relay is behind the log: claims deliver the backlog until it caught up',
    action: '—',
  },
  log_release_failed: {
    component: 'relay',
    level: 'warn',
    meaning: 'a batch leased from the log could not be given back; its lease expires',
    action: 'check the database',
  },
  tableless_adopt_failed: {
    component: 'relay',
    level: 'warn',
    meaning:
      'table-less messages could not be written into the table; retried with backoff, the log position waits',
    action: 'check the database',
  },
  ack_expired: {
    component: 'relay',
    level: 'warn',
    meaning: 'messages waiting for an acknowledgement expired without one',
    action: 'check the consumers that acknowledge (docs/acknowledged-delivery.md)',
  },
  ack_pruned: {
    component: 'relay',
    level: 'info',
    meaning: 'acknowledgement records past their retention were deleted (`count`)',
    action: '—',
  },
  ack_sweep_failed: {
    component: 'relay',
    level: 'warn',
    meaning: 'the acknowledgement sweep failed; tried again at the next tick',
    action: 'check the database',
  },
  metrics_detach_failed: {
    component: 'relay',
    level: 'error',
    meaning: 'the metrics observer could not be detached at stop; ignored',
    action: 'a defect of the observer: report it with the error',
  },
  listener_threw: {
    component: 'relay',
    level: 'error',
    meaning: 'an event listener of yours threw; the relay ignored it',
    action: 'fix the listener (`relayEvent` names the event it listened to)',
  },
  // consumer
  consumer_started: {
    component: 'consumer',
    level: 'info',
    meaning: 'the consumer receives from now on',
    action: '—',
  },
  consumer_stopped: {
    component: 'consumer',
    level: 'info',
    meaning: 'the consumer stopped; `abandoned` handlers were running at its deadline',
    action: 'abandoned messages are redelivered by the broker',
  },
  consumer_stop_deadline_passed: {
    component: 'consumer',
    level: 'warn',
    meaning: 'stop() gave up waiting for running handlers',
    action: 'their messages are redelivered; a handler slower than the stop timeout',
  },
  consumer_connection_lost: {
    component: 'consumer',
    level: 'warn',
    meaning: 'the broker connection was lost; the consumer reconnects with backoff',
    action: 'check the broker; `consumer_reconnected` follows',
  },
  consumer_reconnected: {
    component: 'consumer',
    level: 'info',
    meaning: 'the consumer is connected again (`durationMs`: how long it was down)',
    action: '—',
  },
  consumer_reconnect_failed: {
    component: 'consumer',
    level: 'warn',
    meaning: 'the first failed reconnect after a loss (`attempt`); later ones are debug',
    action: 'check the broker',
  },
  handler_failed: {
    component: 'consumer',
    level: 'warn',
    meaning: 'a handler threw; the message is retried (`attempt`, `delayMs`)',
    action: 'read `error`: a defect or a dependency of the handler',
  },
  handler_dead_lettered: {
    component: 'consumer',
    level: 'error',
    meaning: 'a handler failed permanently or too often: the message went to the dead-letter destination',
    action: 'read `error`; replay from the dead-letter destination once fixed',
  },
  dead_letter_failed: {
    component: 'consumer',
    level: 'warn',
    meaning: 'sending a message to the dead-letter destination failed; the broker redelivers it',
    action: 'check the dead-letter destination exists',
  },
  inbox_pruned: {
    component: 'inbox',
    level: 'info',
    meaning: 'inbox records past their retention were deleted (`count`)',
    action: '—',
  },
  inbox_prune_failed: {
    component: 'inbox',
    level: 'warn',
    meaning: 'pruning the inbox failed; tried again at the next interval',
    action: 'check the database',
  },
  // callbacks
  callbacks_started: {
    component: 'callbacks',
    level: 'info',
    meaning: 'the callback dispatcher POSTs from now on',
    action: '—',
  },
  callbacks_stopped: {
    component: 'callbacks',
    level: 'info',
    meaning: 'the callback dispatcher stopped',
    action: '—',
  },
  callbacks_stop_deadline_passed: {
    component: 'callbacks',
    level: 'warn',
    meaning: 'stop() aborted POSTs in flight at its deadline; they are POSTed again after their lease',
    action: '—',
  },
  callback_claim_failed: {
    component: 'callbacks',
    level: 'warn',
    meaning: 'the first of a run of failed callback claims; retried with backoff',
    action: 'check the database',
  },
  callback_batch_failed: {
    component: 'callbacks',
    level: 'error',
    meaning: 'a callback batch failed in an unexpected way; its leases expire',
    action: 'a defect: report it with the error',
  },
  callback_settle_failed: {
    component: 'callbacks',
    level: 'error',
    meaning: 'callbacks could not be settled; they are POSTed again after their lease',
    action: 'check the database; endpoints see duplicates',
  },
  callback_dead: {
    component: 'callbacks',
    level: 'warn',
    meaning: 'a callback exhausted its attempts',
    action: 'check the endpoint named in the line',
  },
  // cli
  cli_relay_starting: {
    component: 'cli',
    level: 'info',
    meaning: '`mailroom relay` connects (URLs with credentials masked)',
    action: '—',
  },
  cli_stopping: {
    component: 'cli',
    level: 'info',
    meaning: 'a signal asked the command to stop; it drains in-flight batches',
    action: '—',
  },
  cli_exited: {
    component: 'cli',
    level: 'info',
    meaning: 'the command ends; totals of the run',
    action: '—',
  },
  cli_close_failed: {
    component: 'cli',
    level: 'warn',
    meaning: 'closing a store failed at exit',
    action: 'usually harmless: the process ends anyway',
  },
  cli_transport_close_failed: {
    component: 'cli',
    level: 'error',
    meaning:
      'closing the transport failed at exit (the exit code is 1): messages it had not confirmed are delivered again',
    action: 'read `error`; consumers may see duplicates (same message id)',
  },
  cli_shutdown_deadline: {
    component: 'cli',
    level: 'error',
    meaning: 'the shutdown deadline passed (or a second signal came); the process exits without waiting',
    action: '`held` names what did not close: usually a broker or database gone silent',
  },
  mandatory_off: {
    component: 'cli',
    level: 'warn',
    meaning: 'RabbitMQ `mandatory` is off: an unroutable message is dropped and still confirmed',
    action: 'bind a queue, or turn mandatory on',
  },
  archive_pruned: {
    component: 'cli',
    level: 'info',
    meaning: 'archived messages older than the retention were deleted (`count`)',
    action: '—',
  },
  archive_prune_failed: {
    component: 'cli',
    level: 'warn',
    meaning: 'pruning the archive failed; tried again in a minute',
    action: 'check the database',
  },
  // replication
  replication_started: {
    component: 'replication',
    level: 'info',
    meaning: 'the replication stream reads from `startLsn`',
    action: '—',
  },
  replication_notice: {
    component: 'replication',
    level: 'warn',
    meaning: 'a notice of the server about the slot or stream (`slot`)',
    action: 'read the line',
  },
  replication_unknown_message: {
    component: 'replication',
    level: 'warn',
    meaning: 'the server sent a replication message of an unknown kind; ignored',
    action: 'a newer server protocol: report it',
  },
  replication_failed: {
    component: 'replication',
    level: 'error',
    meaning: 'the replication stream failed',
    action: 'read `error`; the relay reconnects (log_stream_lost)',
  },
  replication_stopped: {
    component: 'replication',
    level: 'info',
    meaning: 'the replication stream stopped at `confirmedLsn`',
    action: '—',
  },
} as const satisfies Record<string, LogEventInfo>;

/**
 * Events of `debug` detail lines (one per batch or per message): an id to filter on, not a
 * change of state. `message_dead_lettered` (in {@link LOG_EVENTS}) is also written at `debug`
 * by `mailroom relay`, which reports dead letters once per topic.
 */
export const DETAIL_LOG_EVENTS = ['batch_settled', 'message_retry', 'tcc_decided', 'tcc_finished'] as const;

/** A stable event id: a key of {@link LOG_EVENTS}. */
export type LogEvent = keyof typeof LOG_EVENTS;

/** How deep {@link serializeError} follows `cause`. */
export const MAX_CAUSE_DEPTH = 5;
/** How deep {@link logFields} follows nested objects and arrays before writing `[…]`. */
const MAX_DEPTH = 4;

/**
 * An error (or anything thrown) as a log line holds it: `name`, `code` when it has one, the
 * message with credentials masked, the `cause` chain; `stack` only when asked (debug).
 */
export function serializeError(error: unknown, options: { stack?: boolean } = {}, depth = 0): LoggedError {
  if (!(error instanceof Error)) {
    if (error !== null && typeof error === 'object' && 'message' in error) {
      const e = error as { name?: unknown; code?: unknown; message?: unknown };
      return {
        name: typeof e.name === 'string' ? e.name : 'Error',
        ...(e.code !== undefined && e.code !== null ? { code: String(e.code) } : {}),
        message: redactSecrets(String(e.message)),
      };
    }
    return { name: 'Error', message: redactSecrets(typeof error === 'string' ? error : String(error)) };
  }
  const code = (error as { code?: unknown }).code;
  const out: LoggedError = {
    name: error.name,
    ...(code !== undefined && code !== null ? { code: String(code) } : {}),
    message: redactSecrets(error.message),
  };
  if (options.stack && error.stack) out.stack = redactSecrets(error.stack);
  if (error.cause !== undefined && depth < MAX_CAUSE_DEPTH) {
    out.cause = serializeError(error.cause, options, depth + 1);
  }
  return out;
}

/** Options of {@link logFields}. */
export interface LogFieldsOptions {
  /** Write errors' stacks (the logger writes `debug`). @default false */
  stack?: boolean;
}

/**
 * A call's fields as a line holds them, in the call's order: values of secret names
 * (`password`, `token`, …, see `isSecretName`) replaced by `***`; credentials in every string
 * masked (`redactSecrets`); errors (and `error` given as a string) as {@link LoggedError};
 * bigints as strings; `undefined` dropped; nested objects followed {@link MAX_DEPTH} deep.
 * Numbers stay numbers. Never throws (a field whose getter throws is written as `[unreadable]`).
 */
export function logFields(
  fields: Record<string, unknown>,
  options: LogFieldsOptions = {},
): Record<string, unknown> {
  return logFieldsInto({}, fields, options);
}

/**
 * {@link logFields} written into `target` (a line's head, `{ time, level, msg }`, so that the
 * line is built once): a field of the same name replaces the target's value in its place.
 * Returns `target`.
 */
export function logFieldsInto(
  target: Record<string, unknown>,
  fields: Record<string, unknown>,
  options: LogFieldsOptions = {},
): Record<string, unknown> {
  return fieldsAt(target, fields, options, 1);
}

/** Whether a field name is a secret's, remembered: lines repeat a handful of names. */
const secretNames = new Map<string, boolean>();
function isSecretField(key: string): boolean {
  let secret = secretNames.get(key);
  if (secret === undefined) {
    secret = isSecretName(key);
    // Bounded: names are a program's, but a caller could log a map's keys as fields.
    if (secretNames.size < 1000) secretNames.set(key, secret);
  }
  return secret;
}

function fieldsAt(
  out: Record<string, unknown>,
  fields: Record<string, unknown>,
  options: LogFieldsOptions,
  depth: number,
): Record<string, unknown> {
  for (const key in fields) {
    let value: unknown;
    try {
      value = fields[key];
    } catch {
      value = '[unreadable]';
    }
    if (value === undefined) continue;
    if (isSecretField(key)) {
      out[key] = value === null || value === '' ? value : '***';
    } else if (key === 'error' || key === 'cause' || value instanceof Error) {
      out[key] = serializeError(value, options);
    } else {
      out[key] = logValue(value, options, depth);
    }
  }
  return out;
}

function logValue(value: unknown, options: LogFieldsOptions, depth: number): unknown {
  switch (typeof value) {
    case 'string':
      return redactSecrets(value);
    case 'number':
      return Number.isFinite(value) ? value : String(value);
    case 'boolean':
      return value;
    case 'bigint':
      return value.toString();
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
    default:
      break;
  }
  if (value === null) return null;
  if (value instanceof Error) return serializeError(value, options);
  if (value instanceof Date) return value.toISOString();
  if (depth >= MAX_DEPTH) return '[…]';
  if (Array.isArray(value)) return value.map((v) => logValue(v, options, depth + 1) ?? null);
  if (value instanceof Uint8Array) return `[${value.byteLength} bytes]`;
  if (value instanceof Map || value instanceof Set) return logValue([...value], options, depth);
  return fieldsAt({}, value as Record<string, unknown>, options, depth + 1);
}
