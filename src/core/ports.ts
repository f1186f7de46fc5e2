import type { AckReceipt, DeadLetter, EncodedMessage, JsonValue, OutboxMessage } from './types.js';

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

/** What a store can do beyond the required methods. The relay branches on each flag. */
export interface StoreCapabilities {
  /**
   * The store can push a wake-up when a transaction that enqueued commits (and implements
   * `subscribe`); the relay then defaults to `wakeup: 'notify'`.
   */
  notify: boolean;
}

/** How a relay asks for work. */
export interface ClaimRequest {
  /** Identifies the relay instance; recorded on leased rows for operators. */
  owner: string;
  /** Largest number of messages to claim. */
  limit: number;
  /** How long the lease lasts, on the database clock. */
  leaseMs: number;
  /**
   * Most messages of one key in the batch. 1 (the default): only each key's oldest message.
   * More: each key's oldest message brings a run, the key's next messages in order while they
   * are due and unleased; keys are taken oldest first until `limit`. The relay asks for runs only from
   * transports with `ordering`, which keep a call's order on the way to the broker.
   *
   * @default 1
   */
  maxPerKey?: number;
}

/**
 * Claims the named messages (`OutboxStore.claimIds`): a relay that learned from the database's
 * transaction log which rows a transaction inserted asks for those rows instead of searching.
 */
export interface ClaimIdsRequest extends ClaimRequest {
  /** Ids of the rows, in the order the log gave them. */
  ids: readonly string[];
  /**
   * The inserting transactions' 32-bit ids, from the log: the store waits (up to a second) until
   * they are visible before reading, since the log reports a commit slightly before other
   * sessions can see it. Omit to read as things are.
   */
  xids?: readonly number[];
}

/** A claimed batch: the messages plus the token that proves the lease. */
export interface ClaimedBatch {
  /** Unique per claim; settle and extend use it to touch only rows this claim still holds. */
  leaseToken: string;
  messages: OutboxMessage[];
}

/**
 * A batch a {@link MessageSource} claimed: leased like a claim's batch, and settled by the relay
 * the same way (publish, then delivered / retry / dead / released in one settle).
 */
export interface SourceBatch extends ClaimedBatch {
  /** When the rows were leased (`clock.now()`): the lease heartbeat counts from here. */
  claimedAt: number;
  /**
   * Called once, after the relay settled the batch or gave up on it (the lease then expires):
   * the source may move its position past the batch's messages.
   */
  done(): void;
  /**
   * For messages that are in no table (table-less mode): the relay hands the batch's settlement
   * here instead of to the store, and keeps no lease. The source puts what failed into the
   * table's retry path (`OutboxStore.adopt`), takes back what was not published, and may move
   * its position past the rest. Resolves once that is done; never rejects.
   */
  settle?(settlement: Settlement): Promise<void>;
}

/**
 * Messages read from the log that go into the table (`OutboxStore.adopt`): failed publishes of
 * table-less messages, and table-less messages whose key has rows there (they queue behind).
 */
export interface AdoptRequest {
  /**
   * Into the outbox, in this order (it becomes their order in the table), due after `delayMs`,
   * with their `attempts` and `error` as the last error. Ids already in the outbox are skipped.
   */
  pending: Array<{ message: OutboxMessage; delayMs: number; error: string | null }>;
  /** Into the dead letters (ids already there are skipped). */
  dead: Array<{ message: OutboxMessage; error: string }>;
}

/** What a {@link MessageSource} is told when it starts. */
export interface SourceContext {
  /** The relay's owner name, for leases. */
  owner: string;
  /** Largest batch to lease at once. */
  batchSize: number;
  leaseMs: number;
  maxPerKey: number;
  /** A batch can be taken now (call {@link MessageSource.take}). */
  ready(): void;
  /**
   * Rows the source saw but did not lease (their key was held, they were leased or not visible
   * yet): the relay claims from the table soon, which delivers them in order.
   */
  leftInTable(): void;
  /** Something went wrong; the source carries on (reconnects) by itself. */
  error(error: unknown): void;
}

