/**
 * Acknowledged delivery and callbacks in MySQL (docs/acknowledged-delivery.md,
 * docs/callbacks.md): the steps the PostgreSQL store runs as database functions
 * (`settle_tracked`, `apply_ack`, `ack_sweep`), here as statements of the caller's transaction.
 * Every statement is in {@link MySqlSql}; this file holds the decisions between them.
 *
 * @module
 */
import type {
  AckCounts,
  AckOutcome,
  AckRecord,
  CallbackEvent,
  MessageState,
  MessageStatus,
} from '../../core/ports.js';
import type { AckReceipt, DeliveryOptions, JsonValue } from '../../core/types.js';
import { uuidv7 } from '../../core/uuid.js';
import type { MySqlSql } from './mysql-sql.js';

/** A connection inside the transaction the step belongs to. */
export interface AckConnection {
  rows(sql: string, params?: unknown[]): Promise<Array<Record<string, unknown>>>;
  run(sql: string, params?: unknown[]): Promise<{ affectedRows: number }>;
}

function json<T>(value: unknown): T | null {
  if (value === null || value === undefined) return null;
  if (typeof value === 'string') return JSON.parse(value) as T;
  if (Buffer.isBuffer(value)) return JSON.parse(value.toString('utf8')) as T;
  return value as T;
}

function date(us: unknown): Date | null {
  return us === null || us === undefined ? null : new Date(Math.floor(Number(us) / 1000));
}

function text(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  return Buffer.isBuffer(value) ? value.toString('utf8') : String(value);
}

async function addCallback(
  c: AckConnection,
  sql: MySqlSql,
  message: { id: string; topic: string; url: string },
  event: CallbackEvent['event'],
  detail: Record<string, JsonValue>,
): Promise<void> {
  await c.run(sql.ack.insertCallback, [
    uuidv7(),
    message.id,
    message.topic,
    event,
    message.url,
    JSON.stringify(detail),
  ]);
}

/**
 * Delivered messages: plain ones deleted (or archived), tracked ones into `ack` (awaiting) and
 * their `delivered` callback queued, all in the settle's transaction.
 */
export async function settleDelivered(
  c: AckConnection,
  sql: MySqlSql,
  seqs: readonly string[],
  archive: boolean,
): Promise<void> {
  if (archive) await c.run(sql.archiveDelivered(seqs.length), [...seqs]);
  const plain = await c.run(sql.ack.deletePlain(seqs.length), [...seqs]);
  if (plain.affectedRows === seqs.length) return;
  const tracked = await c.rows(sql.ack.trackedRows(seqs.length), [...seqs]);
  for (const row of tracked) {
    const id = String(row.id);
    const topic = String(text(row.topic));
    const delivery = json<DeliveryOptions>(row.delivery) ?? {};
    if (delivery.callback) {
      await addCallback(c, sql, { id, topic, url: delivery.callback.url }, 'delivered', {});
    }
    if (delivery.ack) {
      const before = (await c.rows(sql.ack.ackState, [id]))[0];
      await c.run(sql.ack.awaiting, [String(row.seq)]);
      // Acknowledged before this settle: an early acknowledgement had no URL to tell.
      if (before?.state === 'acknowledged' && delivery.callback) {
        const told = await c.rows(sql.ack.callbackExists, [id, 'acknowledged']);
        if (told.length === 0) {
          await addCallback(c, sql, { id, topic, url: delivery.callback.url }, 'acknowledged', {
            consumer: text(before.consumer),
            result: json<JsonValue>(before.result),
          });
        }
      }
    }
  }
  if (tracked.length > 0)
    await c.run(
      sql.deleteDelivered(tracked.length),
      tracked.map((r) => String(r.seq)),
    );
}

/** The `dead` callbacks of tracked messages among those being dead-lettered (before their delete). */
export async function deadCallbacks(
  c: AckConnection,
  sql: MySqlSql,
  dead: ReadonlyArray<{ seq: string; error: string }>,
): Promise<void> {
  const rows = await c.rows(
    sql.ack.deadTracked(dead.length),
    dead.map((d) => d.seq),
  );
  for (const row of rows) {
    const delivery = json<DeliveryOptions>(row.delivery) ?? {};
    if (!delivery.callback) continue;
    const id = String(row.id);
    const error = dead.find((d) => d.seq === String(row.seq))?.error ?? null;
    await addCallback(c, sql, { id, topic: String(text(row.topic)), url: delivery.callback.url }, 'dead', {
      error,
    });
  }
}

/** Records a receiver's acknowledgement (see {@link AckOutcome}), in the caller's transaction. */
export async function applyAck(c: AckConnection, sql: MySqlSql, receipt: AckReceipt): Promise<AckOutcome> {
  const result = receipt.result === undefined ? null : JSON.stringify(receipt.result);
  const [row] = await c.rows(sql.ack.ackState, [receipt.id]);
  if (!row) {
    // Before the settle: recorded, and the settle keeps it acknowledged. A duplicate key means
    // another acknowledgement or the settle made the row meanwhile: the caller runs it again.
    await c.run(sql.ack.early, [receipt.id, receipt.consumer, result]);
    return 'early';
  }
  if (row.state === 'acknowledged') return 'duplicate';
  if (row.state === 'expired') {
    if (Number(row.acked) === 1) return 'duplicate';
    await c.run(sql.ack.late, [receipt.consumer, result, receipt.id]);
    return 'late';
  }
  await c.run(sql.ack.acknowledge, [receipt.consumer, result, receipt.id]);
  const delivery = json<DeliveryOptions>(row.delivery) ?? {};
  if (delivery.callback) {
    await addCallback(
      c,
      sql,
      { id: receipt.id, topic: String(text(row.topic)), url: delivery.callback.url },
      'acknowledged',
      { consumer: receipt.consumer, result: receipt.result ?? null },
    );
  }
  return 'acknowledged';
}

