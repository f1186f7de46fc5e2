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
import type { ClaimedBatch, ClaimIdsRequest, MessageSource, SourceBatch, SourceContext } from './ports.js';

/** One committed transaction as a {@link LogStream} reports it. */
export interface LogTransaction {
  /** The transaction's 32-bit id (for the visibility wait). */
  xid: number;
  /** The position just past the transaction's commit: confirming it means "done up to here". */
  endLsn: string;
  /** Outbox rows the transaction inserted, in insert order. */
  inserts: ReadonlyArray<{ id: string }>;
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
  clock?: Clock;
  logger?: Logger;
}

/** Transactions read but not yet claimed, and the ids they hold, at most (reading pauses). */
const MAX_BUFFERED_IDS_FACTOR = 4;

/** A group of transactions claimed together: confirmable once its batch (if any) is done. */
interface Group {
  endLsn: string;
  pending: boolean;
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

  /** Transactions read and batches waiting, for status and tests. */
  get backlog(): { transactions: number; ready: number; unconfirmed: number } {
    return {
      transactions: this.#buffered.length,
      ready: this.#ready.length,
      unconfirmed: this.#groups.length,
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
      if (started?.slotCreated === true) {
        this.#logger.info('log slot created: messages already in the table are delivered by claims', {
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
    this.#idleTimer = setInterval(() => this.#confirm(), this.#options.idleConfirmMs ?? 1000);
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
      // relay's heartbeat would extend it. Back to the table; a claim delivers it.
      if (this.#clock.now() - batch.claimedAt > leaseMs / 2) {
        void this.#release([batch], 'leased by the log source too long ago to publish safely');
        continue;
      }
      return batch;
    }
  }

  async pause(): Promise<void> {
    if (this.#paused) return;
    this.#paused = true;
    // Read and not leased: the rows are in the table, where claims find them after the outage.
    if (this.#confirmOnRead && this.#buffered.length > 0) {
      this.#buffered.length = 0;
      this.#bufferedIds = 0;
      this.#context?.leftInTable();
      this.#readerKick?.();
    }
    await this.#release(this.#ready.splice(0), 'transport unavailable: released unpublished');
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#kick?.();
  }

  /** Gives leased batches back to the table without spending their attempt. */
  async #release(batches: SourceBatch[], why: string): Promise<void> {
    for (const batch of batches) {
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
        this.#logger.warn('could not release a leased batch; its lease will expire', { error: String(err) });
      }
    }
    if (batches.length > 0) this.#context?.leftInTable();
  }

