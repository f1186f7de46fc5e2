import { ConfigError } from '../core/errors/config-error.js';
import { MailroomError } from '../core/errors/mailroom-error.js';
import type { JsonValue, MessageInput } from '../core/types.js';
import { uuidv7 } from '../core/uuid.js';
import {
  Coordinator,
  GlobalTransactionAbortedError,
  type AnyParticipant,
  type CoordinatorOptions,
  type RunOptions,
  type RunResult,
} from './coordinator.js';
import type { SagaParticipant, TccParticipant } from './participant.js';
import { errorText, type GlobalKind, type GlobalState } from './state.js';

/** Thrown by `t.try` (`s.step`) inside the body when that branch failed; the run then cancels. */
export class BranchFailedError extends MailroomError {
  override name = 'BranchFailedError';
  readonly gid: string;
  readonly branch: string;
  /** True when the participant refused; false when the outcome is unknown (timeout, 5xx…). */
  readonly refused: boolean;

  constructor(gid: string, branch: string, refused: boolean, cause: unknown) {
    super(
      refused ? 'branch_refused' : 'branch_unknown',
      `branch ${branch} of global transaction ${gid} ${refused ? 'was refused' : 'failed with an unknown outcome'}: ` +
        `${errorText(cause)}; the global transaction will be ${refused ? 'cancelled' : 'cancelled (its try may have run, so it is cancelled too)'}`,
      { details: { gid, branch, refused }, cause },
    );
    this.gid = gid;
    this.branch = branch;
    this.refused = refused;
  }
}

/** What the body of `tcc.run` gets. */
export interface TccContext {
  /** The global transaction's id. */
  readonly gid: string;
  /** Aborts at the transaction's timeout (and when the coordinator closes). */
  readonly signal: AbortSignal;
  /**
   * Writes the branch, then calls `participant.try`. Resolves with what the try returned; throws
   * a {@link BranchFailedError} when it refused or its outcome is unknown, and the whole global
   * transaction is then cancelled (even if the body catches the error). Tries may run in
   * parallel; branch names are unique within a transaction.
   */
  try<I extends JsonValue | null, R>(
    branch: string,
    participant: TccParticipant<I, R>,
    input?: I,
  ): Promise<R>;
  /** Enqueues messages in the same database transaction as the decision to confirm. */
  publishIfConfirmed(messages: MessageInput | readonly MessageInput[]): void;
}

/** Options of {@link TccCoordinator}. */
export type TccCoordinatorOptions<Tx = unknown> = CoordinatorOptions<Tx>;

interface Failure {
  branch: string;
  refused: boolean;
  error: unknown;
}

/**
 * Runs Try-Confirm-Cancel global transactions on the application's own database, with no
 * coordinator server: the state of every transaction and branch is written before each call, so
 * the decision survives a crash, and a recovery worker (`start()`, or `mailroom tcc recover`)
 * finishes what a crashed coordinator left.
 *
 * @example
 * ```ts
 * const tcc = new TccCoordinator({ store }).start();
 * await tcc.run(async (t) => {
 *   await t.try('inventory', httpParticipant({ url: 'http://inventory/tcc' }), { sku, qty });
 *   await t.try('payment', httpParticipant({ url: 'http://payment/tcc' }), { account, amount });
 *   t.publishIfConfirmed({ topic: 'orders.confirmed', key: orderId, payload: { orderId } });
 * });
 * ```
 */
export class TccCoordinator<Tx = unknown> extends Coordinator<Tx> {
  constructor(options: TccCoordinatorOptions<Tx>) {
    super('tcc', options);
  }

  /**
   * Runs one global transaction: the body's tries, then confirm (every try succeeded and the
   * body returned) or cancel (a try refused or failed, the body threw, or the timeout passed).
   * Resolves once every branch is confirmed (state `confirmed`; `confirming` if confirms were
   * still failing after `settleWaitMs`: recovery goes on retrying them). Throws a
   * {@link GlobalTransactionAbortedError} after the cancel.
   */
  run<T>(body: (t: TccContext) => Promise<T>, options: RunOptions = {}): Promise<RunResult<T>> {
    return runGlobal(this, 'tcc', body, options);
  }
}

