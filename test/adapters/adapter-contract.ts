import assert from 'node:assert/strict';
import { it } from 'node:test';
import type { SqlExecutor } from '../../src/core/index.js';
import type { adapterTestBed } from './adapter-bed.js';

/** What a test gets inside the ORM's transaction callback. */
export interface InTransaction {
  /** The adapter's executor over the ORM's transaction. */
  executor: SqlExecutor;
  /** Writes a business row through the ORM, in the same transaction. */
  insertOrder(id: string): Promise<void>;
}

/**
 * The two tests every adapter passes on every database it supports: a committed transaction
 * delivers its message with its business row, and an error thrown in the ORM's transaction
 * callback leaves neither (nothing is delivered). `run` opens the ORM's transaction, calls `fn`
 * inside it, and commits (rolls back when `fn` throws), as the ORM's callback API does.
 */
export function transactionContract(
  bed: ReturnType<typeof adapterTestBed>,
  run: <T>(fn: (tx: InTransaction) => Promise<T>) => Promise<T>,
) {
  it('delivers the message of a committed transaction, and its business row is there', async () => {
    const { id, message } = bed.order();
    const messageId = await run(async (tx) => {
      await tx.insertOrder(id);
      return bed.enqueue(tx.executor, message);
    });
    assert.equal(await bed.orderExists(id), true);
    await bed.delivered(messageId);
  });

  it('leaves neither the row nor the message when an error thrown in the callback rolls back', async () => {
    const { id, message } = bed.order();
    let messageId: string | undefined;
    await assert.rejects(
      run(async (tx) => {
        await tx.insertOrder(id);
        messageId = await bed.enqueue(tx.executor, message);
        throw new Error('business failure');
      }),
      /business failure/,
    );
    assert.ok(messageId, 'enqueue returned before the failure');
    await bed.assertRolledBack(id, messageId, () =>
      run((tx) => bed.enqueue(tx.executor, bed.order().message)),
    );
  });
}
