import { ConfigError } from '../core/errors/config-error.js';
import { InvalidMessageError } from '../core/errors/invalid-message-error.js';
import type { JsonValue, MessageInput, ReceivedMessage } from '../core/types.js';
import { quoteIdent } from '../stores/sql-identifier.js';
import {
  Coordinator,
  SAGA_BRANCH_HEADER,
  SAGA_GID_HEADER,
  SAGA_PHASE_HEADER,
  SAGA_REPLY_TO_HEADER,
  type CoordinatorOptions,
  type RunOptions,
  type RunResult,
} from './coordinator.js';
import type { BranchCall, SagaParticipant } from './participant.js';
import { runGlobal } from './tcc-coordinator.js';

/** The message type of a saga step's reply. */
export const SAGA_REPLY_TYPE = 'mailroom.saga.reply';

/** What the body of `saga.run` gets. */
export interface SagaContext {
  /** The saga's global id. */
  readonly gid: string;
  /** Aborts at the saga's timeout (and when the coordinator closes). */
  readonly signal: AbortSignal;
  /**
   * Writes the step, then runs its action. Resolves with what the action returned; throws a
   * `BranchFailedError` when it failed, and the saga then compensates every step that started,
   * newest first (even if the body catches the error).
   */
  step<I extends JsonValue | null, R>(
    name: string,
    participant: SagaParticipant<I, R>,
    input?: I,
  ): Promise<R>;
  step<I extends JsonValue | null, R>(
    name: string,
    action: (call: BranchCall<I>) => Promise<R>,
    compensate: (call: BranchCall<I>) => Promise<unknown>,
    input?: I,
  ): Promise<R>;
  /** Enqueues messages in the same database transaction that records the saga's success. */
  publishIfSucceeded(messages: MessageInput | readonly MessageInput[]): void;
}

/** Options of {@link messageStep}. */
export interface MessageStepOptions {
  /** Where the action's message goes (the receiving service's queue or topic). */
  topic: string;
  /** Where the compensation's message goes. @default the same topic */
  compensateTopic?: string;
  /** The topic the receiver's reply goes to: a queue this service consumes. */
  replyTo: string;
}

/**
 * A saga step carried by messages through the outbox: the action's message is enqueued in the
 * same transaction that records the step, and the step completes when the receiver's reply is
 * recorded with `saga.reply` (from your inbox handler). Its compensation is a message too,
 * enqueued with the decision, so it is delivered at least once without the coordinator waiting.
 * Both messages carry the saga's gid as their key, so on an ordered transport the compensation
 * never overtakes the action. The receiver makes them idempotent with a `TccBarrier`
 * (`action` / `compensate`) and answers with {@link sagaReply}.
 */
export function messageStep(
  options: MessageStepOptions,
): SagaParticipant<JsonValue | null, JsonValue | undefined> {
  for (const key of ['topic', 'replyTo'] as const) {
    if (typeof options?.[key] !== 'string' || options[key].length === 0) {
      throw new ConfigError(key, `messageStep option ${key} must be a non-empty topic name`);
    }
  }
  const descriptor = {
    kind: 'message' as const,
    topic: options.topic,
    compensateTopic: options.compensateTopic ?? options.topic,
    replyTo: options.replyTo,
  };
  const notDirect = () =>
    Promise.reject(
      new ConfigError('participant', 'a messageStep is run by a SagaCoordinator, not called directly'),
    );
  return { descriptor, action: notDirect, compensate: notDirect };
}

/** The reply to a saga message step, as the receiver's outcome. */
export type SagaReplyOutcome = { ok: true; result?: JsonValue } | { ok: false; error: string };

/** The saga fields a step's message carries, or null for a message that is not one. */
export function sagaRequestOf(
  message: Pick<ReceivedMessage, 'headers'>,
): { gid: string; branch: string; phase: 'action' | 'compensate'; replyTo: string } | null {
  const h = message.headers ?? {};
  const gid = h[SAGA_GID_HEADER];
  const branch = h[SAGA_BRANCH_HEADER];
  const phase = h[SAGA_PHASE_HEADER];
  const replyTo = h[SAGA_REPLY_TO_HEADER];
  if (!gid || !branch || (phase !== 'action' && phase !== 'compensate') || !replyTo) return null;
  return { gid, branch, phase, replyTo };
}

/**
 * The reply a receiver enqueues (in its inbox handler's transaction) after handling a saga
 * step's action message: to the step's `replyTo` topic, keyed by the saga's gid.
 */
