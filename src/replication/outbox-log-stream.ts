/**
 * The outbox log stream: committed transactions that inserted outbox rows (or emitted prefixed
 * logical messages), read from a logical replication slot with PostgreSQL's built-in `pgoutput`
 * plugin, in commit order.
 *
 * ## Why an own decoder and not `pg-logical-replication`
 *
 * We read `pg-logical-replication` 2.5.0 (the version in the registry) before deciding. Its
 * `LogicalReplicationService` keeps the last *received* LSN (`_lastLsn`, updated by every XLogData
 * and every keepalive) and, from a 1-second timer, calls `acknowledge(_lastLsn)` whenever
 * `acknowledge.timeoutSeconds` (default 10) passed without an acknowledgement, also with
 * `acknowledge.auto: false`. `acknowledge()` writes that LSN + 1 as write, flush *and* apply
 * position, and PostgreSQL stores the flush position of a logical slot as its
 * `confirmed_flush_lsn`. So an idle stream reports transactions as done that nobody confirmed; a
 * relay that crashes before publishing them never sees them again. That is the loss this stream
 * must rule out. Turning the timer off (`timeoutSeconds: 0`) leaves no status updates at all
 * while idle (the server then ends the connection after `wal_sender_timeout`), and it does not
 * answer keepalives that request a reply by itself either. Wrapping it would mean replacing both
 * paths, and its output is per message, not per transaction. What remains is a small decoder:
 * the CopyData framing (`replication-protocol.ts`), eight pgoutput message kinds
 * (`pgoutput-decoder.ts`) and the per-transaction buffer (`transaction-assembler.ts`), over
 * node-postgres's copy-both support, which we already depend on.
 *
 * ## Positions
 *
 * Each standby status update reports `flush = apply =` the last position given to
 * {@link OutboxLogStream.confirm} (never more), and `write =` the furthest position received, so
 * that the server neither times the connection out nor waits on this client at shutdown. After a
 * restart PostgreSQL streams every transaction whose commit record starts at or after the
 * confirmed position: confirming a transaction's `endLsn` marks it and everything before it done.
 */
import type { Logger } from '../core/logger.js';
import { lsnFromBigInt, lsnToBigInt, type Lsn } from './lsn.js';
import {
  resolveOutboxLogStreamOptions,
  type OutboxLogStreamOptions,
  type ResolvedOutboxLogStreamOptions,
} from './outbox-log-stream-options.js';
import { loadPgClient, type PgClientSlice } from './pg-replication-client.js';
import { decodePgoutput } from './pgoutput-decoder.js';
import { ReplicationError } from './replication-error.js';
import { toReplicationError, type ReplicationContext } from './replication-error-map.js';
import { encodeStandbyStatus, parseServerCopyData } from './replication-protocol.js';
import {
  checkServer,
  ensurePublication,
  ensureSlot,
  readSlotInfo,
  slotInUse,
  type SlotInfo,
} from './replication-setup.js';
import { startReplicationSql } from './replication-sql.js';
import { TransactionAssembler, type OutboxTransaction } from './transaction-assembler.js';

/** What `start()` found and did. */
export interface OutboxLogStreamStart {
  /** The slot was created by this start: nothing before `startLsn` is in its log. */
  slotCreated: boolean;
  publicationCreated: boolean;
  /** Where streaming began: the slot's confirmed position. */
  startLsn: Lsn;
  /** The backend PID of the replication connection (pg_replication_slots.active_pid). */
  pid: number | null;
}

type State = 'new' | 'starting' | 'streaming' | 'stopping' | 'stopped' | 'failed';

interface Waiter {
  resolve(tx: OutboxTransaction | null): void;
  reject(err: unknown): void;
  cleanup(): void;
}

/** Resolves true when `promise` settles before `deadline` (epoch ms), false otherwise. */
async function settlesBy(promise: Promise<unknown>, deadline: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => true,
      ),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** `host:port/database` for messages; never the password. */