/** The engine's members the shared run flow uses. */
type Internals<Tx> = Coordinator<Tx>;

/**
 * The flow of one global transaction, TCC or saga: first phase, decision, second phase; tracked
 * so that `close()` waits for it.
 */
export function runGlobal<Tx, T>(
  c: Internals<Tx>,
  kind: GlobalKind,
  body: (context: never) => Promise<T>,
  options: RunOptions,
): Promise<RunResult<T>> {
  if (typeof body !== 'function') {
    const name = kind === 'tcc' ? 't' : 's';
    return Promise.reject(
      new ConfigError('body', `${kind}.run(body): body must be an async function (${name}) => …`),
    );
  }
  if (c.closed) return Promise.reject(new ConfigError('run', 'this coordinator is closed; create a new one'));
  return c.track(runChecked(c, kind, body, options));
}

async function runChecked<Tx, T>(
  c: Internals<Tx>,
  kind: GlobalKind,
  body: (context: never) => Promise<T>,
  options: RunOptions,
): Promise<RunResult<T>> {
  if (typeof options !== 'object' || options === null) {
    throw new ConfigError('options', `${kind}.run(body, options): options must be an object`);
  }
  for (const key of Object.keys(options)) {
    if (!['gid', 'timeoutMs', 'meta'].includes(key)) {
      throw new ConfigError(key, `unknown run option ${JSON.stringify(key)}; allowed: gid, timeoutMs, meta`);
    }
  }
  const gid = options.gid === undefined ? uuidv7() : c.checkGid(options.gid);
  const timeoutMs = options.timeoutMs ?? c.options.timeoutMs;
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 86_400_000) {
    throw new ConfigError(
      'timeoutMs',
      `run option timeoutMs must be an integer from 1 to 86400000 ms, got ${String(timeoutMs)}`,
    );
  }
  const meta = options.meta ?? null;
  const first: GlobalState = kind === 'tcc' ? 'trying' : 'running';
  const created = await c.state.begin({
    gid,
    kind,
    timeoutMs,
    owner: c.owner,
    leaseMs: c.options.leaseMs,
    meta,
  });
  if (!created) {
    const existing = await c.state.get(gid);
    throw new MailroomError(
      'tcc_gid_taken',
      `a global transaction with gid ${gid} exists already (state ${existing?.state ?? 'unknown'}); ` +
        'use a new gid per business operation, or read its outcome with status(gid)',
      { details: { gid, state: existing?.state ?? null } },
    );
  }
  c.hold(gid);
  const deadline = AbortSignal.any([AbortSignal.timeout(timeoutMs), c.closingSignal]);
  const publish: MessageInput[] = [];
  const pending = new Set<Promise<unknown>>();
  const names = new Set<string>();
  let seq = 0;
  let open = true;
  let failure: Failure | null = null;
  let lostTo: GlobalState | undefined;
  const record = { gid, kind, meta: meta as JsonValue | null };

  const branchCall = async (
    branch: string,
    participant: AnyParticipant,
    input: unknown,
  ): Promise<unknown> => {
    if (!open) {
      throw new ConfigError(
        'branch',
        `branch ${branch} was started after the run's body returned; await every t.try / s.step inside the body`,
      );
    }
    c.checkBranch(branch);
    if (names.has(branch)) {
      throw new ConfigError(
        'branch',
        `branch ${JSON.stringify(branch)} is used twice in global transaction ${gid}; name each branch once`,
      );
    }
    c.checkParticipant(branch, participant);
    const value = input === undefined ? null : input;
    try {
      JSON.stringify(value);
    } catch (err) {
      throw new ConfigError('input', `the input of branch ${branch} must be JSON: ${errorText(err)}`);
    }
    names.add(branch);
    if (failure) {
      throw new BranchFailedError(
        gid,
        branch,
        false,
        new Error(`not started: branch ${failure.branch} failed first`),
      );
    }
    if (!c.isRegistered(branch, participant)) {
      c.logger.warn('tcc branch participant not registered for recovery', {
        gid,
        branch,
        hint: 'pass it in the coordinator option participants, or a crash leaves this branch for a coordinator that has it',
      });
    }
    const call = c.firstPhaseCall({
      gid,
      expect: first as 'trying' | 'running',
      branch,
      seq: ++seq,
      participant,
      input: value as JsonValue | null,
      signal: deadline,
    });
    pending.add(call);
    const out = await call.finally(() => pending.delete(call));
    if (out.ok) return out.result;
    if (out.stateNow !== undefined) lostTo = out.stateNow;
    failure ??= { branch, refused: out.refused, error: out.error };
    throw new BranchFailedError(gid, branch, out.refused, out.error);
  };

  const publishOnSuccess = (messages: MessageInput | readonly MessageInput[]) => {
    if (!open) throw new ConfigError('publish', 'messages must be added inside the body, before it returns');
    publish.push(...(Array.isArray(messages) ? messages : [messages as MessageInput]));
  };

  const context =
    kind === 'tcc'
      ? {
          gid,
          signal: deadline,
          try: (branch: string, participant: AnyParticipant, input?: unknown) =>
            branchCall(branch, participant, input),
          publishIfConfirmed: publishOnSuccess,
        }
      : {
          gid,
          signal: deadline,
          step: (branch: string, a: unknown, b?: unknown, input?: unknown) => {
            if (typeof a === 'function') {
              if (typeof b !== 'function') {
                throw new ConfigError(
                  'compensate',
                  `s.step(${JSON.stringify(branch)}, action, compensate, input): compensate must be a function`,
                );
              }
              const p: SagaParticipant<never, unknown> = {
                action: a as SagaParticipant<never, unknown>['action'],
                compensate: b as SagaParticipant<never, unknown>['compensate'],
              };
              return branchCall(branch, p, input);
            }
            return branchCall(branch, a as AnyParticipant, b);
          },
          publishIfSucceeded: publishOnSuccess,
        };

  let value: T | undefined;
  let bodyError: unknown;
  let threw = false;
  try {
    value = await body(context as never);
  } catch (err) {
    threw = true;
    bodyError = err;
  }
  open = false;
  try {
    await Promise.allSettled([...pending]);
    const success: GlobalState = kind === 'tcc' ? 'confirming' : 'succeeded';
    const abort: GlobalState = kind === 'tcc' ? 'cancelling' : 'compensating';
    let reason: string | null = null;
    if (!threw && failure === null && lostTo === undefined) {
      const now = await c.decide(record, first, success, null, false, async (tx) => {
        if (publish.length > 0) await c.outbox.enqueue(tx, publish);
      });
      if (now === success) {
        const state = kind === 'tcc' ? await c.settle(gid) : success;
        return { gid, state, value: value as T };
      }
      lostTo = now === 'missing' ? undefined : now;
    }
    const f = failure as Failure | null;
    if (f) {
      reason = `${f.branch} ${f.refused ? 'refused' : 'failed (outcome unknown)'}: ${errorText(f.error)}`;
    } else if (threw) {
      reason = `the run's body threw: ${errorText(bodyError)}`;
    } else {
      reason = (await c.state.get(gid))?.reason ?? 'decided by recovery';
    }
    let now: GlobalState | 'missing' = lostTo ?? first;
    if (now === first) now = await c.decide(record, first, abort, reason, false);
    if (now === 'missing')
      throw new MailroomError('tcc_missing', `global transaction ${gid} disappeared (pruned?)`);
    if (now !== abort && now !== (kind === 'tcc' ? 'cancelled' : 'compensated')) {
      // Only this run decides success; anything else here is a bug worth hearing about loudly.
      throw new MailroomError(
        'tcc_state',
        `global transaction ${gid} is ${now} after its run decided to ${abort}`,
      );
    }
    if (now !== abort) reason = (await c.state.get(gid))?.reason ?? reason;
    const state = await c.settle(gid);
    throw new GlobalTransactionAbortedError(gid, state, reason, f?.branch ?? null, f?.error ?? bodyError);
  } finally {
    c.release(gid);
    c.forget(gid);
  }
}