/**
 * Where a relay's batches come from besides its own claims: the transaction log (`wakeup:
 * 'replication'`). A source leases the rows it learns of through the store (`claimIds`) and
 * hands them over as batches; the relay publishes and settles them exactly as claimed batches,
 * with the same retry policy, events and transport. The relay keeps claiming from the table as
 * well, for retries, rows a source left there, and anything a source missed: the table stays the
 * record of what is undelivered, so a source can only make delivery faster, never lose a message.
 */
export interface MessageSource {
  /** For logs and events, e.g. `replication`. */
  readonly name: string;
  /** True while the source is reading (connected to the log). */
  readonly connected: boolean;
  /** Begins reading. Rejects when the source cannot work at all (misconfiguration). */
  start(context: SourceContext): Promise<void>;
  /** A batch ready to publish, or undefined. Never waits. */
  take(): SourceBatch | undefined;
  /**
   * The relay cannot publish (its transport is unavailable): lease nothing more, and give back
   * batches leased and not taken, so no message spends an attempt or stays leased in an outage
   * (guarantee 7). Until {@link resume}.
   */
  pause?(): Promise<void>;
  /** The relay can publish again. */
  resume?(): void;
  /**
   * The relay's claim found less than a batch: the table holds no backlog now. A source that
   * left rows there because it was behind may name rows again (see `LogSource`).
   */
  caughtUp?(): void;
  /** Stops reading and releases batches not taken. Never rejects. */
  stop(): Promise<void>;
}

/** What to do with each message of a batch after publishing. */
export interface Settlement {
  leaseToken: string;
  /** Delivered: delete (or archive). Done regardless of the lease, since delivery happened. */
  delivered: OutboxMessage[];
  /**
   * Not published because the transport was unavailable (an outage, not a message failure):
   * release the lease, give back the attempt the claim counted, and leave the row due now. Only
   * rows this claim still holds.
   */
  released: Array<{ message: OutboxMessage; error: string }>;
  /** Failed, retryable: release the lease and make the row due again after `delayMs`. */
  retry: Array<{ message: OutboxMessage; delayMs: number; error: string }>;
  /** Failed permanently or out of attempts: move to the dead letters. */
  dead: Array<{ message: OutboxMessage; error: string }>;
}

/** A count of {@link OutboxStats} that a store may estimate on a big table. */
export type StatsCount = 'backlog' | 'inFlight' | 'scheduled' | 'deadLetters' | 'topics';

/**
 * Counts for `status` and metrics. A store keeps them cheap on a backlog of millions (they are
 * scraped every few seconds): exact on small tables, estimates on big ones, saying which.
 */
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
  /** True when any count is an estimate; `estimated` says which. @default false */
  approximate?: boolean;
  /** The counts that are estimates. */
  estimated?: StatsCount[];
  /** True when `topics` lists only the busiest topics, not all. */
  topicsTruncated?: boolean;
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

/** How a replay or purge of many dead letters proceeds. */
export interface DeadLetterBatchOptions {
  /**
   * Dead letters per statement; each statement is its own short transaction, so a big run
   * neither holds locks for long nor loses finished batches when a later one fails.
   *
   * @default 1000
   */
  batchSize?: number;
  /**
   * Called after each batch commits, with what it replayed or purged: for progress reports,
   * and to know what was done when a later batch throws.
   *
   * @example { onBatch: (done) => console.error(`${done.length} more replayed`) }
   */
  onBatch?: (results: DeadLetterOpResult[]) => void;
}

/** An unsubscribe function. */
export type Unsubscribe = () => Promise<void>;

/**
 * Lets writers skip the commit-time wake-up while relays are busy, without a wake-up ever being
 * lost (docs/design.md, "Wake-ups"). A relay about to sleep calls `arm`; from that call on,
 * writers send wake-ups, and `arm` resolves only once every writer that skipped its wake-up
 * has committed or rolled back, so a claim made after `arm` resolved sees their messages. A
 * relay that is busy again calls `disarm`, and writers stop sending wake-ups.
 */
