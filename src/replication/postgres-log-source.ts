import type { Clock } from '../core/clock.js';
import { LogSource, type LogSourceStore, type LogStream, type LogTransaction } from '../core/log-source.js';
import type { OutboxMessage } from '../core/types.js';
import { lsnToBigInt } from './lsn.js';
import type { OutboxLogMessage, OutboxTransaction } from './transaction-assembler.js';
import type { Logger } from '../core/logger.js';
import { OutboxLogStream } from './outbox-log-stream.js';
import type { OutboxLogStreamOptions } from './outbox-log-stream-options.js';
import { isReplicationError } from './replication-error.js';

/** Options of {@link PostgresLogSource}: the stream's, plus the store that leases the rows. */
export interface PostgresLogSourceOptions extends Omit<OutboxLogStreamOptions, 'signal'> {
  /** The relay's store (a `PostgresStore` on the same database and schema, version 9). */
  store: LogSourceStore;
  /**
   * How often a relay whose slot another relay holds tries to take it over. The server frees a
   * slot as soon as the connection of the relay holding it closes (a killed process: at once; a
   * machine that vanished: after `wal_sender_timeout`, 60 s by default).
   *
   * @default 1000
   */
  standbyRetryMs?: number;
  /** First reconnect delay after the stream was lost, doubled per failure. @default 200 */
  reconnectDelayMs?: number;
  /** @default 10000 */
  maxReconnectDelayMs?: number;
  clock?: Clock;
}

/**
 * The relay's source for `wakeup: 'replication'` on PostgreSQL: tails the outbox table's inserts
 * through a logical replication slot (`pgoutput`) and leases the rows each committed transaction
 * inserted, in commit order. Creates the publication and slot when missing; a relay whose slot
 * another relay reads waits as a hot standby. See docs/replication.md.
 *
 * @example
 * ```ts
 * import { Relay } from 'mailroom';
 * import { PostgresLogSource } from 'mailroom/replication';
 *
 * const relay = new Relay({
 *   store,
 *   transport,
 *   source: new PostgresLogSource({ connectionString: process.env.DATABASE_URL, schema: 'mailroom', store }),
 * });
 * await relay.start();
 * ```
 */
export class PostgresLogSource extends LogSource {
  /** The slot this source reads. */
  readonly slot: string;

  constructor(options: PostgresLogSourceOptions) {
    const { store, standbyRetryMs, reconnectDelayMs, maxReconnectDelayMs, clock, logger, ...stream } =
      options;
    // Checked now (names, connection settings), so a bad slot name is a ConfigError at once.
    const first = new OutboxLogStream({ ...stream, ...(logger ? { logger } : {}) });
    let opened = false;
    super({
      name: 'replication',
      store,
      openStream: () => {
        if (!opened) {
          opened = true;
          return decoding(first);
        }
        return decoding(new OutboxLogStream({ ...stream, ...(logger ? { logger } : {}) }));
      },
      isStandbyError: (error) => isReplicationError(error) && error.code === 'slot_in_use',
      markName: stream.slot ?? `${stream.schema}_relay`,
      ...(standbyRetryMs === undefined ? {} : { standbyRetryMs }),
      ...(reconnectDelayMs === undefined ? {} : { reconnectDelayMs }),
      ...(maxReconnectDelayMs === undefined ? {} : { maxReconnectDelayMs }),
      ...(clock ? { clock } : {}),
      ...(logger ? { logger: logger as Logger } : {}),
    });
    this.slot = stream.slot ?? `${stream.schema}_relay`;
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Reads a table-less message (JSON written by `PostgresStore({ tableless: true })` or the SQL
 * API's emit()). Throws an Error saying what is wrong.
 */
export function decodeLogMessage(raw: OutboxLogMessage, commitTime: Date): OutboxMessage {
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(raw.content.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw new Error('not JSON');
  }
  if (typeof v !== 'object' || v === null || v.v !== 1) throw new Error('not a version 1 Mailroom message');
  const text = (name: string, nullable: boolean): string | null => {
    const value = v[name];
    if (typeof value === 'string') return value;
    if (nullable && (value === null || value === undefined)) return null;
    throw new Error(`field ${name} is ${value === undefined ? 'missing' : `not a string`}`);
  };
  const id = text('id', false) as string;
  if (!UUID.test(id)) throw new Error(`id ${JSON.stringify(id)} is not a UUID`);
  const topic = text('topic', false) as string;
  if (topic.length === 0) throw new Error('topic is empty');
  const headers = v.h ?? {};
  if (
    typeof headers !== 'object' ||
    headers === null ||
    Array.isArray(headers) ||
    Object.values(headers).some((h) => typeof h !== 'string')
  ) {
    throw new Error('headers (h) are not an object of strings');
  }
  const at = text('at', true);
  const createdAt = at === null ? commitTime : new Date(at);
  return {
    // The message's place in the log: increasing, unique, and never a table seq.
    seq: lsnToBigInt(raw.lsn).toString(),
    id: id.toLowerCase(),
    topic,
    key: text('key', true),
    type: text('type', true),
    payload: Buffer.from(text('p', false) as string, 'base64'),
    contentType: text('ct', true) ?? 'application/json',
    headers: headers as Record<string, string>,
    createdAt: Number.isNaN(createdAt.getTime()) ? commitTime : createdAt,
    attempts: 1,
  };
}

/** The stream as the source reads it: table-less messages decoded. */
function decoding(stream: OutboxLogStream): LogStream {
  const toLog = (tx: OutboxTransaction): LogTransaction => {
    if (tx.messages.length === 0) return tx;
    const emitted: OutboxMessage[] = [];
    const invalid: Array<{ position: string; error: string }> = [];
    for (const raw of tx.messages) {
      try {
        emitted.push(decodeLogMessage(raw, tx.commitTime));
      } catch (err) {
        invalid.push({ position: raw.lsn, error: (err as Error).message });
      }
    }
    return { xid: tx.xid, endLsn: tx.endLsn, inserts: tx.inserts, emitted, invalid };
  };
  return {
    start: () => stream.start(),
    next: async (signal) => {
      const tx = await stream.next(signal);
      return tx === null ? null : toLog(tx);
    },
    confirm: (lsn) => stream.confirm(lsn),
    idleLsn: () => stream.idleLsn(),
    stop: () => stream.stop(),
  };
}
