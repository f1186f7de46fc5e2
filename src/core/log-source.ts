/**
 * The relay's message source for log tailing (`wakeup: 'replication'`), independent of the
 * database: it reads committed transactions from a {@link LogStream}, leases their outbox rows
 * through the store's `claimIds`, and hands the batches to the relay in commit order.
 *
 * The log position is confirmed past a transaction as soon as it is read (`confirmAfter: 'read'`,
 * the default, for outboxes with a table): every message of a committed transaction is in the
 * table from its commit on, in the table's retry path, which is what makes confirming safe. A
 * transaction read but not yet delivered when the relay dies is delivered by a claim (at start,
 * or after its lease). Holding the position any longer would hang a PostgreSQL shutdown: a
 * logical walsender waits at shutdown until its client confirms everything sent, while the relay
 * waits for the database to lease and settle. `'settle'` (sources whose messages are in no table)
 * holds it until the relay settled every batch up to it.
 *
 * In table mode the table stays the record of what is undelivered: a row the source does not
 * lease (its key is held by an earlier row, another claim has it, it was not visible in time)
 * stays for the relay's claim, and a transaction the source never saw (a slot lost and recreated)
 * is delivered by the claim's backstop. The log makes delivery immediate and ordered; it is never
 * the only way a message gets out.
 *
 * @module
 */
import type { Clock } from './clock.js';
import { RelayStateError } from './errors/relay-state-error.js';
import { systemClock } from './clock.js';
import type { Logger } from './logger.js';
import { silentLogger } from './logger.js';
import type {
  AdoptRequest,
  ClaimedBatch,
  ClaimIdsRequest,
  MessageSource,
  Settlement,
  SourceBatch,
  SourceContext,
} from './ports.js';
import type { OutboxMessage } from './types.js';
import { randomUUID } from 'node:crypto';

/** One committed transaction as a {@link LogStream} reports it. */
export interface LogTransaction {
  /** The transaction's 32-bit id (for the visibility wait). */
  xid: number;
  /** The position just past the transaction's commit: confirming it means "done up to here". */
  endLsn: string;
  /** Outbox rows the transaction inserted, in insert order (with their keys, when known). */
  inserts: ReadonlyArray<{ id: string; key?: string | null }>;
  /**
   * Table-less messages the transaction wrote (in no table: the log is their only record), in
   * order, decoded; `attempts` 1. Their position is confirmed only once each is delivered or in
   * the table.
   */
  emitted?: ReadonlyArray<OutboxMessage>;
  /** Messages with the source's prefix that could not be decoded: reported and skipped. */
  invalid?: ReadonlyArray<{ position: string; error: string }>;
}

/** The slice of a replication stream the source needs (`OutboxLogStream` is one). */
export interface LogStream {
  /**
   * Connects and starts reading after the confirmed position. `slotCreated: true` when the slot
   * did not exist and was made by this start: the log holds nothing from before it.
   */
  start(): Promise<{ slotCreated?: boolean } | void>;
  /** The next committed transaction; null once stopped. Rejects when the connection is lost. */
  next(signal: AbortSignal): Promise<LogTransaction | null>;
  /** Moves the confirmed position (monotonic); the server may then drop the log before it. */
  confirm(lsn: string): void;
  /**
   * The server's position when the stream holds nothing not yet handed out (other tables'
   * traffic after the last outbox transaction), or null. Confirming it while the source has
   * nothing pending lets the server release that WAL.
   */
  idleLsn?(): string | null;
  stop(): Promise<void>;
}

/** The store calls the source makes. */
export interface LogSourceStore {
  claimIds(request: ClaimIdsRequest): Promise<ClaimedBatch>;
  /** Table-less mode: which of these keys have rows in the table (see `OutboxStore.keysInTable`). */
  keysInTable?(request: { keys: readonly string[]; xids?: readonly number[] }): Promise<string[]>;
  /** Table-less mode: writes messages into the table's retry path (see `OutboxStore.adopt`). */
  adopt?(request: AdoptRequest): Promise<void>;
  /** Table-less mode: see `OutboxStore.markLogRead`. */
  markLogRead?(slot: string, lsn: string): Promise<void>;
  /** Table-less mode: see `OutboxStore.logReadMark`. */
  logReadMark?(slot: string): Promise<string | null>;
  /** Gives leased rows back without spending their attempt (batches not taken at stop). */
  settle(settlement: {
    leaseToken: string;
    delivered: [];
    released: Array<{ message: ClaimedBatch['messages'][number]; error: string }>;
    retry: [];
    dead: [];
  }): Promise<void>;
}