export interface WakeGate {
  /**
   * Takes the gate. May wait as long as the longest transaction that skipped its wake-up, or
   * while another relay holds the gate. Rejects when `signal` aborts or a deadline of the store
   * passes; the gate is then not held. `onLost` is called at most once, if the hold ends
   * without `disarm` (its connection was lost): writers skip wake-ups again from that moment.
   */
  arm(options: { signal: AbortSignal; onLost: (err: unknown) => void }): Promise<void>;
  /** Gives the gate back. Idempotent, never rejects: a gate it cannot give back is dropped. */
  disarm(): Promise<void>;
}

/**
 * Where a message is, as `outbox.status(id)` tells it.
 *
 * - `pending`: in the outbox, waiting to be claimed (due, delayed or waiting for a retry).
 * - `in-flight`: in the outbox, claimed by a relay right now.
 * - `awaiting-ack`: delivered, waiting for the receiver's acknowledgement (messages with `ack`).
 * - `acknowledged`: the receiver acknowledged it.
 * - `expired`: no acknowledgement came after every resend.
 * - `dead`: a dead letter.
 * - `unknown`: not in any table: delivered and deleted (a message without `ack`), pruned, or
 *   never committed.
 */
export type MessageState =
  'pending' | 'in-flight' | 'awaiting-ack' | 'acknowledged' | 'expired' | 'dead' | 'unknown';

/** A message's state and what the store knows about how it got there. */
export interface MessageStatus {
  id: string;
  state: MessageState;
  topic?: string;
  /** Delivery attempts (outbox, dead letters). */
  attempts?: number;
  /** Resends so far (messages with `ack`). */
  resends?: number;
  /** When an acknowledged message's acknowledgement arrived (for `expired`: a late one). */
  ackedAt?: Date;
  /** The receiving service that acknowledged. */
  consumer?: string;
  /** The result the receiver sent with its acknowledgement. */
  result?: JsonValue;
  /** When it expired. */
  expiredAt?: Date;
  /** When an `awaiting-ack` message is resent or expires. */
  ackDeadline?: Date;
  /** The last delivery error (outbox, dead letters). */
  lastError?: string;
}

/** What applying an acknowledgement did. */
export type AckOutcome =
  /** The message was awaiting it (or being resent): it is acknowledged now. */
  | 'acknowledged'
  /** Already acknowledged: nothing changed. */
  | 'duplicate'
  /** The message had expired: the acknowledgement is recorded, the message stays expired. */
  | 'late'
  /**
   * Not awaiting yet: the acknowledgement came before the relay settled the delivery, or the
   * id is not one of this outbox's. Recorded as acknowledged, so the settle that follows finds it.
   */
  | 'early';

/** A message with `ack`, as `mailroom ack list` shows it. */
export interface AckRecord {
  id: string;
  state: 'awaiting-ack' | 'resending' | 'acknowledged' | 'expired';
  topic: string | null;
  key: string | null;
  resends: number;
  maxResends: number | null;
  /** When it is resent or expires (awaiting), null otherwise. */
  deadline: Date | null;
  sentAt: Date | null;
  ackedAt: Date | null;
  consumer: string | null;
  result: JsonValue | null;
  expiredAt: Date | null;
}

/** Counts of messages with `ack`, for `mailroom status` and metrics. */
export interface AckCounts {
  awaiting: number;
  acknowledged: number;
  expired: number;
  /** Callbacks not yet delivered, and those that gave up. */
  callbacksPending: number;
  callbacksDead: number;
}

/**
 * The receiving side of a store (`Inbox`): transactions the store opens itself, and the inbox
 * table recording `(consumer, message id)`.
 */
export interface InboxPort<Tx = unknown> {
  /**
   * Runs `fn` in a new transaction on the store's database, with a handle `enqueue` accepts;
   * commits when it resolves, rolls back and rethrows when it throws.
   */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  /**
   * The statement recording that `consumer` processed message `id`, run in the handler's
   * transaction: one row when the record is new, none when it was there (a duplicate). A
   * concurrent record of the same pair waits for the first transaction's outcome.
   */
  inboxRecordStatement(consumer: string, id: string): SqlStatement;
  /** Deletes up to `limit` of `consumer`'s records older than `olderThanMs`; returns how many. */
  pruneInbox(consumer: string, olderThanMs: number, limit: number): Promise<number>;
}

