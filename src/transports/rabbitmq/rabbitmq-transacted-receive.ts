/**
 * Transacted receive on {@link RabbitMqConsumer} (`transacted: true`): the acknowledgement of a
 * delivery and the messages its handler published with `context.publish` are committed in one
 * AMQP transaction on the channel the delivery came on (acks in AMQP are transactional only on
 * that channel).
 *
 * A channel holds one transaction at a time, and everything sent on it goes into that
 * transaction, so the handlers (which may run `concurrency` at once, and wait in per-key lanes)
 * never write to the channel themselves: `context.publish` keeps a run's outputs in memory, and
 * once the run succeeded {@link TransactedAcks} sends outputs and ack and commits. Runs that
 * finish while a commit is under way are committed together in the next one ("group commit"):
 * every transaction holds whole runs, never part of one, so each input stays all-or-nothing with
 * its outputs, and a failed commit fails the runs in it, which the broker redelivers.
 *
 * @module
 */
import { toOutboxMessages } from '../../core/broker-transaction.js';
import type { MessageInput, OutboxMessage } from '../../core/types.js';
import type { AmqpChannel, AmqpReturnedMessage } from './amqp-client.js';
import type { AmqpConsumeChannel, AmqpDelivery } from './amqp-consumer-client.js';
import { refuseBeforeSending } from './rabbitmq-publish.js';
import { publishAfterRunError } from './rabbitmq-transaction-errors.js';
import type { TxChannel } from './rabbitmq-tx-channel.js';

/**
 * What one handler run published with `context.publish`: validated and encoded at once (so bad
 * input throws inside the handler), kept until the run ends, then committed with the
 * acknowledgement, or dropped when the run threw (the "rollback" of a run: nothing of it was
 * sent to the broker).
 */
export class RunOutputs {
  readonly messages: OutboxMessage[] = [];
  readonly #inputId: string;
  #sealed = false;

  constructor(inputId: string) {
    this.#inputId = inputId;
  }

  /**
   * Adds messages to the run's transaction. Throws an `InvalidMessageError` for bad input (also
   * `delayMs`, `ack`, `callback`), a `PermanentDeliveryError` for a message RabbitMQ is sure to
   * refuse (a `CC`/`BCC` header), a `ConfigError` after the run ended.
   */
  add(messages: ReadonlyArray<OutboxMessage | MessageInput>): void {
    if (this.#sealed) throw publishAfterRunError(this.#inputId);
    const list = toOutboxMessages(messages);
    for (const message of list) {
      // The consumer has no maxMessageBytes: a body over the broker's limit fails the commit.
      const refused = refuseBeforeSending(message, Number.MAX_SAFE_INTEGER);
      if (refused) throw refused.error;
    }
    this.messages.push(...list);
  }

  /** The run ended: later calls throw. */
  seal(): void {
    this.#sealed = true;
  }
}

/** An output the broker returned as unroutable at the commit (the rest was committed). */
export interface ReturnedOutput {
  output: OutboxMessage;
  returned: AmqpReturnedMessage;
}

interface Unit {
  readonly delivery: AmqpDelivery;
  readonly outputs: readonly OutboxMessage[];
  resolve(returned: ReturnedOutput[]): void;
  reject(error: Error): void;
}

/** What {@link TransactedAcks} is made with. */
export interface TransactedAcksSetup {
  /** The consume channel, in transaction mode. */
  readonly channel: AmqpConsumeChannel & AmqpChannel;
  /** The same channel's transaction mechanics. */
  readonly tx: TxChannel;
  /** Longest wait for a commit's answer; after it the connection is dropped. */
  readonly commitTimeoutMs: number;
  /** The broker did not answer in time: drop the connection (the session is replaced). */
  readonly onStalled: () => void;
}

/**
 * Acknowledges deliveries, with their outputs, in transactions on their channel, one transaction
 * at a time, each holding every run that was ready when it began.
 */
export class TransactedAcks {
  readonly #setup: TransactedAcksSetup;
  readonly #queue: Unit[] = [];
  #running = false;

  constructor(setup: TransactedAcksSetup) {
    this.#setup = setup;
  }

  /**
   * Publishes `outputs` (mandatory) and acknowledges `delivery` in one transaction, and resolves
   * once the broker committed it, with the outputs it returned as unroutable (committed without
   * them). Rejects with what the commit threw (`TxChannel.commit`): nothing committed, or
   * `commit_unknown`; or with a `PermanentDeliveryError` when one of `outputs` cannot be encoded
   * (that run alone is left out; the others are committed).
   */
  commit(delivery: AmqpDelivery, outputs: readonly OutboxMessage[]): Promise<ReturnedOutput[]> {
    return new Promise<ReturnedOutput[]>((resolve, reject) => {
      this.#queue.push({ delivery, outputs, resolve, reject });
      if (!this.#running) void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    this.#running = true;
    try {
      while (this.#queue.length > 0) await this.#commitUnits(this.#queue.splice(0));
    } finally {
      this.#running = false;
    }
  }

  async #commitUnits(units: Unit[]): Promise<void> {
    const { channel, tx, commitTimeoutMs, onStalled } = this.#setup;
    for (let i = 0; i < units.length; i++) {
      const unit = units[i] as Unit;
      try {
        await tx.publish(unit.outputs, true, commitTimeoutMs, undefined);
        if (!tx.open) throw tx.notCommitted('before the commit was sent');
        channel.ack(unit.delivery);
      } catch (err) {
        const error = err instanceof Error ? err : new Error(String(err));
        if (tx.open && !tx.stalled && error.name === 'PermanentDeliveryError') {
          // An output the client cannot encode: discard this transaction, fail that run, and
          // send the others again in the next one (acks are only sent at a commit, and a
          // rolled-back ack can be sent again).
          await tx.rollback(commitTimeoutMs);
          if (!tx.stalled) {
            unit.reject(error);
            this.#queue.unshift(...units.slice(0, i), ...units.slice(i + 1));
            return;
          }
        }
        if (tx.stalled) onStalled();
        for (const u of units) u.reject(error);
        return;
      }
    }
    let returned: AmqpReturnedMessage[];
    try {
      returned = await tx.commit(commitTimeoutMs, undefined);
    } catch (err) {
      if (tx.stalled) onStalled();
      const error = err instanceof Error ? err : new Error(String(err));
      for (const u of units) u.reject(error);
      return;
    }
    const byId = new Map<string, AmqpReturnedMessage[]>();
    for (const r of returned) {
      const id = String(r.properties.messageId);
      byId.set(id, [...(byId.get(id) ?? []), r]);
    }
    for (const u of units) {
      const mine: ReturnedOutput[] = [];
      for (const output of u.outputs) {
        const r = byId.get(output.id)?.shift();
        if (r !== undefined) mine.push({ output, returned: r });
      }
      u.resolve(mine);
    }
  }
}