export interface LogSourceOptions {
  /** Opens a stream; called again after a connection is lost. */
  openStream: () => LogStream;
  store: LogSourceStore;
  /** For logs and events. @default 'replication' */
  name?: string;
  /** First reconnect delay, doubled per failure up to `maxReconnectDelayMs`. @default 200 */
  reconnectDelayMs?: number;
  /** @default 10000 */
  maxReconnectDelayMs?: number;
  /** Batches leased and waiting for the relay at most; reading pauses beyond. @default 4 */
  maxReady?: number;
  /**
   * While nothing is pending, how often the position is moved to the server's (see
   * `LogStream.idleLsn`), so busy other tables do not make the server keep WAL, and a server
   * shutting down (it waits for its log clients to confirm) is not held up. @default 1000
   */
  idleConfirmMs?: number;
  /**
   * When a transaction's position may be confirmed: as soon as it is read (`read`: its rows are
   * in the table, the retry path, from its commit on), or once the relay settled its batches
   * (`settle`: for messages that are in no table). @default 'read'
   */
  confirmAfter?: 'read' | 'settle';
  /**
   * True for an error opening the stream that means another relay reads the log now (its slot
   * is in use). This relay then waits as a hot standby — claiming from the table meanwhile —
   * and tries again every `standbyRetryMs`, taking the log over once the other lets go.
   */
  isStandbyError?: (error: unknown) => boolean;
  /** @default 1000 */
  standbyRetryMs?: number;
  /**
   * The log's name for the read mark (`OutboxStore.markLogRead`), the slot: with it, table-less
   * messages a relay may have published before it died go through the table after a restart
   * (attempts counted, a message that kills relays dead-lettered), and a slot created again
   * while a mark exists is reported as a gap across restarts. Without it, neither.
   */
  markName?: string;
  /** How often the read mark is written while the stream moves (see `markName`). @default 10000 */
  markIntervalMs?: number;
  clock?: Clock;
  logger?: Logger;
}

/**
 * How long after confirming a position the source still remembers the table-less messages before
 * it (`#handed`): a confirmation is sent at once, and one the server has not received when the
 * connection breaks is lost with it.
 */
const FORGET_AFTER_MS = 5000;

/** `claimIds` calls in flight at most. */
const MAX_LEASING = 2;

/** Transactions read but not yet claimed, and the ids they hold, at most (reading pauses). */
const MAX_BUFFERED_IDS_FACTOR = 4;

/**
 * A stretch of the log: confirmable once nothing in it is open (a claimed batch in `settle`
 * mode, table-less messages not yet delivered or in the table).
 */
interface Group {
  endLsn: string;
  open: number;
}

/** A table-less message read and not yet delivered or in the table. */
interface Emitted {
  message: OutboxMessage;
  /** Its transaction's group; after a reconnect, the group of the copy read again. */
  group: Group;
  /** Log order. */
  n: number;
  /** Delivered, or written into the table (a retry, a dead letter, behind its key). */
  done?: boolean;
}

/**
 * {@link MessageSource} over a transaction log. Reads, claims and reconnects in the background;
 * the relay takes the batches.
 */
export class LogSource implements MessageSource {
  readonly name: string;
  readonly #options: LogSourceOptions;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #maxReady: number;
  #context: SourceContext | undefined;
  #stream: LogStream | undefined;
  #connected = false;
  #standby = false;
  #abort = new AbortController();
  #reader: Promise<void> | undefined;
  #claimer: Promise<void> | undefined;
  /** Read, not yet claimed. */
  readonly #buffered: LogTransaction[] = [];
  #bufferedIds = 0;
  /** Leased, not yet taken by the relay. */
  readonly #ready: SourceBatch[] = [];
  /** Groups in log order, not yet confirmed. */
  readonly #groups: Group[] = [];
  /** Wakes the claimer (something was read) or the reader (room in the buffer). */
  #kick: (() => void) | undefined;
  #readerKick: (() => void) | undefined;
  #idleTimer: ReturnType<typeof setInterval> | undefined;
  /** The relay cannot publish: lease nothing (see {@link pause}). */
  #paused = false;
  readonly #confirmOnRead: boolean;
  /** Table-less messages read, not yet handed to the relay, in log order. */
  #emitted: Emitted[] = [];
  #emittedCount = 0;
  /** Keys of table-less messages the relay holds (taken, not settled), with how many. */
  readonly #keysOut = new Map<string, number>();
  /** Transactions read that inserted rows, not yet waited for by `keysInTable`. */
  #insertXids: number[] = [];
  /**
   * Behind: the buffer overflowed and rows were left to the table's claims. Until a claim finds
   * less than a batch (`caughtUp`), the source leaves every inserted row to the claims: behind a
   * backlog most named rows have older rows of their key in the table, and `claimIds` would take
   * a tenth of what it names.
   */
  #behind = false;
  /** `claimIds` calls in flight. */
  readonly #leasing = new Set<Promise<void>>();
  /** Order of the calls (see `#inOrder`): the next call's number, the next to hand over. */
  #chunkSeq = 0;
  #nextToHand = 0;
  readonly #finished = new Map<number, SourceBatch | undefined>();
  /** Table-less settles writing the table. */
  readonly #out = new Set<Promise<void>>();
  /**
   * The read mark that says which messages a relay that died may have published: the highest one
   * another process wrote, as found at this stream's start (undefined: not read yet, null: none).
   * Marks this process wrote itself do not count: it knows what it handed out (`#handed`).
   */
  #startMark: bigint | null | undefined;
  /** The highest read mark found that this process did not write (undefined: never read). */
  #foreignMark: bigint | null | undefined;
  /**
   * Table-less messages this process handed to the relay or wrote into the table, by id, until
   * the position passes them. A stream that reconnects reads them again from the confirmed
   * position: those done are not sent again, those still out are waited for (their copy
   * takes their place in the new stream's groups), instead of going through the table.
   */
  readonly #handed = new Map<string, Emitted>();
  /** The position this source last confirmed. */
  #confirmedTo = '0/0';
  /**
   * Positions confirmed, with when: `#handed` forgets a message only once the server surely has
   * a confirmation past it (sent more than {@link FORGET_AFTER_MS} ago). A status update sent just
   * before the connection broke may never arrive, and the next stream starts before it.
   */
  readonly #confirmations: Array<{ lsn: bigint; at: number }> = [];
  /** The read mark as this source last recorded it. */
  #recordedMark = -1n;
  /** When the periodic read mark was last written (clock ms), and whether one is in flight. */
  #markedAt = 0;
  #marking = false;