/** Acknowledged delivery in a store: see docs/acknowledged-delivery.md. */
export interface AckPort {
  /** The state of each id, in order. */
  status(ids: readonly string[]): Promise<MessageStatus[]>;
  /** Records an acknowledgement (in its own transaction); idempotent. */
  applyAck(receipt: AckReceipt): Promise<AckOutcome>;
  /**
   * Resends (same id, back into the outbox) or expires up to `limit` messages whose
   * acknowledgement deadline passed, in one transaction; an expiry enqueues its cancellation
   * and callback in that transaction. Safe to run from several relays at once.
   */
  sweepAcks(limit: number): Promise<{ resent: number; expired: number }>;
  /** Milliseconds until the next acknowledgement deadline, or null if nothing awaits one. */
  nextAckDueInMs(): Promise<number | null>;
  listAcks(filter?: { state?: AckRecord['state']; limit?: number }): Promise<AckRecord[]>;
  ackCounts(): Promise<AckCounts>;
  /** Deletes up to `limit` acknowledged and expired records older than `olderThanMs`. */
  pruneAcks(olderThanMs: number, limit: number): Promise<number>;
}

/** One outcome to tell a callback URL. */
export interface CallbackEvent {
  /** The callback's own id (the `webhook-id`): the same on every attempt. */
  id: string;
  messageId: string;
  topic: string;
  event: 'delivered' | 'acknowledged' | 'expired' | 'dead';
  url: string;
  /** Attempts so far, this one included. */
  attempts: number;
  /** What the event carries beyond the ids: the ack's consumer and result, the dead letter's error. */
  detail: Record<string, JsonValue>;
  /** When the event happened, on the database clock. */
  occurredAt: Date;
}

/** Callbacks in a store: a small outbox of their own, claimed and settled like messages. */
export interface CallbackPort {
  claimCallbacks(request: { owner: string; limit: number; leaseMs: number }): Promise<{
    leaseToken: string;
    callbacks: CallbackEvent[];
  }>;
  settleCallbacks(settlement: {
    leaseToken: string;
    delivered: string[];
    retry: Array<{ id: string; delayMs: number; error: string }>;
    dead: Array<{ id: string; error: string }>;
  }): Promise<void>;
  /** Milliseconds until the next callback is due, or null when none waits. */
  nextCallbackDueInMs(): Promise<number | null>;
}

/** A relay's state as its presence row records it. */
export type RelayState = 'running' | 'unavailable' | 'stopping';

/**
 * What a relay records about itself (`OutboxStore.recordRelay`): who it is, where it runs, how
 * it wakes up, which transport it publishes to, and its state.
 */
export interface RelayPresenceRecord {
  /** The relay's owner name, the same as on the rows it leases. */
  owner: string;
  host: string;
  pid: number;
  /** The Mailroom version the relay runs. */
  version: string;
  wakeup: 'notify' | 'poll' | 'replication';
  /** The transport's name (`rabbitmq`, `kafka`…). */
  transport: string;
  state: RelayState;
  /** How often the relay heartbeats; it counts as alive while its last heartbeat is within three. */
  heartbeatIntervalMs: number;
}

/** A relay's presence row as `OutboxStore.listRelays` reads it, with what it holds now. */
export interface RelayInfo extends RelayPresenceRecord {
  /** When the relay recorded itself first, on the database clock. */
  startedAt: Date;
  /** Its last heartbeat, on the database clock. */
  heartbeatAt: Date;
  /** Milliseconds since the last heartbeat, on the database clock. */
  heartbeatAgeMs: number;
  /** A heartbeat within three intervals: false for a relay that was killed or lost its database. */
  alive: boolean;
  /** Messages whose unexpired lease this relay holds, and when the first of those leases runs out. */
  inFlight: { messages: number; oldestLeaseUntil: Date | null };
}

/**
 * A database the outbox lives in. One implementation per database (`stores/postgres`, …);
 * the relay is written once against this interface. Every store passes
 * `runStoreConformance()` from `mailroom/testkit`.
 *
 * @typeParam Tx - the transaction handle `enqueue` accepts (PostgresStore:
 *   `PostgresTransactionHandle`); `Outbox` infers it, so a handle that would autocommit (a pool)
 *   does not compile where the store's type can say so.
 */