function describeTarget(options: ResolvedOutboxLogStreamOptions): { target: string; database?: string } {
  const c = options.connection;
  if (c) {
    const database = typeof c.database === 'string' ? c.database : undefined;
    return {
      target: `${c.host ?? 'localhost'}:${c.port ?? 5432}/${database ?? ''}`,
      ...(database ? { database } : {}),
    };
  }
  try {
    const url = new URL(options.connectionString ?? '');
    const database = decodeURIComponent(url.pathname.replace(/^\//, ''));
    return {
      target: `${url.hostname || 'localhost'}:${url.port || 5432}/${database}`,
      ...(database ? { database } : {}),
    };
  } catch {
    return { target: 'the configured server' };
  }
}

function roleFromConfig(options: ResolvedOutboxLogStreamOptions): string | undefined {
  if (options.connection)
    return typeof options.connection.user === 'string' ? options.connection.user : undefined;
  try {
    const user = new URL(options.connectionString ?? '').username;
    return user ? decodeURIComponent(user) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Streams committed outbox transactions from a logical replication slot.
 *
 * @example
 * ```ts
 * const stream = new OutboxLogStream({ connectionString, schema: 'mailroom' });
 * await stream.start();
 * for await (const tx of stream) {
 *   await publishAll(tx.inserts);      // whatever "done" means for the caller
 *   stream.confirm(tx.endLsn);         // only now may the server forget it
 * }
 * ```
 *
 * Guarantees: transactions arrive whole, after their commit, in commit order; rolled-back ones
 * never. The server's confirmed position (`confirmed_flush_lsn`) moves only by `confirm()`, so
 * whatever was not confirmed is streamed again by the next stream on the slot (at least once).
 */
export class OutboxLogStream implements AsyncIterable<OutboxTransaction> {
  readonly slot: string;
  readonly publication: string;
  readonly schema: string;
  private readonly options: ResolvedOutboxLogStreamOptions;
  private readonly logger: Logger;
  private readonly ctx: ReplicationContext;
  private readonly assembler: TransactionAssembler;

  private state: State = 'new';
  private startPromise: Promise<OutboxLogStreamStart> | undefined;
  private stopPromise: Promise<void> | undefined;
  private failure: ReplicationError | undefined;
  private client: PgClientSlice | undefined;
  /** Settles (never rejects) when the START_REPLICATION command ends. */
  private replicationDone: Promise<unknown> | undefined;
  private copyBoth = false;

  private readonly queue: OutboxTransaction[] = [];
  private queuedItems = 0;
  private readonly waiters: Waiter[] = [];
  private paused = false;

  /** Flush position reported to the server: the highest LSN given to confirm(). */
  private confirmed = 0n;
  /** The highest position handed to the consumer (start, yielded endLsn, idleLsn()). */
  private handedOut = 0n;
  /** The furthest WAL position received (XLogData start, keepalive end). */
  private received = 0n;
  /** The last keepalive's position. */
  private keepaliveLsn = 0n;

  private lastReceivedAt = 0;
  private lastStatusAt = 0;
  private statusTimer: ReturnType<typeof setInterval> | undefined;
  private statusScheduled = false;
  private readonly onAbort = () => void this.stop();

  constructor(options: OutboxLogStreamOptions) {
    this.options = resolveOutboxLogStreamOptions(options);
    this.slot = this.options.slot;
    this.publication = this.options.publication;
    this.schema = this.options.schema;
    this.logger = this.options.logger;
    const { target, database } = describeTarget(this.options);
    this.ctx = {
      target,
      database,
      role: roleFromConfig(this.options),
      schema: this.schema,
      slot: this.slot,
      publication: this.publication,
    };
    this.assembler = new TransactionAssembler(
      { schema: this.schema, table: 'outbox', messagePrefix: this.options.messagePrefix },
      (tx) => this.push(tx),
      (n) => this.logger.warn(n.message, { event: 'replication_notice', slot: this.slot, ...n.fields }),
    );
    this.options.signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /** The position last given to {@link confirm} (or the slot's position at start). */
  get confirmedLsn(): Lsn {
    return lsnFromBigInt(this.confirmed);
  }

  /** The furthest WAL position received from the server. */
  get receivedLsn(): Lsn {
    return lsnFromBigInt(this.received);
  }

  /** Streaming (started, not stopped, not failed). */
  get running(): boolean {
    return this.state === 'streaming';
  }

  /**
   * Checks the server (wal_level, the role's REPLICATION attribute), creates the publication and
   * the slot when missing (or checks the existing ones), then starts streaming from the slot's
   * confirmed position. Idempotent: a second call returns the first one's promise. Rejects with
   * a {@link ReplicationError} saying what to change; a stream that failed to start cannot be
   * started again (make a new one).
   */
  start(): Promise<OutboxLogStreamStart> {
    if (this.state === 'stopping' || this.state === 'stopped') {
      return Promise.reject(
        new ReplicationError(
          'stopped',
          `the log stream on slot "${this.slot}" was stopped; create a new OutboxLogStream`,
        ),
      );
    }
    if (this.startPromise) return this.startPromise;
    if (this.options.signal?.aborted) {
      this.state = 'stopped';
      return Promise.reject(
        new ReplicationError('stopped', `the log stream's signal was aborted before start()`),
      );
    }
    this.state = 'starting';
    this.startPromise = this.doStart().catch(async (err: unknown) => {
      const error = toReplicationError(err, 'connect', this.ctx);
      if (this.state === 'starting') {
        this.state = 'failed';
        this.failure = error;
      }
      this.stopTimers();
      await this.closeClient(Date.now() + this.options.stopTimeoutMs, false);
      throw error;
    });
    return this.startPromise;
  }

  private baseConfig(): Record<string, unknown> {
    const o = this.options;
    return o.connection ? { ...o.connection } : { connectionString: o.connectionString };
  }

  private async doStart(): Promise<OutboxLogStreamStart> {
    const o = this.options;
    const Client = await loadPgClient();
    const admin = new Client({
      ...this.baseConfig(),
      connectionTimeoutMillis: o.connectTimeoutMs,
      statement_timeout: o.setupTimeoutMs,
      // A little longer than the server's own timeout, so the server's error (with its advice)
      // arrives first; this one catches a server that is not answering at all.
      query_timeout: o.setupTimeoutMs + 1000,
    });
    admin.on('error', () => undefined);
    try {
      try {
        await admin.connect();
      } catch (err) {
        throw toReplicationError(err, 'connect', this.ctx);
      }
      await checkServer(admin, this.ctx);
      const publication = await ensurePublication(admin, this.ctx, o.createPublication);
      const slot = await ensureSlot(admin, this.ctx, o.createSlot);
      if (this.state !== 'starting')
        throw new ReplicationError('stopped', 'the log stream was stopped while starting');
      const pid = await this.openReplication(Client, admin, slot.confirmedFlushLsn);
      this.logger.info('replication stream started', {
        event: 'replication_started',
        slot: this.slot,
        publication: this.publication,
        startLsn: slot.confirmedFlushLsn,
        slotCreated: slot.created,
        publicationCreated: publication.created,
        pid,
      });
      return {
        slotCreated: slot.created,
        publicationCreated: publication.created,
        startLsn: slot.confirmedFlushLsn,
        pid,
      };
    } finally {
      await settlesBy(admin.end(), Date.now() + o.stopTimeoutMs);
    }
  }

  /** Opens the replication connection and runs START_REPLICATION; resolves once streaming. */
  private async openReplication(
    Client: new (config: Record<string, unknown>) => PgClientSlice,
    admin: PgClientSlice,
    startLsn: Lsn,
  ): Promise<number | null> {
    const o = this.options;
    const start = lsnToBigInt(startLsn);
    this.confirmed = start;
    this.handedOut = start;
    this.received = start;
    const client = new Client({
      application_name: o.applicationName,
      ...this.baseConfig(),
      replication: 'database',
      connectionTimeoutMillis: o.connectTimeoutMs,
      keepAlive: true,
    });
    this.client = client;
    client.on('error', (err) => this.fail(toReplicationError(err, 'stream', this.ctx)));
    client.on('end', () => {
      if (this.state === 'streaming') {
        this.fail(
          new ReplicationError(
            'connection_lost',
            `the replication connection to ${this.ctx.target} (slot "${this.slot}") closed; start a new stream ` +
              `(it resumes from the last confirmed position)`,
            { details: { slot: this.slot } },
          ),
        );
      }
    });
    try {
      await client.connect();
    } catch (err) {
      throw toReplicationError(err, 'replication_connect', this.ctx);
    }
    const connection = client.connection;
    connection.on('copyData', (msg) => this.onCopyData(msg.chunk));
    const started = new Promise<void>((resolve) => {
      connection.once('replicationStart', () => {
        this.copyBoth = true;
        if (this.state === 'starting') this.state = 'streaming';
        this.lastReceivedAt = Date.now();
        this.lastStatusAt = Date.now();
        this.startTimers();
        resolve();
      });
    });
    const command = client.query(startReplicationSql(this.slot, startLsn, this.publication));
    this.replicationDone = command.then(
      () => {
        this.copyBoth = false;
        if (this.state === 'streaming') {
          this.fail(
            new ReplicationError(
              'connection_lost',
              `the server ended the replication stream of slot "${this.slot}"; start a new stream`,
              { details: { slot: this.slot } },
            ),
          );
        }
      },
      (err: unknown) => {
        this.copyBoth = false;
        if (this.state === 'streaming') this.fail(toReplicationError(err, 'stream', this.ctx));
      },
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      started.then(() => 'started' as const),
      command.then(
        () => 'ended' as const,
        (err: unknown) => ({ err }),
      ),
      new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), o.connectTimeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
    if (outcome === 'started') return client.processID ?? null;
    if (outcome === 'timeout') {
      throw new ReplicationError(
        'connect',
        `START_REPLICATION on slot "${this.slot}" got no answer from ${this.ctx.target} within ${o.connectTimeoutMs} ms`,
        { details: { slot: this.slot } },
      );
    }
    if (outcome === 'ended') {
      throw new ReplicationError(
        'protocol',
        `the server ended START_REPLICATION on slot "${this.slot}" at once`,
      );
    }
    const code = (outcome.err as { code?: unknown })?.code;
    if (code === '55006') {
      const pid = /PID (\d+)/.exec(String((outcome.err as { message?: unknown })?.message))?.[1];
      if (pid !== undefined) throw await slotInUse(admin, this.ctx, Number(pid));
    }
    throw toReplicationError(outcome.err, 'start_replication', this.ctx);
  }

  private onCopyData(chunk: Buffer): void {
    if (this.state !== 'streaming' && this.state !== 'starting') return;
    this.lastReceivedAt = Date.now();
    try {
      const msg = parseServerCopyData(chunk);
      if (!msg) {
        this.logger.warn('unknown replication message from the server, ignored', {
          event: 'replication_unknown_message',
          kind: chunk[0],
          slot: this.slot,
        });
        return;
      }
      if (msg.kind === 'keepalive') {
        if (msg.walEnd > this.received) this.received = msg.walEnd;
        if (msg.walEnd > this.keepaliveLsn) this.keepaliveLsn = msg.walEnd;
        // The server asks for a reply when it has heard nothing for half its wal_sender_timeout,
        // and when it shuts down: a walsender then waits until its client's flush position (or,
        // when that is invalid, its write position) reaches everything sent. With transactions
        // handed out and not yet confirmed (table-less messages still being published), the
        // reply says flush "invalid" and write = all received, as pg_receivewal does: the server
        // may shut down, and the slot keeps the confirmed position, so the next stream yields
        // those transactions again. The next regular update reports the flush position again.
        if (msg.replyRequested) this.sendStatus(false, this.confirmed < this.received);
        return;
      }
      if (msg.dataStart > this.received) this.received = msg.dataStart;
      this.assembler.handle(decodePgoutput(msg.data), lsnFromBigInt(msg.dataStart), msg.sentAt);
    } catch (err) {
      this.fail(
        new ReplicationError(
          'protocol',
          `could not read the replication stream of slot "${this.slot}": ${(err as Error).message}`,
          { cause: err, details: { slot: this.slot } },
        ),
      );
    }
  }

  private weight(tx: OutboxTransaction): number {
    return 1 + tx.inserts.length + tx.messages.length;
  }

  private push(tx: OutboxTransaction): void {
    const waiter = this.waiters.shift();
    if (waiter) {
      this.handOut(tx);
      waiter.cleanup();
      waiter.resolve(tx);
      return;
    }
    this.queue.push(tx);
    this.queuedItems += this.weight(tx);
    if (!this.paused && this.queuedItems > this.options.highWaterMark && this.client) {
      this.paused = true;
      this.client.connection.stream.pause();
    }
  }

  private handOut(tx: OutboxTransaction): void {
    const end = lsnToBigInt(tx.endLsn);
    if (end > this.handedOut) this.handedOut = end;
  }

  private take(): OutboxTransaction | undefined {
    const tx = this.queue.shift();
    if (!tx) return undefined;
    this.queuedItems -= this.weight(tx);
    this.handOut(tx);
    if (this.paused && this.queuedItems <= this.options.highWaterMark / 2 && this.client) {
      this.paused = false;
      // Silence while paused was ours, not the server's.
      this.lastReceivedAt = Date.now();
      this.client.connection.stream.resume();
    }
    return tx;
  }

  /**
   * The next committed transaction, in commit order. Resolves `null` once the stream is stopped.
   * Rejects with a {@link ReplicationError} (`connection_lost`, `protocol`…) when the stream broke,
   * after the transactions it had already received were taken; start a new stream then.
   * Aborting `signal` rejects this call with the signal's reason and leaves the stream running.
   */
  next(signal?: AbortSignal): Promise<OutboxTransaction | null> {
    const tx = this.take();
    if (tx) return Promise.resolve(tx);
    if (this.failure) return Promise.reject(this.failure);
    if (this.state === 'stopping' || this.state === 'stopped') return Promise.resolve(null);
    if (this.state === 'new') {
      return Promise.reject(new ReplicationError('not_started', 'call start() before next()'));
    }
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<OutboxTransaction | null>((resolve, reject) => {
      const onAbort = () => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(signal?.reason);
      };
      const waiter: Waiter = {
        resolve,
        reject,
        cleanup: () => signal?.removeEventListener('abort', onAbort),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  async *[Symbol.asyncIterator](): AsyncIterator<OutboxTransaction> {
    for (;;) {
      const tx = await this.next();
      if (!tx) return;
      yield tx;
    }
  }

  /**
   * Tells the server that everything before `lsn` is done: normally the `endLsn` of the last
   * transaction of a prefix that is fully handled. This is the only way the slot's confirmed
   * position moves. Lower or equal positions are ignored (it never moves back). A position beyond
   * what the stream handed out (yielded `endLsn`s, {@link idleLsn}) throws `confirm_ahead`: it
   * would skip transactions nobody has seen. The update is sent at once (coalesced per tick).
   */
  confirm(lsn: Lsn): void {
    const position = lsnToBigInt(lsn);
    if (position <= this.confirmed) return;
    if (position > this.handedOut) {
      throw new ReplicationError(
        'confirm_ahead',
        `confirm(${lsn}) is beyond the last position this stream handed out (${lsnFromBigInt(this.handedOut)}); ` +
          `confirm only endLsn values of transactions it yielded (or idleLsn())`,
        { details: { lsn, handedOut: lsnFromBigInt(this.handedOut) } },
      );
    }
    this.confirmed = position;
    if (!this.statusScheduled) {
      this.statusScheduled = true;
      setImmediate(() => {
        this.statusScheduled = false;
        this.sendStatus(false);
      });
    }
  }

  /**
   * The server's position when this stream holds nothing un-yielded: no transaction half
   * received, nothing queued. Everything before it was either yielded or had nothing for the
   * outbox (other tables' traffic). Once every yielded transaction is handled, confirming it lets
   * the slot release the WAL of that other traffic; without it the confirmed position stays at
   * the last outbox transaction and the server keeps WAL from there on. `null` while anything is
   * pending. The returned position counts as handed out for {@link confirm}.
   */
  idleLsn(): Lsn | null {
    if (this.state !== 'streaming' || this.queue.length > 0 || this.assembler.inTransaction) return null;
    let position = this.keepaliveLsn;
    const lastEnd = this.assembler.lastEndLsn;
    if (lastEnd !== undefined && lsnToBigInt(lastEnd) > position) position = lsnToBigInt(lastEnd);
    if (position <= this.handedOut) return lsnFromBigInt(this.handedOut);
    this.handedOut = position;
    return lsnFromBigInt(position);
  }

  private startTimers(): void {
    this.stopTimers();
    const tick = Math.max(10, Math.min(this.options.statusIntervalMs, 1000));
    this.statusTimer = setInterval(() => this.onTick(), tick);
    this.statusTimer.unref();
  }

  private stopTimers(): void {
    if (this.statusTimer) clearInterval(this.statusTimer);
    this.statusTimer = undefined;
  }

  private onTick(): void {
    if (this.state !== 'streaming') return;
    const now = Date.now();
    const silent = now - this.lastReceivedAt;
    if (!this.paused && silent > this.options.timeoutMs) {
      this.fail(
        new ReplicationError(
          'connection_lost',
          `the server sent nothing on the replication connection of slot "${this.slot}" for ${silent} ms ` +
            `(timeoutMs ${this.options.timeoutMs}), although asked to reply; start a new stream`,
          { details: { slot: this.slot, silentMs: silent } },
        ),
      );
      return;
    }
    if (now - this.lastStatusAt >= this.options.statusIntervalMs) {
      // Asking for a reply when the server has been quiet tells a silent server from a dead one.
      this.sendStatus(!this.paused && silent >= this.options.statusIntervalMs);
    }
  }

  /**
   * Sends a standby status update: write = furthest received, flush = apply = confirmed. The
   * flush position is what the server stores as the slot's confirmed_flush_lsn.
   */
  private sendStatus(replyRequested: boolean, flushInvalid = false): void {
    if (!this.client || !this.copyBoth) return;
    if (this.state !== 'streaming' && this.state !== 'stopping') return;
    const flush = this.confirmed;
    const write = this.received > flush ? this.received : flush;
    try {
      this.client.connection.sendCopyFromChunk(
        encodeStandbyStatus(
          flushInvalid
            ? { write, flush: 0n, apply: 0n, replyRequested }
            : { write, flush, apply: flush, replyRequested },
        ),
      );
      this.lastStatusAt = Date.now();
    } catch (err) {
      this.fail(toReplicationError(err, 'stream', this.ctx));
    }
  }

  private fail(error: ReplicationError): void {
    if (this.state !== 'streaming' && this.state !== 'starting') return;
    const wasStreaming = this.state === 'streaming';
    this.state = 'failed';
    this.failure = error;
    this.stopTimers();
    this.logger.error('replication stream failed', {
      event: 'replication_failed',
      slot: this.slot,
      error,
    });
    for (const waiter of this.waiters.splice(0)) {
      waiter.cleanup();
      waiter.reject(error);
    }
    if (wasStreaming) void this.closeClient(Date.now() + this.options.stopTimeoutMs, false);
  }

  /**
   * Ends the client: gracefully (final status update, CopyDone, wait for the server to end the
   * command, Terminate) or not (the socket is cut). Bounded by `deadline`.
   */
  private async closeClient(deadline: number, graceful: boolean): Promise<void> {
    const client = this.client;
    if (!client) return;
    this.client = undefined;
    try {
      if (graceful && this.copyBoth) {
        const flush = this.confirmed;
        const write = this.received > flush ? this.received : flush;
        client.connection.sendCopyFromChunk(
          encodeStandbyStatus({ write, flush, apply: flush, replyRequested: false }),
        );
        client.connection.endCopyFrom();
        if (this.paused) client.connection.stream.resume();
        if (this.replicationDone) await settlesBy(this.replicationDone, deadline);
      }
    } catch {
      // The socket may be gone already; ending it below is all that is left to do.
    }
    if (!graceful) client.connection.stream.destroy();
    const ended = await settlesBy(client.end(), deadline);
    if (!ended) client.connection.stream.destroy();
    client.removeAllListeners('end');
  }

  /**
   * Stops streaming: sends a last status update (the confirmed position), ends the stream with
   * CopyDone, waits for the server to finish it (at most `stopTimeoutMs`, then the socket is
   * cut) and closes the connection; the server releases the slot as the command ends. Pending
   * and later `next()` calls resolve `null`; transactions received but not taken are dropped
   * (they were not confirmed, so the next stream yields them again). Idempotent.
   */
  stop(): Promise<void> {
    this.stopPromise ??= this.doStop();
    return this.stopPromise;
  }

  private async doStop(): Promise<void> {
    const deadline = Date.now() + this.options.stopTimeoutMs;
    this.options.signal?.removeEventListener('abort', this.onAbort);
    const failed = this.state === 'failed';
    this.state = 'stopping';
    this.failure = undefined;
    this.stopTimers();
    for (const waiter of this.waiters.splice(0)) {
      waiter.cleanup();
      waiter.resolve(null);
    }
    this.queue.splice(0);
    this.queuedItems = 0;
    if (this.startPromise) await settlesBy(this.startPromise, deadline);
    await this.closeClient(deadline, !failed);
    this.state = 'stopped';
    this.logger.info('replication stream stopped', {
      event: 'replication_stopped',
      slot: this.slot,
      confirmedLsn: this.confirmedLsn,
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /**
   * The slot's health, read on an ordinary connection of its own: active and by whom, the
   * confirmed and restart positions, the WAL the server keeps for it and the bytes written since
   * the confirmed position. `null` when the slot does not exist. Works before `start()` and after
   * `stop()`.
   */
  async slotInfo(): Promise<SlotInfo | null> {
    const Client = await loadPgClient();
    const client = new Client({
      ...this.baseConfig(),
      connectionTimeoutMillis: this.options.connectTimeoutMs,
      query_timeout: this.options.setupTimeoutMs,
    });
    client.on('error', () => undefined);
    try {
      try {
        await client.connect();
      } catch (err) {
        throw toReplicationError(err, 'connect', this.ctx);
      }
      return await readSlotInfo(client, this.slot);
    } catch (err) {
      throw toReplicationError(err, 'check', this.ctx);
    } finally {
      await settlesBy(client.end(), Date.now() + this.options.stopTimeoutMs);
    }
  }
}
