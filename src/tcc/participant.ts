import { MailroomError, type MailroomErrorOptions } from '../core/errors/mailroom-error.js';
import type { JsonValue } from '../core/types.js';

/** The phases of a TCC branch. */
export type TccPhase = 'try' | 'confirm' | 'cancel';
/** The phases of a saga step. */
export type SagaPhase = 'action' | 'compensate';
/** Any phase a coordinator calls on a branch; also the barrier's phase. */
export type BranchPhase = TccPhase | SagaPhase;

export const BRANCH_PHASES: readonly BranchPhase[] = ['try', 'confirm', 'cancel', 'action', 'compensate'];

/** What a participant gets on every call. */
export interface BranchCall<I = JsonValue | null> {
  /** The global transaction's id. The same on every retry of every phase. */
  readonly gid: string;
  /** The branch's name, unique within its global transaction (e.g. 'inventory'). */
  readonly branch: string;
  readonly phase: BranchPhase;
  /** The input given to `t.try(…)` / `s.step(…)`; the same for every phase of the branch. */
  readonly input: I;
  /**
   * Calls made to this branch so far, this one included, across its phases: a try is 1, the
   * first confirm after it 2, a retried confirm 3… Informational (logs, metrics): the barrier,
   * not this number, is what makes a repeated call harmless.
   */
  readonly attempt: number;
  /** Aborted when the call's deadline passes or the coordinator closes. */
  readonly signal: AbortSignal;
}

/**
 * Where a branch's participant can be reached again after a crash, stored with the branch.
 * `http` participants can be recovered by any coordinator (and by `mailroom tcc recover`) from
 * this alone; `local` ones only by a coordinator that has a participant registered under the
 * branch's name.
 */
export type ParticipantDescriptor =
  | { kind: 'http'; url: string; timeoutMs: number }
  | { kind: 'local' }
  | { kind: 'message'; topic: string; compensateTopic: string; replyTo: string };

/**
 * A TCC participant: `try` checks and reserves, `confirm` makes the reservation final, `cancel`
 * releases it. Each must be idempotent, and `cancel` must accept a branch whose `try` never
 * ran (a null compensation); a {@link TccBarrier} on the participant's database gives all of that.
 *
 * `try` refuses by throwing a {@link BranchRefusedError}; any other error means the outcome is
 * unknown (the try may have run), and the coordinator cancels. `confirm` and `cancel` are retried
 * until they resolve.
 */
export interface TccParticipant<I = JsonValue | null, R = JsonValue | void> {
  try(call: BranchCall<I>): Promise<R>;
  confirm(call: BranchCall<I>): Promise<unknown>;
  cancel(call: BranchCall<I>): Promise<unknown>;
  /** Set by `httpParticipant`: how recovery reaches it without the object. */
  readonly descriptor?: ParticipantDescriptor;
}

/**
 * A saga step's participant: `action` does the step, `compensate` undoes it (semantically, e.g. a
 * refund for a charge). `action` refuses by throwing a {@link BranchRefusedError}; any other error
 * means the outcome is unknown. `compensate` is retried until it resolves and must accept a step
 * whose action never ran.
 */
export interface SagaParticipant<I = JsonValue | null, R = JsonValue | void> {
  action(call: BranchCall<I>): Promise<R>;
  compensate(call: BranchCall<I>): Promise<unknown>;
  readonly descriptor?: ParticipantDescriptor;
}

/**
 * Thrown by a participant's `try` (or a saga `action`) to say no, definitively: out of stock,
 * insufficient funds. Nothing was reserved. Over HTTP this is a 409 (or another 4xx but 408 and
 * 429). The coordinator cancels the global transaction.
 */
export class BranchRefusedError extends MailroomError {
  override name = 'BranchRefusedError';
  constructor(message: string, options: MailroomErrorOptions = {}) {
    super('branch_refused', message, options);
  }
}

/**
 * A branch call whose outcome is not known: a timeout, a 5xx, a dropped connection. The phase
 * may have run. A try or action with this outcome is cancelled (compensated); a confirm or cancel
 * is retried.
 */
export class BranchUnknownError extends MailroomError {
  override name = 'BranchUnknownError';
  constructor(message: string, options: MailroomErrorOptions = {}) {
    super('branch_unknown', message, options);
  }
}

/** True for a refusal, also one thrown by another copy of the package. */
export function isBranchRefused(err: unknown): boolean {
  return err instanceof BranchRefusedError || (err as { code?: unknown } | null)?.code === 'branch_refused';
}