export interface OutboxStore<Tx = unknown>
  extends Partial<InboxPort<Tx>>, Partial<AckPort>, Partial<CallbackPort> {
  readonly name: string;
  readonly capabilities: StoreCapabilities;
  /** Statement that inserts these messages (and wakes relays, when configured). */
  enqueueStatement(messages: readonly EncodedMessage[]): SqlStatement;
  /**
   * Turns what the caller holds (driver client, transaction, executor) into an executor. Throws
   * a `NotATransactionError` for a handle whose statements would commit on their own (a pool).
   */
  executor(tx: Tx): SqlExecutor;
  /**
   * Throws a `NotATransactionError` unless the executor's connection is inside a transaction
   * block; backs `Outbox({ requireTransaction: true })`. Only stores that can tell exactly.
   */
  requireTransaction?(executor: SqlExecutor): Promise<void>;
  /**
   * Claim due messages: at most one per key (the oldest undelivered message of that key, and
   * only when no earlier message of the key exists), plus keyless ones, oldest first, skipping
   * rows other relays hold. Runs in its own short transaction.
   */
  claim(request: ClaimRequest): Promise<ClaimedBatch>;
  /**
   * Leases those of `request.ids` that {@link claim} could take now: due, unleased, and in key
   * order (a row only with every older row of its key still in the table; at most `maxPerKey`
   * of a key). Rows not taken stay for {@link claim}, which delivers them in order. Messages come
   * back in seq order. Optional: stores that support log tailing have it.
   */
  claimIds?(request: ClaimIdsRequest): Promise<ClaimedBatch>;
  /**
   * The keys among `keys` that have a row in the outbox (due, delayed, retrying or leased): a
   * table-less message of such a key queues behind them. With `xids` (transactions the log just
   * reported), first waits until they are visible, as {@link claimIds} does. Optional: stores
   * that take table-less messages have it.
   */
  keysInTable?(request: { keys: readonly string[]; xids?: readonly number[] }): Promise<string[]>;
  /** Writes messages read from the log into the table, in one transaction. See {@link AdoptRequest}. */
  adopt?(request: AdoptRequest): Promise<void>;
  /**
   * Records (never lowers) how far the relay reading `slot` had read when it handed table-less
   * messages to its transport: written before the publish. See {@link logReadMark}.
   */
  markLogRead?(slot: string, lsn: string): Promise<void>;
  /**
   * The last {@link markLogRead} of `slot`, or null. Table-less messages at or before it may have
   * been published by a relay that then died (of them, perhaps): the next relay sends them through
   * the table, which counts attempts.
   */
  logReadMark?(slot: string): Promise<string | null>;
  /** Push the lease of rows this claim still holds further out. */
  extendLease(leaseToken: string, leaseMs: number): Promise<void>;
  /** Apply the outcomes of a batch in one transaction. */
  settle(settlement: Settlement): Promise<void>;
  /** Milliseconds until the next delayed or leased message becomes due, or null if none. */
  nextDueInMs(): Promise<number | null>;
  /**
   * Calls `onChange(id)` when a message with `ack` or `callback` changes state (delivered,
   * acknowledged, resent, expired); `outbox.waitFor` wakes on it. Stores without it are polled.
   */
  subscribeState?(onChange: (id: string) => void, onError: (err: unknown) => void): Promise<Unsubscribe>;
  /** Subscribe to commit-time wake-ups. Only when `capabilities.notify`. */
  subscribe?(onWake: () => void, onError: (err: unknown) => void): Promise<Unsubscribe>;
  /**
   * The wake gate of a store whose writers send a wake-up only while a relay is idle (see
   * {@link WakeGate}): one per relay, used only with `subscribe`. Undefined (or a store without
   * the method) when writers send a wake-up at every commit, so a relay need not take anything.
   */
  wakeGate?(): WakeGate | undefined;
  /**
   * Records (upserts) a relay's presence row and its heartbeat, on the database clock, and
   * deletes rows of relays whose last heartbeat is over a day old. Optional: stores with a
   * presence table (PostgreSQL and PGlite from schema version 13).
   */
  recordRelay?(presence: RelayPresenceRecord): Promise<void>;
  /** Deletes a relay's presence row (its stop). Optional, with {@link recordRelay}. */
  removeRelay?(owner: string): Promise<void>;
  /**
   * The relays that recorded themselves, oldest first, with `alive` and what each holds leased.
   * Optional, with {@link recordRelay}.
   */
  listRelays?(): Promise<RelayInfo[]>;
  /** Check that the schema exists and is current; throws a {@link StoreError} that says what to run. */
  check(): Promise<void>;
  stats(): Promise<OutboxStats>;
  listDeadLetters(filter?: DeadLetterFilter): Promise<DeadLetter[]>;
  /**
   * How many dead letters match, counted without reading them, and the database time of the
   * count (pass `deadBefore` just after it to act on exactly those).
   */
  countDeadLetters(filter?: DeadLetterFilter): Promise<{ count: number; asOf: Date }>;
  /**
   * Move dead letters back into the outbox, due now, attempts reset, ids kept; in bounded
   * batches, never loading payloads into the process, and only those dead before the run began.
   */
  replayDeadLetters(
    filter?: DeadLetterFilter,
    options?: DeadLetterBatchOptions,
  ): Promise<DeadLetterOpResult[]>;
  /** Delete dead letters for good, in batches, as {@link OutboxStore.replayDeadLetters}. */
  purgeDeadLetters(
    filter?: DeadLetterFilter,
    options?: DeadLetterBatchOptions,
  ): Promise<DeadLetterOpResult[]>;
  close(): Promise<void>;
}

