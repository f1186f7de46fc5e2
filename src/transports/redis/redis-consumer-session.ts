/**
 * The consumer's session: two connections (one for the blocking `XREADGROUP`, one for
 * acknowledgements, claims and dead letters), the consumer group made sure of, the read loop
 * (own pending entries first, then new ones, never more than `prefetch` held), the takeover of
 * entries other consumers left pending (`XAUTOCLAIM`), the refresh of the entries it holds, and
 * the dead letters (`XADD` and `XACK` in one `MULTI`/`EXEC`).
 *
 * Connections are opened by the transport's `RedisSessions` (same client options, connect
 * deadline and typed connect errors); a session that loses either connection ends as a whole and
 * the consumer opens a new one.
 *
 * @module
 */
import { TransportError } from '../../core/errors/transport-error.js';
import { ConfigError } from '../../core/errors/config-error.js';
import { isMailroomError } from '../../core/errors/mailroom-error.js';
import type { DeadLetterReason } from '../../consumer/consumer-events.js';
import type { RedisArgument, RedisClient } from './redis-client.js';
import type { ResolvedRedisConsumerOptions } from './redis-consumer-options.js';
import { connectionLostError, describe, isReplyError, replyCode } from './redis-errors.js';
import { noop, RedisSessions } from './redis-session.js';
import { PAYLOAD_FIELD, TOPIC_FIELD } from './redis-wire.js';

/** How long one `XREADGROUP` blocks for new entries before it asks again. */
export const BLOCK_MS = 2000;

/** Cut the error field of a dead letter to this many characters, as the other consumers do. */
export const MAX_ERROR_FIELD_CHARS = 1000;

/** Fields a dead letter gets besides the original's, named as the other consumers' headers. */
export const ERROR_FIELD = 'mailroom-error';
export const FAILED_ATTEMPTS_FIELD = 'mailroom-failed-attempts';
export const DEAD_AT_FIELD = 'mailroom-dead-at';
export const DEAD_REASON_FIELD = 'mailroom-dead-reason';
/** The stream the entry was consumed from. */
export const DEAD_STREAM_FIELD = 'mailroom-dead-stream';
export const DEAD_GROUP_FIELD = 'mailroom-dead-group';
/** The original entry's id in that stream. */
export const DEAD_ENTRY_FIELD = 'mailroom-dead-entry';
export const DEAD_TOPIC_FIELD = 'mailroom-dead-topic';

const DEAD_FIELDS = new Set([
  ERROR_FIELD,
  FAILED_ATTEMPTS_FIELD,
  DEAD_AT_FIELD,
  DEAD_REASON_FIELD,
  DEAD_STREAM_FIELD,
  DEAD_GROUP_FIELD,
  DEAD_ENTRY_FIELD,
  DEAD_TOPIC_FIELD,
]);

/** Times a dead letter is tried again at once when another client wrote to the dead stream meanwhile. */
const WATCH_RETRIES = 10;

/** Ids per `XCLAIM … JUSTID` of the refresh. */
const REFRESH_CHUNK = 1000;

/** A client as the consumer drives it: ioredis's `Redis`, with its `callBuffer` for binary replies. */
export interface RedisConsumerClient extends RedisClient {
  /** Sends one command; bulk strings in the reply come back as Buffers. */
  callBuffer(command: string, ...args: RedisArgument[]): Promise<unknown>;
}

/** One stream entry read: its id, and its fields (`null` when it was deleted while pending). */
export interface StreamEntry {
  id: string;
  fields: Buffer[] | null;
}

/** An entry handed to the consumer, with what the pending entries list knows of it. */
export interface EntryDelivery {
  entry: StreamEntry & { fields: Buffer[] };
  /**
   * Deliveries of the entry before this one (its delivery count in the pending entries list minus
   * one), when known and meaningful: for entries taken over from another consumer, and for this
   * consumer's own pending entries read by the first session after `start()`; undefined for those
   * re-read after a reconnect (the process counted their failures itself).
   */
  failedBefore: number | undefined;
  /** `'claimed'`: taken over from another consumer with XAUTOCLAIM. */
  via: 'new' | 'pending' | 'claimed';
}