/**
 * Messages whose acknowledgement deadline passed, at most `limit`, skipping rows another relay
 * is sweeping: resent (the same id back into the outbox, due now) while resends are left, else
 * expired, with the cancellation (to `ack.onExpire`) and the `expired` callback enqueued in the
 * same transaction, so compensation is as reliable as any message.
 */
export async function sweepAcks(
  c: AckConnection,
  sql: MySqlSql,
  limit: number,
): Promise<{ resent: number; expired: number }> {
  let resent = 0;
  let expired = 0;
  for (const row of await c.rows(sql.ack.due, [limit])) {
    const id = String(row.id);
    const topic = String(text(row.topic));
    const delivery = json<DeliveryOptions>(row.delivery) ?? {};
    const ack = delivery.ack;
    const resends = Number(row.resends);
    if (ack && resends < ack.maxResends) {
      await c.run(sql.ack.resend, [id]);
      await c.run(sql.ack.resending, [id]);
      resent++;
      continue;
    }
    const reason = `no acknowledgement within ${ack?.timeoutMs ?? '?'} ms of each of ${resends + 1} deliveries`;
    await c.run(sql.ack.expire, [id]);
    if (ack?.onExpire) {
      await c.run(sql.ack.cancellation, [
        uuidv7(),
        ack.onExpire,
        (row.msg_key as Buffer | null) ?? null,
        Buffer.from(JSON.stringify({ id, topic, reason })),
        JSON.stringify({ 'mailroom-expired-id': id }),
      ]);
    }
    if (delivery.callback) {
      await addCallback(c, sql, { id, topic, url: delivery.callback.url }, 'expired', { reason });
    }
    expired++;
  }
  return { resent, expired };
}

/** The state of each id, in order. */
export async function readStatus(
  c: AckConnection,
  sql: MySqlSql,
  ids: readonly string[],
): Promise<MessageStatus[]> {
  const rows = await c.rows(sql.ack.status(ids.length), [...ids]);
  return rows.map((r) => {
    const ackState = r.ack_state === null || r.ack_state === undefined ? null : String(r.ack_state);
    let state: MessageState = 'unknown';
    if (Number(r.in_outbox) === 1) state = Number(r.leased) === 1 ? 'in-flight' : 'pending';
    else if (ackState === 'acknowledged' || ackState === 'expired') state = ackState;
    else if (Number(r.dead) === 1) state = 'dead';
    else if (ackState === 'awaiting') state = 'awaiting-ack';
    const status: MessageStatus = { id: String(r.id), state };
    const topic = text(r.topic);
    if (topic !== null) status.topic = topic;
    if (r.attempts !== null && r.attempts !== undefined) status.attempts = Number(r.attempts);
    if (r.resends !== null && r.resends !== undefined) status.resends = Number(r.resends);
    const ackedAt = date(r.acked_us);
    if (ackedAt) status.ackedAt = ackedAt;
    const consumer = text(r.consumer);
    if (consumer !== null) status.consumer = consumer;
    const result = json<JsonValue>(r.result);
    if (result !== null) status.result = result;
    const expiredAt = date(r.expired_us);
    if (expiredAt) status.expiredAt = expiredAt;
    const deadline = date(r.deadline_us);
    if (deadline) status.ackDeadline = deadline;
    const lastError = text(r.last_error);
    if (lastError !== null) status.lastError = lastError;
    return status;
  });
}

/** One row of `listAcks`. */
export function toAckRecord(r: Record<string, unknown>): AckRecord {
  const state = String(r.state);
  return {
    id: String(r.id),
    state: state === 'awaiting' ? 'awaiting-ack' : (state as AckRecord['state']),
    topic: text(r.topic),
    key: text(r.msg_key),
    resends: Number(r.resends),
    maxResends: r.max_resends === null || r.max_resends === undefined ? null : Number(text(r.max_resends)),
    deadline: date(r.deadline_us),
    sentAt: date(r.sent_us),
    ackedAt: date(r.acked_us),
    consumer: text(r.consumer),
    result: json<JsonValue>(r.result),
    expiredAt: date(r.expired_us),
  };
}

/** The counts row of {@link MySqlSql.ack.counts}. */
export function toAckCounts(row: Record<string, unknown>): AckCounts {
  return {
    awaiting: Number(row.awaiting ?? 0),
    acknowledged: Number(row.acknowledged ?? 0),
    expired: Number(row.expired ?? 0),
    callbacksPending: Number(row.callbacks_pending ?? 0),
    callbacksDead: Number(row.callbacks_dead ?? 0),
  };
}

/** One claimed callback row. */
export function toCallbackEvent(r: Record<string, unknown>): CallbackEvent {
  return {
    id: String(r.id),
    messageId: String(r.message_id),
    topic: String(text(r.topic)),
    event: String(r.event) as CallbackEvent['event'],
    url: String(text(r.url)),
    attempts: Number(r.attempts),
    detail: json<Record<string, JsonValue>>(r.detail) ?? {},
    occurredAt: date(r.occurred_us) as Date,
  };
}
