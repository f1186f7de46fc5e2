import { ConfigError } from './errors/config-error.js';
import { encodeMessage, type MessageLimits } from './message.js';
import type { OutboxStore } from './ports.js';
import type { EncodedMessage, MessageInput } from './types.js';

/** Options of {@link Outbox}. */
export interface OutboxOptions extends MessageLimits {
  store: OutboxStore;
}

/** Most messages one INSERT carries; larger arrays are split into several statements. */
const CHUNK = 1000;

/**
 * Writes messages into the outbox inside the caller's own transaction. The messages become
 * visible to relays when that transaction commits, and vanish with it on rollback.
 *
 * @example
 * ```ts
 * const outbox = new Outbox({ store });
 * await db.query('BEGIN');
 * await db.query('UPDATE accounts SET balance = balance - $1 WHERE id = $2', [amount, id]);
 * const messageId = await outbox.enqueue(db, { topic: 'account.debited', key: id, payload: { amount } });
 * await db.query('COMMIT');
 * ```
 */
export class Outbox {
  readonly store: OutboxStore;
  readonly #limits: MessageLimits;

  constructor(options: OutboxOptions) {
    for (const key of Object.keys(options)) {
      if (key !== 'store' && key !== 'maxPayloadBytes') {
        throw new ConfigError(key, `unknown Outbox option "${key}"; allowed: store, maxPayloadBytes`);
      }
    }
    if (!options.store) throw new ConfigError('store', 'an Outbox needs a store');
    const max = options.maxPayloadBytes;
    if (max !== undefined && (!Number.isInteger(max) || max < 1)) {
      throw new ConfigError(
        'maxPayloadBytes',
        `maxPayloadBytes must be a positive integer, got ${String(max)}`,
      );
    }
    this.store = options.store;
    this.#limits = max === undefined ? {} : { maxPayloadBytes: max };
  }

  /** Validates messages without writing them; returns them encoded. Throws on the first bad one. */
  encode(messages: readonly MessageInput[]): EncodedMessage[] {
    return messages.map((m) => encodeMessage(m, this.#limits));
  }

  /**
   * Enqueues one message (returns its id) or several (returns their ids, in order) in the
   * caller's transaction `tx`: whatever the store accepts (a `pg` client inside `BEGIN`, a
   * postgres.js transaction, an ORM adapter with `execute(sql, params)`). Every message is
   * validated before anything is written, so a bad message leaves no row behind.
   */
  enqueue(tx: unknown, message: MessageInput): Promise<string>;
  enqueue(tx: unknown, messages: readonly MessageInput[]): Promise<string[]>;
  async enqueue(tx: unknown, input: MessageInput | readonly MessageInput[]): Promise<string | string[]> {
    const list = Array.isArray(input) ? (input as readonly MessageInput[]) : [input as MessageInput];
    const encoded = this.encode(list);
    const executor = this.store.executor(tx);
    for (let i = 0; i < encoded.length; i += CHUNK) {
      const { sql, params, name } = this.store.enqueueStatement(encoded.slice(i, i + CHUNK));
      await executor.execute(sql, params, name);
    }
    const ids = encoded.map((m) => m.id);
    return Array.isArray(input) ? ids : (ids[0] as string);
  }
}