/**
 * The outcome of publishing one message.
 *
 * - `ok`: the broker confirmed it has the message.
 * - `retry`: this message failed (a nack, a rejected payload…); it spends an attempt and is
 *   published again after a backoff, or dead-lettered when its attempts run out.
 * - `permanent`: this message can never be delivered as it is (unroutable, unencodable); it
 *   becomes a dead letter at once.
 * - `unavailable`: the transport itself cannot publish right now (cannot connect, connection
 *   lost, broker blocking publishers, publish deadline passed). Says nothing about the message:
 *   it spends no attempt, and the relay stops claiming until {@link Transport.probe} succeeds.
 */
export type PublishOutcome =
  | { status: 'ok' }
  | { status: 'retry'; error: Error }
  | { status: 'permanent'; error: Error }
  | { status: 'unavailable'; error: Error };

/** Per-call options of {@link Transport.publish} and {@link Transport.probe}. */
export interface PublishOptions {
  /**
   * Aborted when the relay gives up on the call (its publish deadline passed, or it is
   * stopping). The transport should stop waiting, report `unavailable` for messages without an
   * answer, and drop the connection it was using, since a connection that does not answer is
   * not worth keeping.
   */
  signal?: AbortSignal;
}

/**
 * A broker or endpoint. One implementation per system (`transports/rabbitmq`, …). Every
 * transport passes `runTransportConformance()` from `mailroom/testkit`.
 */
export interface Transport {
  readonly name: string;
  /**
   * True when `publish` hands one call's messages to the broker in array order over one
   * connection, so that when the broker took a message it took every earlier one of the call
   * first (unless it refused that one). The relay then batches runs of a key's messages (see
   * `ClaimRequest.maxPerKey`); without it, one message per key per batch.
   *
   * @default false
   */
  readonly ordering?: boolean;
  /** Connect and declare what is needed. Idempotent. Throws a TransportError when unreachable. */
  start(): Promise<void>;
  /**
   * Publish a batch, pipelined, and report one outcome per message in the same order. Must not
   * throw for per-message failures; never reports `ok` before the broker confirmed. Reports
   * `unavailable` (not `retry`) when the broker cannot be reached or does not answer. May be
   * called again before an earlier call resolved.
   */
  publish(messages: readonly OutboxMessage[], options?: PublishOptions): Promise<PublishOutcome[]>;
  /**
   * Checks, cheaply, that a publish now could succeed: connects when needed and resolves when
   * the connection is open and the broker accepts publishes (not blocked). Throws a
   * {@link TransportError} saying why not. The relay calls it, with backoff, while the transport
   * is unavailable, and resumes claiming once it resolves.
   */
  probe(options?: PublishOptions): Promise<void>;
  /** Close connections. Idempotent. */
  close(): Promise<void>;
}
