import type { Clock } from '../core/clock.js';
import { LogSource, type LogSourceStore } from '../core/log-source.js';
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
          return first;
        }
        return new OutboxLogStream({ ...stream, ...(logger ? { logger } : {}) });
      },
      isStandbyError: (error) => isReplicationError(error) && error.code === 'slot_in_use',
      ...(standbyRetryMs === undefined ? {} : { standbyRetryMs }),
      ...(reconnectDelayMs === undefined ? {} : { reconnectDelayMs }),
      ...(maxReconnectDelayMs === undefined ? {} : { maxReconnectDelayMs }),
      ...(clock ? { clock } : {}),
      ...(logger ? { logger: logger as Logger } : {}),
    });
    this.slot = stream.slot ?? `${stream.schema}_relay`;
  }
}