  async stop(): Promise<void> {
    clearInterval(this.#idleTimer);
    this.#abort.abort();
    this.#kick?.();
    this.#readerKick?.();
    await Promise.allSettled([this.#reader, this.#claimer]);
    // Leased for the relay but never taken: back to the table at once, no attempt spent.
    await this.#release(this.#ready.splice(0), 'relay stopping: released unpublished');
    await this.#stream?.stop().catch(() => undefined);
    this.#stream = undefined;
    this.#connected = false;
  }

  #enterStandby(error: unknown): void {
    this.#standby = true;
    this.#connected = false;
    this.#logger.warn(
      'another relay reads the log; this one is a hot standby: it claims from the table and takes the log over when it is free',
      { source: this.name, error: String(error) },
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
            error: String(err),
            failures,
          });
          continue;
        }
        if (this.#standby) {
          this.#standby = false;
          this.#logger.warn('took the log over: the relay that held it let go', { source: this.name });
        }
        if (started?.slotCreated === true) {
          // The slot was dropped behind our back (an operator, a failover that lost it): the log
          // between the last confirmed position and now is gone. The table still holds every
          // undelivered message of that gap; claim them now, and say so.
          this.#logger.error(
            'the log slot was missing and has been created again: transactions committed while it was gone are not in the log; the relay delivers them from the table',
            { source: this.name },
          );
          context.error(
            new RelayStateError(
              'log_gap',
              `the ${this.name} source's slot was missing and was created again; transactions committed while it ` +
                'was gone are not in the log and are delivered from the table. Find out who dropped the slot ' +
                '(or which failover lost it: PostgreSQL 17 failover slots keep it on the standby)',
            ),
          );
          context.leftInTable();
        }
        // Whatever was read before the loss is read again from the confirmed position.
        this.#buffered.length = 0;
        this.#bufferedIds = 0;
        this.#groups.length = 0;
        this.#stream = next;
        this.#connected = true;
        failures = 0;
        this.#logger.info('log stream reconnected', { source: this.name });
        context.leftInTable();
        continue;
      }
      const full = this.#bufferedIds >= context.batchSize * MAX_BUFFERED_IDS_FACTOR;
      if (full && !this.#confirmOnRead) {
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
          error: String(err),
        });
        // The table has everything: a claim now picks up what the lost stream would have named.
        context.leftInTable();
        await stream.stop().catch(() => undefined);
        continue;
      }
      if (tx === null) return;
      if (this.#confirmOnRead) {
        this.#confirmRead(tx.endLsn);
        if (full) {
          // The relay is behind (the database slow or away): the rows are in the table, the
          // claims deliver them. Reading on keeps the server's log client answered.
          context.leftInTable();
          continue;
        }
      }
      this.#buffered.push(tx);
      this.#bufferedIds += tx.inserts.length;
      this.#kick?.();
    }
  }

  /** Claims buffered transactions, up to a batch of ids at a time, in log order. */
  async #claim(): Promise<void> {
    const signal = this.#abort.signal;
    const context = this.#context as SourceContext;
    while (!signal.aborted) {
      if (this.#paused || this.#buffered.length === 0 || this.#ready.length >= this.#maxReady) {
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
      let claimed = 0;
      const track = !this.#confirmOnRead;
      if (allIds.length === 0 && track) this.#groups.push({ endLsn, pending: false });
      for (let i = 0; i < allIds.length; i += context.batchSize) {
        const chunk = allIds.slice(i, i + context.batchSize);
        const entry: Group = { endLsn, pending: false };
        if (track) this.#groups.push(entry);
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
          context.error(err);
          continue;
        }
        claimed += batch.messages.length;
        if (batch.messages.length === 0) continue;
        // The log's order (commit order, then insert order), not the store's seq order: a group
        // of transactions can hold a long one's early rows behind later short ones.
        const position = new Map(chunk.map((id, i) => [id, i]));
        batch.messages.sort((a, b) => (position.get(a.id) ?? 0) - (position.get(b.id) ?? 0));
        entry.pending = track;
        const ready: SourceBatch = {
          ...batch,
          claimedAt: leasedAt,
          done: () => {
            entry.pending = false;
            this.#confirm();
          },
        };
        if (this.#paused) {
          // The transport went down while this claim ran: give it back at once.
          await this.#release([ready], 'transport unavailable: released unpublished');
          continue;
        }
        this.#ready.push(ready);
        context.ready();
      }
      if (claimed < allIds.length) context.leftInTable();
      this.#confirm();
    }
  }

  /**
   * Confirms the position past the longest prefix of groups that is done; with nothing pending
   * at all, the server's own position (other tables' WAL since the last outbox transaction).
   */
  #confirm(): void {
    const stream = this.#stream;
    if (!stream) return;
    if (this.#confirmOnRead) {
      // Everything read is confirmed already; past it, the server's position when the stream
      // holds nothing more (other tables' WAL, a shutdown's last records).
      this.#confirmRead(stream.idleLsn?.() ?? null);
      return;
    }
    let last: string | undefined;
    while (this.#groups.length > 0 && !(this.#groups[0] as Group).pending) {
      last = (this.#groups.shift() as Group).endLsn;
    }
    try {
      if (last !== undefined) stream.confirm(last);
      if (this.#groups.length === 0 && this.#buffered.length === 0) {
        const idle = stream.idleLsn?.();
        if (idle) stream.confirm(idle);
      }
    } catch (err) {
      this.#context?.error(err);
    }
  }
}
