import type { DeadLetter, EncodedMessage, OutboxMessage } from './types.js';

/**
 * The one method Mailroom needs from a caller's transaction: run a statement with positional
 * parameters. Stores turn driver objects (a `pg` client, a postgres.js transaction, an ORM
 * transaction) into one of these, so the core never imports a driver.
 */
export interface SqlExecutor {
  /**
   * @param name - when given, the statement may be prepared once per connection under this
   *   name and reused (same name, same SQL text, always). Executors that cannot prepare ignore it.
   */
  execute<Row = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    name?: string,
  ): Promise<{ rows: Row[] }>;
}

/** A statement as a value: stores build them, executors run them. */
export interface SqlStatement {
  sql: string;
  params: unknown[];
  /** A name to prepare it under, for statements run very often with the same text. */
  name?: string;
}

/** What a store can do beyond the required methods. */
export interface StoreCapabilities {
  /** The store can push a wake-up when a transaction that enqueued commits. */
  notify: boolean;
  /** Several relay processes may claim from this store at once. */
  concurrentRelays: boolean;
}

/** How a relay asks for work. */
export interface ClaimRequest {
  /** Identifies the relay instance; recorded on leased rows for operators. */
  owner: string;
  /** Largest number of messages to claim. */
  limit: number;
  /** How long the lease lasts, on the database clock. */
  leaseMs: number;
}

/** A claimed batch: the messages plus the token that proves the lease. */
export interface ClaimedBatch {
  /** Unique per claim; settle and extend use it to touch only rows this claim still holds. */
  leaseToken: string;
  messages: OutboxMessage[];
}

/** What to do with each message of a batch after publishing. */
export interface Settlement {
  leaseToken: string;
  /** Delivered: delete (or archive). Done regardless of the lease, since delivery happened. */
  delivered: OutboxMessage[];
  /** Failed, retryable: release the lease and make the row due again after `delayMs`. */
  retry: Array<{ message: OutboxMessage; delayMs: number; error: string }>;
  /** Failed permanently or out of attempts: move to the dead letters. */
  dead: Array<{ message: OutboxMessage; error: string }>;
}

/** Counts for `status` and metrics. */
export interface OutboxStats {
  /** Messages not yet delivered (due, delayed and leased). */
  backlog: number;
  /** Of the backlog, claimed by a relay right now. */
  inFlight: number;
  /** Of the backlog, waiting for a retry or a delay. */
  scheduled: number;
  /** Age of the oldest undelivered message in milliseconds, or null when there is none. */
  oldestAgeMs: number | null;
  deadLetters: number;
  topics: Array<{ topic: string; backlog: number; deadLetters: number }>;
}

/** Filters for dead-letter operations. All given filters must match. */
export interface DeadLetterFilter {
  ids?: string[];
  topic?: string;
  key?: string;
  /** Only dead letters that died before this time. */
  deadBefore?: Date;
  /** Only dead letters that died at or after this time. */
  deadAfter?: Date;
  /** At most this many (oldest first). */
  limit?: number;
}

/** Result of an operation over many dead letters: one entry per message touched. */
export interface DeadLetterOpResult {
  id: string;
  status: 'replayed' | 'purged';
}

/** An unsubscribe function. */
export type Unsubscribe = () => Promise<void>;

/**
 * A database the outbox lives in. One implementation per database (`stores/postgres`, …);
 * the relay is written once against this interface. Every store passes
 * `runStoreConformance()` from `mailroom/testkit`.
 */
export interface OutboxStore {
  readonly name: string;
  readonly capabilities: StoreCapabilities;
  /** Statement that inserts these messages (and wakes relays, when configured). */
  enqueueStatement(messages: readonly EncodedMessage[]): SqlStatement;
  /** Turns what the caller holds (driver client, transaction, executor) into an executor. */
  executor(tx: unknown): SqlExecutor;
  /**
   * Claim due messages: at most one per key (the oldest undelivered message of that key, and
   * only when no earlier message of the key exists), plus keyless ones, oldest first, skipping
   * rows other relays hold. Runs in its own short transaction.
   */
  claim(request: ClaimRequest): Promise<ClaimedBatch>;
  /** Push the lease of rows this claim still holds further out. */
  extendLease(leaseToken: string, leaseMs: number): Promise<void>;
  /** Apply the outcomes of a batch in one transaction. */
  settle(settlement: Settlement): Promise<void>;
  /** Milliseconds until the next delayed or leased message becomes due, or null if none. */
  nextDueInMs(): Promise<number | null>;
  /** Subscribe to commit-time wake-ups. Only when `capabilities.notify`. */
  subscribe?(onWake: () => void, onError: (err: unknown) => void): Promise<Unsubscribe>;
  /** Check that the schema exists and is current; throws a {@link StoreError} that says what to run. */
  check(): Promise<void>;
  stats(): Promise<OutboxStats>;
  listDeadLetters(filter?: DeadLetterFilter): Promise<DeadLetter[]>;
  /** Move dead letters back into the outbox, due now, attempts reset, ids kept. */
  replayDeadLetters(filter?: DeadLetterFilter): Promise<DeadLetterOpResult[]>;
  purgeDeadLetters(filter?: DeadLetterFilter): Promise<DeadLetterOpResult[]>;
  close(): Promise<void>;
}

/** The outcome of publishing one message. */
export type PublishOutcome =
  { status: 'ok' } | { status: 'retry'; error: Error } | { status: 'permanent'; error: Error };

/** What a transport guarantees. */
export interface TransportCapabilities {
  /** `ok` means the broker confirmed it has the message (publisher confirm, ack, 2xx…). */
  confirms: boolean;
  /** The broker drops a second copy with the same message id. */
  dedupe: boolean;
  /** Several messages can be published all-or-nothing. */
  transactions: boolean;
  /** Messages published in order on one connection arrive in that order. */
  ordering: boolean;
}

/**
 * A broker or endpoint. One implementation per system (`transports/rabbitmq`, …). Every
 * transport passes `runTransportConformance()` from `mailroom/testkit`.
 */
export interface Transport {
  readonly name: string;
  readonly capabilities: TransportCapabilities;
  /** Connect and declare what is needed. Idempotent. Throws a TransportError when unreachable. */
  start(): Promise<void>;
  /**
   * Publish a batch, pipelined, and report one outcome per message in the same order. Must not
   * throw for per-message failures; never reports `ok` before the broker confirmed. May be
   * called again before an earlier call resolved.
   */
  publish(messages: readonly OutboxMessage[]): Promise<PublishOutcome[]>;
  /** Close connections. Idempotent. */
  close(): Promise<void>;
}