export function sagaReply(
  request: Pick<ReceivedMessage, 'headers'>,
  outcome: SagaReplyOutcome,
): MessageInput {
  const saga = sagaRequestOf(request);
  if (saga === null || saga.phase !== 'action') {
    throw new InvalidMessageError(
      'headers',
      `sagaReply needs a saga step's action message (headers ${SAGA_GID_HEADER}, ${SAGA_BRANCH_HEADER}, ` +
        `${SAGA_PHASE_HEADER}: action, ${SAGA_REPLY_TO_HEADER}); this message has none: a compensation needs no reply`,
    );
  }
  return {
    topic: saga.replyTo,
    key: saga.gid,
    type: SAGA_REPLY_TYPE,
    headers: { [SAGA_GID_HEADER]: saga.gid, [SAGA_BRANCH_HEADER]: saga.branch },
    payload: outcome.ok
      ? { gid: saga.gid, branch: saga.branch, ok: true, result: outcome.result ?? null }
      : { gid: saga.gid, branch: saga.branch, ok: false, error: String(outcome.error).slice(0, 1000) },
  };
}

/** Options of {@link SagaCoordinator}. */
export type SagaCoordinatorOptions<Tx = unknown> = CoordinatorOptions<Tx>;

/**
 * Runs sagas on the application's own database: steps in order, each recorded before its
 * action runs; if one fails (or the saga times out), the compensations of every step that
 * started run newest first, retried until done, also after a crash (by the recovery worker).
 *
 * A saga whose coordinator died is compensated at its timeout, never resumed forward: its body
 * is code in the process that died.
 *
 * @example
 * ```ts
 * const sagas = new SagaCoordinator({ store }).start();
 * await sagas.run(async (s) => {
 *   await s.step('reserve', reserveStock, releaseStock, { sku, qty });
 *   await s.step('charge', httpParticipant({ url: 'http://payment/saga' }), { account, amount });
 *   s.publishIfSucceeded({ topic: 'orders.placed', key: orderId, payload: { orderId } });
 * });
 * ```
 */
export class SagaCoordinator<Tx = unknown> extends Coordinator<Tx> {
  constructor(options: SagaCoordinatorOptions<Tx>) {
    super('saga', options);
  }

  /**
   * Runs one saga. Resolves when every step succeeded (state `succeeded`); throws a
   * `GlobalTransactionAbortedError` after the compensations ran (state `compensated`, or
   * `compensating` when one was still failing after `settleWaitMs`: recovery goes on).
   */
  run<T>(body: (s: SagaContext) => Promise<T>, options: RunOptions = {}): Promise<RunResult<T>> {
    return runGlobal(this, 'saga', body, options);
  }

  /**
   * Records the reply to a message step, in your transaction (the inbox handler's `tx`): the step
   * succeeded (`ok`) or failed. Returns false when the step was no longer waiting (a duplicate
   * reply, or the saga already compensated it at its timeout).
   */
  async reply(tx: Tx, reply: { gid: string; branch: string } & SagaReplyOutcome): Promise<boolean> {
    const gid = this.checkGid(reply?.gid);
    const branch = this.checkBranch(reply?.branch);
    const executor = this.state.store.executor(tx);
    const table = `${quoteIdent(this.state.store.schema)}.tcc_branch`;
    const res = await executor.execute(
      `UPDATE ${table} SET state = $3, result = $4::jsonb, last_error = $5, updated_at = now()
       WHERE gid = $1 AND branch = $2 AND state = 'running' RETURNING 1 AS recorded`,
      [
        gid,
        branch,
        reply.ok ? 'done' : 'failed',
        reply.ok && reply.result !== undefined ? JSON.stringify(reply.result) : null,
        reply.ok ? null : String(reply.error).slice(0, 1000),
      ],
    );
    const recorded = res.rows.length === 1;
    // A waiter in this process reads the row again at once (it sees the reply after the commit).
    if (recorded) setTimeout(() => this.replyWaiters.get(`${gid}\u0000${branch}`)?.(), 0).unref();
    return recorded;
  }

  /** {@link reply} from a received reply message (one that {@link sagaReply} built). */
  async replyFromMessage(tx: Tx, message: Pick<ReceivedMessage, 'body' | 'payload'>): Promise<boolean> {
    const p = (message.payload ?? JSON.parse(message.body.toString('utf8'))) as Record<string, unknown>;
    if (
      typeof p !== 'object' ||
      p === null ||
      typeof p.gid !== 'string' ||
      typeof p.branch !== 'string' ||
      typeof p.ok !== 'boolean'
    ) {
      throw new InvalidMessageError(
        'payload',
        'a saga reply has a JSON payload {gid, branch, ok, result | error}',
      );
    }
    return this.reply(
      tx,
      p.ok
        ? { gid: p.gid, branch: p.branch, ok: true, result: (p.result ?? null) as JsonValue }
        : { gid: p.gid, branch: p.branch, ok: false, error: String(p.error ?? 'failed') },
    );
  }
}