/** What the session reports back to the consumer. */
export interface SessionHooks {
  deliver(session: RedisConsumerSession, delivery: EntryDelivery): void;
  claimed(ids: string[]): void;
  /** A command of the maintenance loop failed without ending the session. */
  warn(message: string, error: Error): void;
}

function asString(value: unknown): string {
  return Buffer.isBuffer(value) ? value.toString('utf8') : String(value);
}

/** An `[id, fields]` list as XREADGROUP, XAUTOCLAIM and XRANGE return it. */
function parseEntries(list: unknown): StreamEntry[] {
  if (!Array.isArray(list)) return [];
  const entries: StreamEntry[] = [];
  for (const item of list as unknown[]) {
    if (!Array.isArray(item)) continue;
    const [id, fields] = item as [unknown, unknown];
    entries.push({ id: asString(id), fields: Array.isArray(fields) ? (fields as Buffer[]) : null });
  }
  return entries;
}

/**
 * The entries of one stream in an XREADGROUP reply: RESP2 gives `[[stream, entries]]`, RESP3 a
 * map, which ioredis hands over flat as `[stream, entries]`; `null` when there was nothing.
 */
export function readReplyEntries(reply: unknown): StreamEntry[] {
  if (!Array.isArray(reply) || reply.length === 0) return [];
  const first: unknown = reply[0];
  if (Array.isArray(first)) return parseEntries((first as unknown[])[1]);
  return parseEntries(reply[1]);
}

/**
 * The fields of a dead letter: the original's (a previous dead letter's reasons left out), then why
 * it died, the payload kept last as the transport writes it.
 */
export function deadLetterFields(
  entry: StreamEntry & { fields: Buffer[] },
  options: Readonly<ResolvedRedisConsumerOptions>,
  why: DeadLetterReason,
): RedisArgument[] {
  const fields: RedisArgument[] = [];
  let payload: Buffer | undefined;
  let topic: string | undefined;
  for (let i = 0; i + 1 < entry.fields.length; i += 2) {
    const name = asString(entry.fields[i]);
    const value = entry.fields[i + 1] as Buffer;
    if (DEAD_FIELDS.has(name)) continue;
    if (name === PAYLOAD_FIELD) {
      payload = value;
      continue;
    }
    if (name === TOPIC_FIELD) topic = asString(value);
    fields.push(name, value);
  }
  fields.push(
    ERROR_FIELD,
    why.error.message.slice(0, MAX_ERROR_FIELD_CHARS),
    FAILED_ATTEMPTS_FIELD,
    String(why.failedAttempts),
    DEAD_AT_FIELD,
    new Date().toISOString(),
    DEAD_REASON_FIELD,
    why.reason,
    DEAD_STREAM_FIELD,
    options.streamKey,
    DEAD_GROUP_FIELD,
    options.group,
    DEAD_ENTRY_FIELD,
    entry.id,
    DEAD_TOPIC_FIELD,
    topic ?? options.topic,
  );
  if (payload !== undefined) fields.push(PAYLOAD_FIELD, payload);
  return fields;
}

/** A name CLIENT SETNAME accepts (no spaces or control characters). */
function connectionName(options: Readonly<ResolvedRedisConsumerOptions>, role: string): string {
  return `mailroom-consumer:${options.group}:${options.consumerName}:${role}`.replace(/[^\w.:@/-]/g, '_');
}

/**
 * One session of a {@link RedisConsumer}: its two connections and what runs on them. Made by
 * {@link RedisConsumerSession.open}; ended by {@link close} (stopped) or {@link destroy} (lost).
 */