  constructor(options: LogSourceOptions) {
    this.#options = options;
    this.name = options.name ?? 'replication';
    this.#clock = options.clock ?? systemClock;
    this.#logger = options.logger ?? silentLogger;
    this.#maxReady = options.maxReady ?? 4;
    this.#confirmOnRead = (options.confirmAfter ?? 'read') === 'read';
  }

  #confirmRead(lsn: string | null): void {
    if (lsn === null) return;
    try {
      this.#stream?.confirm(lsn);
      this.#confirmed(lsn);
    } catch (err) {
      this.#context?.error(err);
    }
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** True while another relay holds the log and this one waits to take it over. */
  get standby(): boolean {
    return this.#standby;
  }

  /** True while the source leaves the rows it reads to the relay's claims (it fell behind). */
  get behind(): boolean {
    return this.#behind;
  }

  /** Transactions read and batches waiting, for status and tests. */
  get backlog(): { transactions: number; ready: number; unconfirmed: number; emitted: number } {
    return {
      transactions: this.#buffered.length,
      ready: this.#ready.length,
      unconfirmed: this.#groups.filter((g) => g.open > 0).length,
      emitted: this.#emitted.length,
    };
  }

  /**
   * Opens the stream once (so a misconfiguration — wal_level, privilege, a slot in use — fails
   * the relay's start with its message), then reads in the background.
   */
  async start(context: SourceContext): Promise<void> {
    this.#context = context;
    this.#abort = new AbortController();
    const stream = this.#options.openStream();
    try {
      const started = await stream.start();
      this.#stream = stream;
      this.#connected = true;
      this.#startMark = undefined;
      await this.#loadMark();
      if (started?.slotCreated === true && this.#startMark != null) {
        // A relay read this slot before (it left a read mark), and the slot is new: it was
        // dropped or lost while no relay ran. What was committed in between is not in the log.
        this.#reportGap(context);
      } else if (started?.slotCreated === true) {
        this.#logger.info('log slot created: messages already in the table are delivered by claims', {
          event: 'log_slot_created',
          source: this.name,
        });
      }
      // What was committed before (a backlog, what a previous relay read but did not deliver) is
      // in the table: a claim now.
      context.leftInTable();
    } catch (err) {
      await stream.stop().catch(() => undefined);
      if (this.#options.isStandbyError?.(err) !== true) throw err;
      this.#enterStandby(err);
    }
    this.#reader = this.#read();
    this.#claimer = this.#claim();
    this.#idleTimer = setInterval(() => {
      this.#confirm();
      this.#forget();
      this.#markNow();
    }, this.#options.idleConfirmMs ?? 1000);
    this.#idleTimer.unref();
  }

  take(): SourceBatch | undefined {
    const leaseMs = this.#context?.leaseMs ?? Infinity;
    for (;;) {
      const batch = this.#ready.shift();
      if (!batch) return undefined;
      this.#readerKick?.();
      this.#kick?.();
      // Waited too long to be taken (the relay was busy): its lease may be gone before the
      // relay's heartbeat would extend it. Back to the table; a claim delivers it. (Table-less
      // batches hold no lease.)
      if (batch.settle === undefined && this.#clock.now() - batch.claimedAt > leaseMs / 2) {
        void this.#release([batch], 'leased by the log source too long ago to publish safely');
        continue;
      }
      return batch;
    }
  }

  async pause(): Promise<void> {
    if (this.#paused) return;
    this.#paused = true;
    // Read and not leased: the rows are in the table, where claims find them after the outage,
    // and they deliver what builds up meanwhile before the log names rows again.
    if (this.#confirmOnRead) this.#behind = true;
    if (this.#confirmOnRead && this.#buffered.length > 0) {
      this.#buffered.length = 0;
      this.#bufferedIds = 0;
      this.#context?.leftInTable();
      this.#readerKick?.();
    }
    await this.#release(this.#ready.splice(0), 'transport unavailable: released unpublished');
  }

  caughtUp(): void {
    this.#behind = false;
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#kick?.();
  }

  /**
   * Gives leased batches back to the table without spending their attempt; table-less batches
   * go back to the front of the source's own queue.
   */
  async #release(batches: SourceBatch[], why: string): Promise<void> {
    let leased = 0;
    for (const batch of batches) {
      if (batch.settle) {
        void batch.settle(releasedAll(batch, why));
        continue;
      }
      leased++;
      batch.done();
      try {
        await this.#options.store.settle({
          leaseToken: batch.leaseToken,
          delivered: [],
          released: batch.messages.map((message) => ({ message, error: why })),
          retry: [],
          dead: [],
        });
      } catch (err) {
        this.#logger.warn('could not release a leased batch; its lease will expire', {
          event: 'log_release_failed',
          error: err,
        });
      }
    }
    if (leased > 0) this.#context?.leftInTable();
  }

  async stop(): Promise<void> {
    clearInterval(this.#idleTimer);
    this.#abort.abort();
    this.#kick?.();
    this.#readerKick?.();
    await Promise.allSettled([this.#reader, this.#claimer]);
    await Promise.allSettled([...this.#leasing]);
    // Leased for the relay but never taken: back to the table at once, no attempt spent.
    await this.#release(this.#ready.splice(0), 'relay stopping: released unpublished');
    // Table-less settles still writing the table: their positions are confirmed after.
    await Promise.allSettled([...this.#out]);
    this.#confirm();
    await this.#stream?.stop().catch(() => undefined);
    this.#stream = undefined;
    this.#connected = false;
  }

  /**
   * The slot was dropped behind our back (an operator, a failover that lost it): the log between
   * the last confirmed position and now is gone. The table still holds every undelivered row of
   * that gap (claimed now); table-less messages of it are lost. Said loudly.
   */
  #reportGap(context: SourceContext): void {
    this.#logger.error(
      'the log slot was missing and has been created again: transactions committed while it was gone are not in the log; the relay delivers their rows from the table, and their table-less messages are lost',
      { event: 'log_slot_recreated', source: this.name },
    );
    context.error(
      new RelayStateError(
        'log_gap',
        `the ${this.name} source's slot was missing and was created again; transactions committed while it ` +
          'was gone are not in the log: their rows are delivered from the table, their table-less messages are lost. ' +
          'Find out who dropped the slot (or which failover lost it: PostgreSQL 17 failover slots keep it on the standby)',
      ),
    );
    context.leftInTable();
  }

  /**
   * Every `markIntervalMs` (10 s) while the stream moves, a read mark is recorded even with no
   * table-less message to publish: a slot later found created again while its mark exists is
   * then a gap also after a restart, in table mode too (where the table covers it). It is the
   * confirmed position, not the read one: a mark past what was handed to the transport would send
   * the next relay's copies of messages nobody published through the table, and again to the
   * broker if a relay had delivered them meanwhile. Never more than one write at a time; a failed
   * one is tried at the next tick.
   */
  #markNow(): void {
    const { markName, store } = this.#options;
    if (markName === undefined || store.markLogRead === undefined || this.#marking) return;
    if (this.#clock.now() - this.#markedAt < (this.#options.markIntervalMs ?? 10_000)) return;
    const to = this.#confirmedTo;
    if (lsnValue(to) <= this.#recordedMark) return;
    this.#marking = true;
    store
      .markLogRead(markName, to)
      .then(
        () => {
          this.#markedAt = this.#clock.now();
          if (lsnValue(to) > this.#recordedMark) this.#recordedMark = lsnValue(to);
        },
        () => undefined,
      )
      .finally(() => (this.#marking = false));
  }

  /** Reads the read mark left by the relay that read this slot before; false when it cannot. */
  async #loadMark(): Promise<boolean> {
    const { markName, store } = this.#options;
    if (markName === undefined || store.logReadMark === undefined) {
      this.#startMark = null;
      return true;
    }
    try {
      const mark = await store.logReadMark(markName);
      const value = mark === null ? null : lsnValue(mark);
      // Higher than any mark this process wrote: another relay read (and may have published) up
      // to there. Otherwise the mark is this process's own, or the one found before.
      if (value !== null && value > this.#recordedMark) {
        if (this.#foreignMark == null || value > this.#foreignMark) this.#foreignMark = value;
      } else if (this.#foreignMark === undefined) this.#foreignMark = null;
      this.#startMark = this.#foreignMark;
      return true;
    } catch (err) {
      this.#context?.error(err);
      return false;
    }
  }

  #enterStandby(error: unknown): void {
    this.#standby = true;
    this.#connected = false;
    this.#logger.warn(
      'another relay reads the log; this one is a hot standby: it claims from the table and takes the log over when it is free',
      { event: 'log_standby', source: this.name, error },
    );
  }

  /** Reads transactions into the buffer, reconnecting after a loss. */
  async #read(): Promise<void> {
    const signal = this.#abort.signal;
    const context = this.#context as SourceContext;
    let failures = 0;
    while (!signal.aborted) {
      const stream = this.#stream;
      if (!stream) {
        // Reconnect: a new stream resumes from the confirmed position, so transactions not yet
        // confirmed are read again (their rows are either gone, leased, or still to deliver).
        const delay = this.#standby
          ? (this.#options.standbyRetryMs ?? 1000)
          : Math.min(
              this.#options.maxReconnectDelayMs ?? 10_000,
              (this.#options.reconnectDelayMs ?? 200) * 2 ** Math.min(failures, 10),
            );
        if ((failures > 0 || this.#standby) && !(await this.#clock.sleep(delay, signal))) return;
        const next = this.#options.openStream();
        let started: { slotCreated?: boolean } | void;
        try {
          started = await next.start();
        } catch (err) {
          await next.stop().catch(() => undefined);
          if (this.#options.isStandbyError?.(err) === true) {
            if (!this.#standby) this.#enterStandby(err);
            continue;
          }
          failures++;
          context.error(err);
          this.#logger.warn('log stream reconnect failed; the relay claims from the table meanwhile', {
            event: 'log_stream_lost',
            error: err,
            attempt: failures,
          });
          continue;
        }
        if (this.#standby) {
          this.#standby = false;
          this.#logger.warn('took the log over: the relay that held it let go', {
            event: 'log_taken_over',
            source: this.name,
          });
        }
        if (started?.slotCreated === true) this.#reportGap(context);
        // Whatever was read before the loss is read again from the confirmed position. Table-less
        // messages this process handed out are known (`#handed`): their copies are not sent again
        // (see `#reread`). Later messages of the keys the relay still holds wait behind them.
        this.#buffered.length = 0;
        this.#bufferedIds = 0;
        this.#groups.length = 0;
        this.#emitted = [];
        this.#insertXids = [];
        this.#startMark = undefined;
        this.#stream = next;
        this.#connected = true;
        failures = 0;
        this.#logger.info('log stream reconnected', { event: 'log_stream_reconnected', source: this.name });
        context.leftInTable();
        continue;
      }
      const full = this.#bufferedIds >= context.batchSize * MAX_BUFFERED_IDS_FACTOR;
      // Table-less messages exist nowhere else: never dropped, so reading waits for room.
      if (
        (full && !this.#confirmOnRead) ||
        this.#emitted.length >= context.batchSize * MAX_BUFFERED_IDS_FACTOR
      ) {
        await new Promise<void>((resolve) => (this.#readerKick = resolve));
        this.#readerKick = undefined;
        continue;
      }
      let tx: LogTransaction | null;
      try {
        tx = await stream.next(signal);
      } catch (err) {
        if (signal.aborted) return;
        failures++;
        this.#connected = false;
        this.#stream = undefined;
        context.error(err);
        this.#logger.warn('log stream lost; reconnecting, and claiming from the table meanwhile', {
          event: 'log_stream_lost',
          error: err,
        });
        // The table has everything: a claim now picks up what the lost stream would have named.
        context.leftInTable();
        await stream.stop().catch(() => undefined);
        continue;
      }
      if (tx === null) return;
      for (const bad of tx.invalid ?? []) {
        context.error(
          new RelayStateError(
            'log_message_invalid',
            `a message in the log at ${bad.position} has the ${this.name} source's prefix but cannot be read (${bad.error}); ` +
              'it is skipped. Only Mailroom (enqueue with tableless, or the emit() SQL function) should write messages with this prefix',
            { details: { position: bad.position } },
          ),
        );
      }
      const emitted = tx.emitted ?? [];
      if (emitted.length > 0) {
        const group: Group = { endLsn: tx.endLsn, open: emitted.length };
        this.#groups.push(group);
        for (const message of emitted) {
          if (this.#reread(message, group)) continue;
          this.#emitted.push({ message, group, n: this.#emittedCount++ });
        }
        if (group.open === 0) this.#confirm();
      }
      if (tx.inserts.length > 0) this.#insertXids.push(tx.xid);
      if (this.#confirmOnRead) {
        if (emitted.length === 0) this.#passed(tx.endLsn);
        if (full || this.#behind) {
          // The relay is behind (the database slow or away): the rows are in the table, the
          // claims deliver them. Reading on keeps the server's log client answered.
          if (full && !this.#behind) {
            this.#behind = true;
            // What is buffered goes to the claims too: its keys are the backlog's.
            this.#buffered.length = 0;
            this.#bufferedIds = 0;
            this.#logger.info(
              'the relay is behind the log: claims deliver the backlog, the log names rows again once they caught up',
              { event: 'log_behind', source: this.name },
            );
          }
          if (tx.inserts.length > 0) context.leftInTable();
          this.#kick?.();
          continue;
        }
      }
      if (tx.inserts.length > 0 || !this.#confirmOnRead) {
        this.#buffered.push(tx);
        this.#bufferedIds += tx.inserts.length;
      }
      this.#kick?.();
    }
  }

  /** Claims buffered transactions, up to a batch of ids at a time, in log order. */
  async #claim(): Promise<void> {
    const signal = this.#abort.signal;
    const context = this.#context as SourceContext;
    while (!signal.aborted) {
      if (this.#paused || this.#ready.length >= this.#maxReady) {
        await new Promise<void>((resolve) => (this.#kick = resolve));
        this.#kick = undefined;
        continue;
      }
      // Table-less messages first (they hold the log's position), then rows to lease. A key
      // written both ways at once is ordered only within each way (docs/replication.md).
      if (this.#emitted.length > 0 && (await this.#formEmittedBatch(context))) continue;
      if (this.#buffered.length === 0) {
        await new Promise<void>((resolve) => (this.#kick = resolve));
        this.#kick = undefined;
        continue;
      }
      // Whole transactions while they fit (one at least, split below when it is larger).
      const group: LogTransaction[] = [];
      let ids = 0;
      while (this.#buffered.length > 0) {
        const tx = this.#buffered[0] as LogTransaction;
        if (group.length > 0 && ids + tx.inserts.length > context.batchSize) break;
        group.push(tx);
        ids += tx.inserts.length;
        this.#buffered.shift();
      }
      this.#bufferedIds -= ids;
      this.#readerKick?.();
      const endLsn = (group[group.length - 1] as LogTransaction).endLsn;
      const allIds = group.flatMap((tx) => tx.inserts.map((i) => i.id));
      const xids = [...new Set(group.map((tx) => tx.xid))];
      const track = !this.#confirmOnRead;
      if (allIds.length === 0 && track) this.#groups.push({ endLsn, open: 0 });
      const chunks: Array<Promise<number>> = [];
      for (let i = 0; i < allIds.length; i += context.batchSize) {
        const chunk = allIds.slice(i, i + context.batchSize);
        // Open from before the call (in `settle` mode), so no confirm passes it meanwhile.
        const entry: Group = { endLsn, open: track ? 1 : 0 };
        if (track) this.#groups.push(entry);
        // Up to MAX_LEASING calls at once: at a thousand transactions a second one call at a
        // time is busy most of the time, and each transaction waited for the call ahead of it.
        // Calls side by side may lease out of log order; a key's order is the table's rule
        // (claim_ids never takes a row behind an older one of its key still there).
        while (this.#leasing.size >= MAX_LEASING) await Promise.race(this.#leasing);
        const work = this.#leaseChunk(chunk, xids, entry, track, context, this.#chunkSeq++);
        chunks.push(work);
        const tracked = work.then(() => undefined);
        this.#leasing.add(tracked);
        void tracked.finally(() => {
          this.#leasing.delete(tracked);
          this.#kick?.();
        });
      }
      void Promise.all(chunks).then((counts) => {
        if (counts.reduce((a, b) => a + b, 0) < allIds.length) context.leftInTable();
        this.#confirm();
      });
    }
  }

  /** Leases one chunk of named rows and hands the batch to the relay; resolves how many it leased. */
  async #leaseChunk(
    chunk: string[],
    xids: number[],
    entry: Group,
    track: boolean,
    context: SourceContext,
    seq: number,
  ): Promise<number> {
    let batch: ClaimedBatch;
    // The lease starts during the call: count its age from before it.
    const leasedAt = this.#clock.now();
    try {
      batch = await this.#options.store.claimIds({
        ids: chunk,
        xids,
        owner: context.owner,
        limit: context.batchSize,
        leaseMs: context.leaseMs,
        maxPerKey: context.maxPerKey,
      });
    } catch (err) {
      // The rows stay in the table; the relay's claim delivers them.
      entry.open = 0;
      context.error(err);
      this.#inOrder(seq, undefined);
      return 0;
    }
    if (batch.messages.length === 0) {
      entry.open = 0;
      this.#inOrder(seq, undefined);
      return 0;
    }
    // The log's order (commit order, then insert order), not the store's seq order: a group
    // of transactions can hold a long one's early rows behind later short ones.
    const position = new Map(chunk.map((id, i) => [id, i]));
    batch.messages.sort((a, b) => (position.get(a.id) ?? 0) - (position.get(b.id) ?? 0));
    entry.open = track ? 1 : 0;
    const ready: SourceBatch = {
      ...batch,
      claimedAt: leasedAt,
      done: () => {
        entry.open = 0;
        this.#confirm();
      },
    };
    if (this.#paused || this.#abort.signal.aborted) {
      // The transport went down (or the relay is stopping) while this claim ran: give it back.
      this.#inOrder(seq, undefined);
      await this.#release([ready], 'transport unavailable: released unpublished');
      return batch.messages.length;
    }
    this.#inOrder(seq, ready);
    return batch.messages.length;
  }

  /**
   * Hands leased batches to the relay in the order their calls were made (log order), whatever
   * order the calls side by side come back in.
   */
  #inOrder(seq: number, batch: SourceBatch | undefined): void {
    this.#finished.set(seq, batch);
    while (this.#finished.has(this.#nextToHand)) {
      const next = this.#finished.get(this.#nextToHand);
      this.#finished.delete(this.#nextToHand);
      this.#nextToHand++;
      if (next === undefined) continue;
      if (this.#paused || this.#abort.signal.aborted) {
        void this.#release([next], 'transport unavailable: released unpublished');
        continue;
      }
      this.#ready.push(next);
      this.#context?.ready();
    }
  }

  /**
   * Confirms the position past the longest prefix of groups that is done; with nothing pending
   * at all, the server's own position (other tables' WAL since the last outbox transaction).
   */
  #confirm(): void {
    const stream = this.#stream;
    if (!stream) return;
    let last: string | undefined;
    while (this.#groups.length > 0 && (this.#groups[0] as Group).open === 0) {
      last = (this.#groups.shift() as Group).endLsn;
    }
    try {
      if (last !== undefined) {
        stream.confirm(last);
        this.#confirmed(last);
      }
      // Nothing open: past it, the server's position when the stream holds nothing more (other
      // tables' WAL, a shutdown's last records). In `read` mode buffered rows are confirmed.
      if (this.#groups.length === 0 && (this.#confirmOnRead || this.#buffered.length === 0)) {
        const idle = stream.idleLsn?.();
        if (idle) {
          stream.confirm(idle);
          this.#confirmed(idle);
        }
      }
    } catch (err) {
      this.#context?.error(err);
    }
  }

  /** The position moved to `lsn`: once the server has it, messages before it are never read again. */
  #confirmed(lsn: string): void {
    const to = lsnValue(lsn);
    if (to <= lsnValue(this.#confirmedTo)) return;
    this.#confirmedTo = lsn;
    const now = this.#clock.now();
    const last = this.#confirmations[this.#confirmations.length - 1];
    // One entry per interval is enough: it only sets how soon `#handed` forgets.
    if (last !== undefined && now - last.at < 100) last.lsn = to;
    else this.#confirmations.push({ lsn: to, at: now });
    this.#forget();
  }

  /** Forgets the handed-out messages the server's confirmed position has surely passed. */
  #forget(): void {
    const now = this.#clock.now();
    let to = -1n;
    while (
      this.#confirmations.length > 0 &&
      now - (this.#confirmations[0] as { at: number }).at > FORGET_AFTER_MS
    ) {
      to = (this.#confirmations.shift() as { lsn: bigint }).lsn;
    }
    if (to < 0n) return;
    for (const [id, e] of this.#handed) if (lsnValue(e.group.endLsn) <= to) this.#handed.delete(id);
  }

  /**
   * A table-less message read again after a reconnect that this process handed out before: done
   * (delivered, or in the table), it closes its place in `group` at once; still with the relay,
   * its outcome closes it. True when it is not to be published again.
   */
  #reread(message: OutboxMessage, group: Group): boolean {
    const before = this.#handed.get(message.id);
    if (before === undefined) return false;
    if (before.done === true) group.open--;
    else before.group = group;
    return true;
  }

  /**
   * A transaction with nothing left to do (`read` mode): confirmed at once, or, behind
   * table-less messages still open, when they are done.
   */
  #passed(endLsn: string): void {
    const last = this.#groups[this.#groups.length - 1];
    if (last === undefined) this.#confirmRead(endLsn);
    else if (last.open === 0) last.endLsn = endLsn;
    else this.#groups.push({ endLsn, open: 0 });
  }

  /**
   * Hands the relay a batch of table-less messages, in log order: at most `maxPerKey` of a key,
   * none of a key the relay still holds (nor any later one of that key), and those whose key has
   * rows in the table into the table behind them instead. False when every message waits for a
   * key the relay holds (a settle kicks the claimer).
   */
  async #formEmittedBatch(context: SourceContext): Promise<boolean> {
    const store = this.#options.store;
    const picked: Emitted[] = [];
    const blocked = new Set<string>();
    const perKey = new Map<string, number>();
    for (const entry of this.#emitted) {
      if (picked.length >= context.batchSize) break;
      const key = entry.message.key;
      if (key !== null) {
        if (blocked.has(key) || this.#keysOut.has(key)) {
          blocked.add(key);
          continue;
        }
        const n = perKey.get(key) ?? 0;
        if (n >= Math.max(1, context.maxPerKey)) {
          blocked.add(key);
          continue;
        }
        perKey.set(key, n + 1);
      }
      picked.push(entry);
    }
    if (picked.length === 0) return false;
    if (this.#startMark === undefined && !(await this.#loadMark())) {
      await this.#clock.sleep(this.#options.reconnectDelayMs ?? 200, this.#abort.signal);
      return true;
    }
    if (store.keysInTable === undefined || store.adopt === undefined) {
      throw new RelayStateError(
        'store_not_tableless',
        `the ${this.name} source read table-less messages, and its store cannot take them (keysInTable, adopt): ` +
          'use a PostgresStore of schema version 10 (run migrate)',
      );
    }
    let held: Set<string>;
    const xids = [...this.#insertXids];
    // Read before a relay that died may have published them: through the table, which counts
    // attempts (a message that kills relays becomes a dead letter), and their keys with them.
    const startMark = this.#startMark ?? null;
    const viaTable = (e: Emitted) => startMark !== null && lsnValue(e.group.endLsn) <= startMark;
    // What goes to the transport is recorded as read first (see `markLogRead`): as far as the
    // newest message handed now, no further. Messages read beyond it were published by nobody,
    // and the next relay should send them straight from the log, once.
    const newestEntry = picked.reduce((m, e) =>
      lsnValue(e.group.endLsn) > lsnValue(m.group.endLsn) ? e : m,
    );
    const newest = lsnValue(newestEntry.group.endLsn);
    const markTo = newestEntry.group.endLsn;
    const mark =
      this.#options.markName !== undefined && store.markLogRead !== undefined && newest > this.#recordedMark
        ? store.markLogRead(this.#options.markName, markTo)
        : undefined;
    try {
      // Keys with rows in the table (retries, rows of table writers): those messages queue
      // behind them there. Skipped when no message has a key and no transaction inserted rows.
      const [keys] = await Promise.all([
        perKey.size > 0 ? store.keysInTable({ keys: [...perKey.keys()], xids }) : [],
        mark,
      ]);
      held = new Set(keys);
      if (perKey.size > 0) this.#insertXids = this.#insertXids.slice(xids.length);
      if (mark !== undefined && lsnValue(markTo) > this.#recordedMark) this.#recordedMark = lsnValue(markTo);
    } catch (err) {
      context.error(err);
      await this.#clock.sleep(this.#options.reconnectDelayMs ?? 200, this.#abort.signal);
      return true;
    }
    if (this.#abort.signal.aborted) return true;
    const chosen = new Set(picked);
    this.#emitted = this.#emitted.filter((e) => !chosen.has(e));
    // Room in the buffer: the reader may wait for it (a batch the relay takes kicks it too, but
    // messages that all go into the table make no batch).
    this.#readerKick?.();
    for (const e of picked) if (e.message.key !== null && viaTable(e)) held.add(e.message.key);
    const toTable = (e: Emitted) => viaTable(e) || (e.message.key !== null && held.has(e.message.key));
    const behind = picked.filter(toTable);
    const send = picked.filter((e) => !toTable(e));
    if (behind.length > 0) {
      const ok = await this.#adopt({
        pending: behind.map((e) => ({ message: { ...e.message, attempts: 0 }, delayMs: 0, error: null })),
        dead: [],
      });
      if (ok)
        for (const e of behind) {
          e.group.open--;
          e.done = true;
          this.#handed.set(e.message.id, e);
        }
      context.leftInTable();
      this.#confirm();
    }
    if (send.length > 0) {
      for (const e of send) {
        const key = e.message.key;
        if (key !== null) this.#keysOut.set(key, (this.#keysOut.get(key) ?? 0) + 1);
        this.#handed.set(e.message.id, e);
      }
      let settled = false;
      const batch: SourceBatch = {
        leaseToken: randomUUID(),
        messages: send.map((e) => e.message),
        claimedAt: this.#clock.now(),
        done: () => undefined,
        settle: (settlement) => {
          if (settled) return Promise.resolve();
          settled = true;
          const work = this.#settleEmitted(send, settlement);
          this.#out.add(work);
          return work.finally(() => this.#out.delete(work));
        },
      };
      if (this.#paused)
        await batch.settle?.(releasedAll(batch, 'transport unavailable: released unpublished'));
      else {
        this.#ready.push(batch);
        context.ready();
      }
    }
    return true;
  }

  /** The relay's outcome of a table-less batch. */
  async #settleEmitted(entries: Emitted[], settlement: Settlement): Promise<void> {
    const byId = new Map(entries.map((e) => [e.message.id, e]));
    const entry = (m: OutboxMessage) => byId.get(m.id) as Emitted;
    const back = settlement.released.map((r) => entry(r.message));
    const request: AdoptRequest = {
      pending: settlement.retry.map((r) => ({ message: r.message, delayMs: r.delayMs, error: r.error })),
      dead: settlement.dead.map((d) => ({ message: d.message, error: d.error })),
    };
    let ok = true;
    if (request.pending.length > 0 || request.dead.length > 0) {
      ok = await this.#adopt(request);
      if (ok) this.#context?.leftInTable();
    }
    if (ok) {
      const done = (e: Emitted) => {
        e.group.open--;
        e.done = true;
      };
      for (const m of settlement.delivered) done(entry(m));
      for (const r of settlement.retry) done(entry(r.message));
      for (const d of settlement.dead) done(entry(d.message));
    }
    // Not published: read again, it is a message like any other.
    for (const e of back) this.#handed.delete(e.message.id);
    // Not published (the transport was unavailable): back to the front, in log order. Only into
    // the current stream's groups (after a reconnect the log gives them again).
    const current = new Set(this.#groups);
    const again = back.filter((e) => current.has(e.group));
    if (again.length > 0) this.#emitted = [...again, ...this.#emitted].sort((a, b) => a.n - b.n);
    for (const e of entries) {
      const key = e.message.key;
      if (key === null) continue;
      const n = (this.#keysOut.get(key) ?? 1) - 1;
      if (n <= 0) this.#keysOut.delete(key);
      else this.#keysOut.set(key, n);
    }
    this.#confirm();
    this.#kick?.();
  }

  /**
   * Writes into the table, retrying (the position waits) until it succeeds or the source stops:
   * true once written.
   */
  async #adopt(request: AdoptRequest): Promise<boolean> {
    const store = this.#options.store;
    for (let failures = 0; ; failures++) {
      try {
        await store.adopt?.(request);
        return true;
      } catch (err) {
        this.#context?.error(err);
        this.#logger.warn('could not write table-less messages into the table; retrying', {
          event: 'tableless_adopt_failed',
          error: err,
          attempt: failures + 1,
        });
        const delay = Math.min(5000, (this.#options.reconnectDelayMs ?? 200) * 2 ** Math.min(failures, 6));
        if (!(await this.#clock.sleep(delay, this.#abort.signal))) return false;
      }
    }
  }
}

/** An LSN (`X/Y`, hex) as a number, for comparing. */
function lsnValue(lsn: string): bigint {
  const slash = lsn.indexOf('/');
  if (slash < 0) return 0n;
  return (BigInt(`0x${lsn.slice(0, slash) || '0'}`) << 32n) | BigInt(`0x${lsn.slice(slash + 1) || '0'}`);
}

function releasedAll(batch: SourceBatch, why: string): Settlement {
  return {
    leaseToken: batch.leaseToken,
    delivered: [],
    released: batch.messages.map((message) => ({ message, error: why })),
    retry: [],
    dead: [],
  };
}
