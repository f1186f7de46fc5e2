import type pg from 'pg';

import type { ConsumerContext, ConsumerInbox } from '../../src/consumer/consumer.js';
import type { ReceivedMessage } from '../../src/core/types.js';

/**
 * An inbox over PostgreSQL with the semantics of `Inbox.handle`, for the consumer tests: the
 * record (in `<schema>.test_inbox (consumer, id)`) and the effects in one transaction, a
 * concurrent copy waiting on the record's row lock for the first one's outcome.
 */
export class PgInbox implements ConsumerInbox<pg.PoolClient> {
  constructor(
    readonly db: { pool: pg.Pool; schema: string },
    readonly consumer: string,
  ) {}

  async handle<T>(
    message: ReceivedMessage,
    handler: (tx: pg.PoolClient, context: ConsumerContext) => Promise<T>,
  ): Promise<{ status: 'processed'; value: T } | { status: 'duplicate' }> {
    const client = await this.db.pool.connect();
    try {
      await client.query('BEGIN');
      const recorded = await client.query(
        `INSERT INTO "${this.db.schema}".test_inbox (consumer, id) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
        [this.consumer, message.id],
      );
      if (recorded.rowCount === 0) {
        await client.query('ROLLBACK');
        return { status: 'duplicate' };
      }
      const value = await handler(client, { message, ack: () => {} });
      await client.query('COMMIT');
      return { status: 'processed', value };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }
}

/** The inbox as the consumer sees it: `inner`, then `hook` once its transaction committed. */
export function afterCommit(inner: PgInbox, hook: () => Promise<void>): ConsumerInbox<pg.PoolClient> {
  return {
    consumer: inner.consumer,
    async handle(message, handler) {
      const result = await inner.handle(message, handler);
      await hook();
      return result;
    },
  };
}