export class RedisConsumerSession {
  readonly #options: Readonly<ResolvedRedisConsumerOptions>;
  readonly #hooks: SessionHooks;
  /** Pass on the delivery counts of this consumer's own pending entries (first session after start()). */
  readonly #countPending: boolean;
  readonly #readerConnection: RedisSessions;
  readonly #commandConnection: RedisSessions;
  #reader!: RedisConsumerClient;
  #commands!: RedisConsumerClient;
  #readerId = '';
  readonly #ended = new AbortController();
  #lostReason: Error | undefined;
  /** Entries delivered and not yet acknowledged or dead-lettered: at most `prefetch`. */
  readonly #held = new Set<string>();
  #slotFreed: (() => void) | undefined;
  #reading = false;
  #blocked = false;
  #readLoop: Promise<void> = Promise.resolve();
  #maintainTimer: ReturnType<typeof setTimeout> | undefined;
  #maintaining: Promise<void> | undefined;
  /** Where the next XAUTOCLAIM continues its scan of the pending entries list. */
  #claimCursor = '0-0';
  /** Dead letters one at a time: WATCH holds for the connection, and EXEC of one would clear another's. */
  #deadLetters: Promise<unknown> = Promise.resolve();
  #closing: Promise<void> | undefined;

  private constructor(
    options: Readonly<ResolvedRedisConsumerOptions>,
    hooks: SessionHooks,
    countPending: boolean,
  ) {
    this.#options = options;
    this.#hooks = hooks;
    this.#countPending = countPending;
    this.#readerConnection = new RedisSessions(options.connection);
    this.#commandConnection = new RedisSessions(options.connection);
  }

  /**
   * Connects both connections, creates the group when missing and starts reading. Throws a
   * `TransportError` (`unreachable`, `auth_failed`, `group_failed`, `dead_letter_stream_invalid`,
   * `setup_failed`) or
   * a `ConfigError` for a client without `callBuffer`. `countPending`: see {@link EntryDelivery.failedBefore}.
   */
  static async open(
    options: Readonly<ResolvedRedisConsumerOptions>,
    hooks: SessionHooks,
    cancelled: () => boolean,
    countPending: boolean,
  ): Promise<RedisConsumerSession> {
    const session = new RedisConsumerSession(options, hooks, countPending);
    try {
      await session.#connect(cancelled);
    } catch (err) {
      session.destroy(err instanceof Error ? err : new Error(String(err)));
      throw err;
    }
    return session;
  }

  /** True while both connections are up and the session was not ended. */
  get open(): boolean {
    return !this.#ended.signal.aborted;
  }

  /** Aborted when the session ends. */
  get ended(): AbortSignal {
    return this.#ended.signal;
  }

  get lostReason(): Error | undefined {
    return this.#lostReason;
  }

  async #connect(cancelled: () => boolean): Promise<void> {
    const { safeUrl } = this.#options.endpoint;
    const deadline = AbortSignal.timeout(this.#options.connectTimeoutMs);
    const [reader, commands] = await Promise.all([
      this.#readerConnection.open(),
      this.#commandConnection.open(),
    ]);
    for (const client of [reader, commands]) {
      if (typeof (client as Partial<RedisConsumerClient>).callBuffer !== 'function') {
        throw new ConfigError(
          'createClient',
          'RedisConsumer option createClient must make clients with callBuffer(command, ...args) (as ioredis ' +
            'does): stream entries carry binary payloads',
        );
      }
    }
    this.#reader = reader as RedisConsumerClient;
    this.#commands = commands as RedisConsumerClient;
    for (const [client, connection] of [
      [reader, this.#readerConnection],
      [commands, this.#commandConnection],
    ] as const) {
      client.on('end', () =>
        this.destroy(
          connection.lostReason ?? connectionLostError(safeUrl, 'the server closed the connection'),
        ),
      );
    }
    const setup = async () => {
      await Promise.all([
        reader.call('CLIENT', 'SETNAME', connectionName(this.#options, 'read')),
        commands.call('CLIENT', 'SETNAME', connectionName(this.#options, 'commands')),
      ]);
      this.#readerId = asString(await reader.call('CLIENT', 'ID'));
      await this.#ensureGroup();
      await this.#checkDeadLetterStream();
    };
    const aborted = new Promise<never>((_, reject) =>
      deadline.addEventListener(
        'abort',
        () =>
          reject(
            new TransportError(
              'unreachable',
              `the Redis server at ${safeUrl} did not answer the consumer's setup (CLIENT, XGROUP CREATE, TYPE) ` +
                `within connectTimeoutMs (${this.#options.connectTimeoutMs} ms)`,
              { details: { url: safeUrl } },
            ),
          ),
        { once: true },
      ),
    );
    aborted.catch(noop);
    try {
      await Promise.race([setup(), aborted]);
    } catch (err) {
      if (isMailroomError(err)) throw err;
      const reason = this.#lostReason?.message ?? describe(err);
      throw new TransportError(
        'setup_failed',
        `the Redis server at ${safeUrl} did not complete the consumer's setup (${reason}); the user needs ` +
          'CLIENT, XGROUP, TYPE and the stream commands on the stream and dead-letter keys',
        { cause: err, details: { url: safeUrl } },
      );
    }
    if (cancelled() || !this.open) return;
    this.#reading = true;
    this.#readLoop = this.#read();
    this.#scheduleMaintenance();
  }

  /** `XGROUP CREATE … MKSTREAM` from `$` or `0`; a group that exists already is left as it is. */
  async #ensureGroup(): Promise<void> {
    const { streamKey, group, startFrom, endpoint } = this.#options;
    try {
      await this.#commands.call(
        'XGROUP',
        'CREATE',
        streamKey,
        group,
        startFrom === 'new' ? '$' : '0',
        'MKSTREAM',
      );
    } catch (err) {
      if (isReplyError(err) && replyCode(err) === 'BUSYGROUP') return;
      if (!isReplyError(err)) throw err;
      const hint =
        replyCode(err) === 'WRONGTYPE'
          ? `key ${JSON.stringify(streamKey)} exists and is not a stream; rename or delete it, or change the stream template`
          : replyCode(err) === 'NOPERM'
            ? 'the user needs XGROUP, XREADGROUP, XACK, XAUTOCLAIM, XCLAIM, XPENDING, XADD, MULTI, EXEC, WATCH and TYPE on these keys'
            : 'check the stream and group names';
      throw new TransportError(
        'group_failed',
        `the Redis server at ${endpoint.safeUrl} refused to create consumer group ${JSON.stringify(group)} on ` +
          `stream ${JSON.stringify(streamKey)} (${err.message}); ${hint}`,
        { cause: err, details: { url: endpoint.safeUrl, stream: streamKey, group } },
      );
    }
  }

  /** A dead-letter stream key holding something else would refuse every dead letter: said at start. */
  async #checkDeadLetterStream(): Promise<void> {
    const { deadLetterStream, endpoint } = this.#options;
    const type = asString(await this.#commands.call('TYPE', deadLetterStream));
    if (type === 'stream' || type === 'none') return;
    throw new TransportError(
      'dead_letter_stream_invalid',
      `key ${JSON.stringify(deadLetterStream)} on the Redis server at ${endpoint.safeUrl} is a ${type}, not a stream, ` +
        'so no dead letter could be added to it; rename or delete that key, or set deadLetterStream',
      { details: { url: endpoint.safeUrl, deadLetterStream, type } },
    );
  }

  /**
   * Sends a command and waits for its reply at most `replyTimeoutMs` (plus `extraMs`); no reply by
   * then ends the session (the server or the network is stuck) and rejects.
   */
  #call(
    client: RedisConsumerClient,
    binary: boolean,
    args: [string, ...RedisArgument[]],
    extraMs = 0,
  ): Promise<unknown> {
    const [command, ...rest] = args;
    const sent = binary ? client.callBuffer(command, ...rest) : client.call(command, ...rest);
    return this.#replyWithin(sent, command, extraMs);
  }

  /** `reply`, or the session ended when none came within `replyTimeoutMs` (plus `extraMs`). */
  async #replyWithin<T>(reply: Promise<T>, command: string, extraMs = 0): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const ms = this.#options.replyTimeoutMs + extraMs;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = connectionLostError(
          this.#options.endpoint.safeUrl,
          `no reply to ${command} within ${ms} ms (replyTimeoutMs)`,
        );
        this.destroy(error);
        reject(error);
      }, ms);
    });
    try {
      return await Promise.race([reply, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Deliveries counted by the pending entries list for `entries` (this consumer's). */
  async #deliveryCounts(entries: StreamEntry[]): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    if (entries.length === 0) return counts;
    const { streamKey, group, consumerName } = this.#options;
    const first = entries[0] as StreamEntry;
    const last = entries.at(-1) as StreamEntry;
    const reply = await this.#call(this.#commands, false, [
      'XPENDING',
      streamKey,
      group,
      first.id,
      last.id,
      // Entries this consumer holds may lie in between.
      String(entries.length + this.#held.size),
      consumerName,
    ]);
    if (Array.isArray(reply)) {
      for (const row of reply as unknown[]) {
        if (Array.isArray(row)) counts.set(asString(row[0]), Number(row[3]));
      }
    }
    return counts;
  }

  /** Hands entries over; deleted ones (no fields) are acknowledged, nothing is left to handle. */
  async #handOver(entries: StreamEntry[], via: EntryDelivery['via']): Promise<void> {
    const live: Array<StreamEntry & { fields: Buffer[] }> = [];
    const gone: string[] = [];
    for (const entry of entries) {
      if (entry.fields === null) gone.push(entry.id);
      else if (!this.#held.has(entry.id)) live.push(entry as StreamEntry & { fields: Buffer[] });
    }
    if (gone.length > 0) {
      await this.#call(this.#commands, false, [
        'XACK',
        this.#options.streamKey,
        this.#options.group,
        ...gone,
      ]);
    }
    // A reconnect's re-read of this process's own entries is no failure of theirs (the core
    // counts the failures it saw itself): only the delivery counts of entries taken over, and of
    // the first session after start() (an earlier process under this name may have crashed on
    // them), are passed on.
    const counted = via === 'claimed' || (via === 'pending' && this.#countPending);
    const counts = counted ? await this.#deliveryCounts(live) : new Map<string, number>();
    for (const entry of live) {
      if (!this.open) return;
      this.#held.add(entry.id);
      const count = via === 'new' ? 1 : counts.get(entry.id);
      this.#hooks.deliver(this, {
        entry,
        failedBefore: count === undefined ? undefined : Math.max(0, count - 1),
        via,
      });
    }
  }

  /** Own pending entries first (a reconnect, a restart under the same name), then new ones. */
  async #read(): Promise<void> {
    const { streamKey, group, consumerName, prefetch } = this.#options;
    let pendingAfter: string | null = '0';
    try {
      while (this.#reading && this.open) {
        const room = prefetch - this.#held.size;
        if (room <= 0) {
          await new Promise<void>((resolve) => (this.#slotFreed = resolve));
          continue;
        }
        const head = ['XREADGROUP', 'GROUP', group, consumerName, 'COUNT', String(room)] as const;
        if (pendingAfter !== null) {
          const reply = await this.#call(this.#reader, true, [...head, 'STREAMS', streamKey, pendingAfter]);
          const entries = readReplyEntries(reply);
          if (entries.length === 0) {
            pendingAfter = null;
            continue;
          }
          pendingAfter = (entries.at(-1) as StreamEntry).id;
          await this.#handOver(entries, 'pending');
          continue;
        }
        this.#blocked = true;
        let reply: unknown;
        try {
          reply = await this.#call(
            this.#reader,
            true,
            [...head, 'BLOCK', String(BLOCK_MS), 'STREAMS', streamKey, '>'],
            BLOCK_MS,
          );
        } finally {
          this.#blocked = false;
        }
        await this.#handOver(readReplyEntries(reply), 'new');
      }
    } catch (err) {
      // NOGROUP (the group was deleted), a lost connection, no reply: the session ends, and the
      // consumer opens a new one (which creates the group again).
      this.destroy(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** The entry was acknowledged or dead-lettered: its prefetch slot is free. */
  release(entryId: string): void {
    this.#held.delete(entryId);
    const wake = this.#slotFreed;
    this.#slotFreed = undefined;
    wake?.();
  }

  /**
   * `XACK` (then `XDEL` with `deleteAfterAck`) of a handled entry. Rejects when the connection is
   * gone; the entry stays pending and comes back (to this consumer's next session, or to another).
   */
  async ack(entryId: string): Promise<void> {
    const { streamKey, group, deleteAfterAck } = this.#options;
    try {
      await this.#call(this.#commands, false, ['XACK', streamKey, group, entryId]);
      if (deleteAfterAck) await this.#call(this.#commands, false, ['XDEL', streamKey, entryId]);
    } finally {
      this.release(entryId);
    }
  }

  /**
   * Adds the dead letter and acknowledges the original in one `MULTI`/`EXEC`: both or neither. A
   * transaction does not roll back a command that fails inside it, so the dead-letter key is
   * WATCHed and checked to be a stream (or absent) first: a key changed in between fails the EXEC
   * (tried again), and XADD cannot fail inside it. Throws a `TransportError` `dead_letter_failed`.
   */
  deadLetter(entry: StreamEntry & { fields: Buffer[] }, why: DeadLetterReason): Promise<void> {
    const run = this.#deadLetters.then(() => this.#deadLetterNow(entry, why));
    this.#deadLetters = run.catch(noop);
    return run;
  }

  async #deadLetterNow(entry: StreamEntry & { fields: Buffer[] }, why: DeadLetterReason): Promise<void> {
    const { streamKey, group, deadLetterStream, endpoint } = this.#options;
    const fields = deadLetterFields(entry, this.#options, why);
    const fail = (reason: string, cause?: unknown): never => {
      throw new TransportError(
        'dead_letter_failed',
        `could not dead-letter entry ${entry.id} of stream ${JSON.stringify(streamKey)} to ` +
          `${JSON.stringify(deadLetterStream)} on ${endpoint.safeUrl}: ${reason}; the entry stays pending and is ` +
          'dead-lettered again after a pause (or redelivered, if the connection was lost)',
        { ...(cause === undefined ? {} : { cause }), details: { deadLetterStream, entryId: entry.id } },
      );
    };
    for (let tries = 1; ; tries++) {
      if (!this.open) fail(`the connection was lost (${this.#lostReason?.message ?? 'closed'})`);
      let results: unknown;
      try {
        await this.#call(this.#commands, false, ['WATCH', deadLetterStream]);
        const type = asString(await this.#call(this.#commands, false, ['TYPE', deadLetterStream]));
        if (type !== 'stream' && type !== 'none') {
          await this.#call(this.#commands, false, ['UNWATCH']);
          fail(`that key is a ${type}, not a stream; rename or delete it`);
        }
        const pipeline = this.#commands.pipeline();
        pipeline.call('MULTI');
        pipeline.call('XADD', deadLetterStream, '*', ...fields);
        pipeline.call('XACK', streamKey, group, entry.id);
        pipeline.call('EXEC');
        const replies = await this.#replyWithin(pipeline.exec(), 'EXEC');
        const exec = replies?.at(-1);
        if (exec === undefined) return fail('no reply to EXEC');
        if (exec[0] !== null) return fail(describe(exec[0]), exec[0]);
        results = exec[1];
      } catch (err) {
        if (err instanceof TransportError && err.code === 'dead_letter_failed') throw err;
        return fail(describe(err), err);
      }
      if (results === null) {
        // The dead-letter stream changed between WATCH and EXEC (another consumer's dead letter):
        // nothing was done; again.
        if (tries < WATCH_RETRIES) continue;
        fail(`the stream kept changing under WATCH (${WATCH_RETRIES} tries)`);
      }
      const failed = Array.isArray(results)
        ? (results as unknown[]).find((r) => r instanceof Error)
        : undefined;
      if (failed !== undefined) fail(describe(failed), failed);
      return;
    }
  }

  /**
   * Every `claimIdleMs / 3`: refreshes the entries held (so they are not taken from a consumer
   * that is busy with them), then takes over entries idle longer than `claimIdleMs`.
   */
  #scheduleMaintenance(): void {
    const { claimIdleMs } = this.#options;
    if (claimIdleMs === 0 || !this.#reading || !this.open) return;
    this.#maintainTimer = setTimeout(
      () => {
        this.#maintainTimer = undefined;
        this.#maintaining = this.#maintain().finally(() => {
          this.#maintaining = undefined;
          this.#scheduleMaintenance();
        });
      },
      Math.max(10, Math.floor(claimIdleMs / 3)),
    );
  }

  async #maintain(): Promise<void> {
    const { streamKey, group, consumerName, claimIdleMs, prefetch } = this.#options;
    try {
      const held = [...this.#held];
      for (let i = 0; i < held.length && this.open; i += REFRESH_CHUNK) {
        const ids = held.slice(i, i + REFRESH_CHUNK);
        await this.#call(this.#commands, false, [
          'XCLAIM',
          streamKey,
          group,
          consumerName,
          '0',
          ...ids,
          'JUSTID',
        ]);
      }
      let room = prefetch - this.#held.size;
      while (room > 0 && this.#reading && this.open) {
        const reply = await this.#call(this.#commands, true, [
          'XAUTOCLAIM',
          streamKey,
          group,
          consumerName,
          String(claimIdleMs),
          this.#claimCursor,
          'COUNT',
          String(room),
        ]);
        if (!Array.isArray(reply)) return;
        this.#claimCursor = asString(reply[0]);
        const entries = parseEntries(reply[1]).filter((e) => !this.#held.has(e.id));
        if (entries.length > 0 && this.#reading) {
          this.#hooks.claimed(entries.map((e) => e.id));
          await this.#handOver(entries, 'claimed');
        }
        // 0-0: the scan went round the whole list; the next round starts over.
        if (this.#claimCursor === '0-0') return;
        room = prefetch - this.#held.size;
      }
    } catch (err) {
      if (this.open) this.#hooks.warn('refreshing or claiming pending entries failed', err as Error);
    }
  }

  /**
   * Stops reading: no new entries are taken (a blocked XREADGROUP is ended with CLIENT UNBLOCK),
   * no more are claimed. Entries held stay held for their handlers to acknowledge.
   */
  async stopReading(): Promise<void> {
    this.#reading = false;
    clearTimeout(this.#maintainTimer);
    this.#maintainTimer = undefined;
    const wake = this.#slotFreed;
    this.#slotFreed = undefined;
    wake?.();
    if (this.#blocked && this.open) {
      await this.#call(this.#commands, false, ['CLIENT', 'UNBLOCK', this.#readerId]).catch(noop);
    }
    await this.#readLoop;
    await this.#maintaining;
  }

  /**
   * Ends the session cleanly: stops reading, forgets this consumer in the group when it holds no
   * pending entries (so stopped instances do not pile up in XINFO CONSUMERS), then QUIT. Never rejects.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.stopReading().catch(noop);
      await this.#deadLetters;
      if (this.open) {
        const { streamKey, group, consumerName } = this.#options;
        try {
          const pending = await this.#call(this.#commands, false, [
            'XPENDING',
            streamKey,
            group,
            '-',
            '+',
            '1',
            consumerName,
          ]);
          if (Array.isArray(pending) && pending.length === 0) {
            await this.#call(this.#commands, false, [
              'XGROUP',
              'DELCONSUMER',
              streamKey,
              group,
              consumerName,
            ]);
          }
        } catch {
          // Only housekeeping: the consumer is gone either way.
        }
      }
      this.#end(connectionLostError(this.#options.endpoint.safeUrl, 'consumer stopped'));
      await Promise.all([
        this.#readerConnection.close(async () => {}),
        this.#commandConnection.close(async () => {}),
      ]);
    })();
    return this.#closing;
  }

  /** Ends the session at once: both sockets closed, commands in flight failed. */
  destroy(reason: Error): void {
    this.#end(reason);
    if (this.#closing) return;
    const reader = this.#readerConnection.current;
    const commands = this.#commandConnection.current;
    if (reader) this.#readerConnection.drop(reader, reason);
    if (commands) this.#commandConnection.drop(commands, reason);
    // A connection still being opened is closed by its RedisSessions once it is.
    void this.#readerConnection.close(async () => {});
    void this.#commandConnection.close(async () => {});
  }

  #end(reason: Error): void {
    if (this.#ended.signal.aborted) return;
    this.#lostReason = reason;
    this.#reading = false;
    clearTimeout(this.#maintainTimer);
    this.#maintainTimer = undefined;
    this.#ended.abort(reason);
    const wake = this.#slotFreed;
    this.#slotFreed = undefined;
    wake?.();
  }
}
