import { hostname } from 'node:os';
import { ConfigError } from '../core/errors/config-error.js';
import { MailroomError } from '../core/errors/mailroom-error.js';
import { silentLogger, type Logger } from '../core/logger.js';
import {
  custom,
  func,
  hasMethods,
  integer,
  nested,
  optionsSchema,
  type ResolvedOptions,
} from '../core/options-schema.js';
import { Outbox } from '../core/outbox.js';
import type { JsonValue, MessageInput } from '../core/types.js';
import { secretField, type WebhookSecret } from '../callbacks/webhook-secret.js';
import { httpParticipantFromDescriptor } from './http-participant.js';
import {
  isBranchRefused,
  type BranchCall,
  type BranchPhase,
  type ParticipantDescriptor,
  type SagaParticipant,
  type TccParticipant,
} from './participant.js';
import {
  errorText,
  FINAL_OF,
  TccStateStore,
  type BranchRecord,
  type BranchState,
  type GlobalKind,
  type GlobalRecord,
  type GlobalState,
  type TccStore,
} from './state.js';

/** What `onDecision` is told: which transaction, and what was decided. */
export interface DecisionInfo {
  gid: string;
  kind: GlobalKind;
  /** `confirm`/`cancel` for TCC, `succeed`/`compensate` for sagas. */
  decision: 'confirm' | 'cancel' | 'succeed' | 'compensate';
  /** What `run(…, { meta })` was given. */
  meta: JsonValue | null;
  /** Why it was cancelled (compensated): the failing branch and its error, or `timeout`. */
  reason: string | null;
  /** True when a recovery worker decided (the run that started it is gone). */
  byRecovery: boolean;
}

/** Second-phase retries: exponential backoff with full jitter, never giving up. */
export interface PhaseRetryOptions {
  /** First delay ceiling, in ms. @default 200 */
  baseDelayMs?: number;
  /** Largest delay, in ms. @default 60000 */
  maxDelayMs?: number;
}

/** Options shared by {@link TccCoordinator} and {@link SagaCoordinator}. */
export interface CoordinatorOptions<Tx = unknown> {
  /**
   * The application's own database (PostgresStore, PGliteStore), migrated to schema 12 or later:
   * global transaction and branch rows live there, written before every call.
   */
  store: TccStore<Tx>;
  /**
   * In-process participants by branch name, for recovery: after a crash, a coordinator can
   * confirm or cancel a branch whose participant is a local object only if it has one registered
   * under the branch's name. HTTP participants need no registration (their URL is stored).
   */
  participants?: Readonly<Record<string, TccParticipant<never, unknown> | SagaParticipant<never, unknown>>>;
  /** Where `publishIfConfirmed` and message steps enqueue. @default `new Outbox({ store })` */
  outbox?: Outbox<Tx>;
  /**
   * How long the first phase (TCC tries, saga steps) may take. Past it, the run's calls are
   * aborted and it is cancelled (compensated); a recovery worker cancels one whose coordinator
   * died. @default 30000
   */
  timeoutMs?: number;
  /** Deadline of each call to an in-process participant (HTTP ones have their own). @default 10000 */
  callTimeoutMs?: number;
  /**
   * How long `run` keeps retrying an unfinished second phase (confirms, cancels, compensations)
   * itself before it returns and leaves the rest to recovery. @default 30000
   */
  settleWaitMs?: number;
  /** How long a coordinator's claim on a transaction lasts without renewal. @default 15000 */
  leaseMs?: number;
  retry?: PhaseRetryOptions;
  /** Transactions a recovery round takes at once. @default 20 */
  recoveryBatchSize?: number;
  /** Longest sleep of the recovery loop between rounds, in ms. @default 1000 */
  recoveryIntervalMs?: number;
  /** Signs calls to HTTP participants rebuilt from their stored URL during recovery. */
  httpSecret?: WebhookSecret;
  /**
   * Runs in the transaction that records every decision, whoever makes it (the run, or recovery
   * after a crash or timeout): write the order's status, enqueue "order cancelled"… A throw
   * aborts that decision (it is tried again).
   */
  onDecision?: (tx: Tx, info: DecisionInfo) => Promise<void>;
  /** Names this coordinator in leases. @default `${hostname}:${pid}:${random}` */
  owner?: string;
  logger?: Logger;
}

const retrySchema = optionsSchema<PhaseRetryOptions>()(
  'TccCoordinator',
  {
    baseDelayMs: integer({ min: 1, max: 3_600_000, default: 200 }),
    maxDelayMs: integer({ min: 1, max: 86_400_000, default: 60_000 }),
  },
  { ordered: [['baseDelayMs', 'maxDelayMs']] },
);

const coordinatorSchema = optionsSchema<CoordinatorOptions>()('TccCoordinator', {
  store: custom('a PostgresStore or PGliteStore', hasMethods<TccStore>('transaction', 'executor'), {
    required: true,
  }),
  participants: custom(
    'an object of participants by branch name',
    (v): v is Record<string, TccParticipant> => typeof v === 'object' && v !== null && !Array.isArray(v),
  ),
  outbox: custom('an Outbox', (v): v is Outbox => v instanceof Outbox),
  timeoutMs: integer({ min: 1, max: 86_400_000, default: 30_000 }),
  callTimeoutMs: integer({ min: 1, max: 3_600_000, default: 10_000 }),
  settleWaitMs: integer({ min: 0, max: 3_600_000, default: 30_000 }),
  leaseMs: integer({ min: 100, max: 3_600_000, default: 15_000 }),
  retry: nested(retrySchema),
  recoveryBatchSize: integer({ min: 1, max: 1000, default: 20 }),
  recoveryIntervalMs: integer({ min: 10, max: 3_600_000, default: 1000 }),
  httpSecret: {
    expected: secretField().expected,
    // Checked here (length, form), kept as given: recovery signs with it through httpParticipant.
    resolve: (v, at, so): WebhookSecret | undefined => {
      if (v === undefined) return undefined;
      secretField().resolve(v, at, so);
      return v as WebhookSecret;
    },
  },
  onDecision: func<(tx: unknown, info: DecisionInfo) => Promise<void>>('an async function (tx, info) => …'),
  owner: custom(
    'a string of 1 to 200 characters',
    (v): v is string => typeof v === 'string' && v.length > 0 && v.length <= 200,
  ),
  logger: custom('a Logger (debug, info, warn, error)', hasMethods<Logger>('debug', 'info', 'warn', 'error')),
});

type Resolved = ResolvedOptions<typeof coordinatorSchema.fields>;

/** Thrown by `run` when the global transaction was cancelled (compensated) instead. */
export class GlobalTransactionAbortedError extends MailroomError {
  override name = 'GlobalTransactionAbortedError';
  readonly gid: string;
  /** `cancelled`/`compensated`, or `cancelling`/`compensating` when recovery is finishing it. */
  readonly state: GlobalState;
  /** The branch whose failure decided it, when one did. */
  readonly branch: string | null;
  readonly reason: string;

  constructor(gid: string, state: GlobalState, reason: string, branch: string | null, cause?: unknown) {
    const done = state === 'cancelled' || state === 'compensated';
    super(
      state === 'cancelled' || state === 'cancelling' ? 'tcc_cancelled' : 'saga_compensated',
      `global transaction ${gid} was ${done ? state : `decided to ${state === 'cancelling' ? 'cancel' : 'compensate'} (still ${state}: recovery finishes it)`}: ${reason}`,
      { details: { gid, state, branch, reason }, cause },
    );
    this.gid = gid;
    this.state = state;
    this.branch = branch;
    this.reason = reason;
  }
}

/** What a successful `run` returns. */
export interface RunResult<T> {
  gid: string;
  /** `confirmed`/`succeeded`; `confirming` when recovery is finishing slow confirms. */
  state: GlobalState;
  /** What the body returned. */
  value: T;
}

/** Options of one `run`. */
export interface RunOptions {
  /** The global id: give one to make `run` idempotent per business operation. @default a UUIDv7 */
  gid?: string;
  /** Overrides the coordinator's `timeoutMs` for this run. */
  timeoutMs?: number;
  /** Stored with the transaction and handed to `onDecision` (e.g. `{ orderId }`). */
  meta?: JsonValue;
}

const GID_RE = /^[\x21-\x7e]{1,128}$/;

function checkName(what: 'gid' | 'branch', value: unknown): string {
  if (typeof value !== 'string' || !GID_RE.test(value)) {
    throw new ConfigError(
      what,
      `${what} must be 1 to 128 printable ASCII characters without spaces, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

function defaultOwner(): string {
  return `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
}

class Aborted extends Error {}

/** Resolves with `promise`, or rejects when `signal` aborts first. */
function race<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new Aborted(String(signal.reason ?? 'aborted')));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new Aborted(errorText(signal.reason ?? 'aborted')));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

type AnyParticipant = TccParticipant<never, unknown> | SagaParticipant<never, unknown>;

/** Which participant method a phase calls. */
const METHOD: Record<BranchPhase, string> = {
  try: 'try',
  confirm: 'confirm',
  cancel: 'cancel',
  action: 'action',
  compensate: 'compensate',
};

/** The second phase of each in-progress state: what every branch gets, and what it becomes. */
const SECOND_PHASE: Partial<Record<GlobalState, { phase: BranchPhase; branchDone: BranchState }>> = {
  confirming: { phase: 'confirm', branchDone: 'confirmed' },
  cancelling: { phase: 'cancel', branchDone: 'cancelled' },
  compensating: { phase: 'compensate', branchDone: 'compensated' },
};

/** Header names of saga messages (message steps and their replies). */
export const SAGA_GID_HEADER = 'mailroom-saga-gid';
export const SAGA_BRANCH_HEADER = 'mailroom-saga-branch';
export const SAGA_PHASE_HEADER = 'mailroom-saga-phase';
export const SAGA_REPLY_TO_HEADER = 'mailroom-saga-reply-to';

/**
 * The engine both coordinators share: durable state, the second phase with retries, leases and
 * recovery. Use {@link TccCoordinator} or {@link SagaCoordinator}.
 */
export abstract class Coordinator<Tx = unknown> {
  readonly owner: string;
  /** @internal */
  readonly state: TccStateStore<Tx>;
  /** @internal */
  readonly options: Resolved;
  /** @internal */
  readonly outbox: Outbox<Tx>;
  /** @internal */
  readonly logger: Logger;
  readonly #registered: Readonly<Record<string, AnyParticipant>>;
  readonly #onDecision: ((tx: Tx, info: DecisionInfo) => Promise<void>) | undefined;
  /** Participants of the runs in progress here, by gid and branch. */
  readonly #live = new Map<string, Map<string, AnyParticipant>>();
  /** Transactions this coordinator holds a lease on, with how many users. */
  readonly #held = new Map<string, number>();
  readonly #closing = new AbortController();
  #heartbeat: NodeJS.Timeout | undefined;
  #recovery: Promise<void> | undefined;
  #wakeRecovery: (() => void) | undefined;
  readonly #active = new Set<Promise<unknown>>();
  /** Waiters for saga replies recorded in this process. @internal */
  readonly replyWaiters = new Map<string, () => void>();

  constructor(
    readonly kind: GlobalKind,
    options: CoordinatorOptions<Tx>,
  ) {
    this.options = coordinatorSchema.resolve(options as CoordinatorOptions);
    this.state = new TccStateStore(options.store);
    this.outbox = options.outbox ?? new Outbox<Tx>({ store: options.store as never });
    this.logger = options.logger ?? silentLogger;
    this.owner = options.owner ?? defaultOwner();
    this.#registered = options.participants ?? {};
    for (const [name, p] of Object.entries(this.#registered)) {
      checkName('branch', name);
      this.#checkParticipant(name, p);
    }
    this.#onDecision = options.onDecision;
  }

  #checkParticipant(branch: string, p: unknown): AnyParticipant {
    const methods = this.kind === 'tcc' ? ['try', 'confirm', 'cancel'] : ['action', 'compensate'];
    const missing = methods.filter((m) => typeof (p as Record<string, unknown> | null)?.[m] !== 'function');
    if (missing.length > 0) {
      throw new ConfigError(
        'participant',
        `the participant of branch ${JSON.stringify(branch)} lacks ${missing.join(', ')}(): a ` +
          `${this.kind === 'tcc' ? 'TCC participant has try, confirm and cancel' : 'saga step has action and compensate'}` +
          ' (or use httpParticipant({ url }))',
      );
    }
    return p as AnyParticipant;
  }

  /** The stored state of a global transaction and its branches, or null. */
  async status(gid: string): Promise<(GlobalRecord & { branches: BranchRecord[] }) | null> {
    const record = await this.state.get(gid);
    if (record === null) return null;
    return { ...record, branches: await this.state.branches(gid) };
  }

  /** Global transactions, newest first. */
  list(filter: { states?: readonly GlobalState[]; limit?: number } = {}): Promise<GlobalRecord[]> {
    return this.state.list({ ...filter, kind: this.kind });
  }

  /** Deletes finished transactions older than `olderThanMs` (default 7 days); returns how many. */
  async prune(olderThanMs = 7 * 86_400_000): Promise<number> {
    let total = 0;
    for (;;) {
      const n = await this.state.prune(olderThanMs, 1000);
      total += n;
      if (n < 1000) return total;
    }
  }

  /**
   * Starts the recovery worker in this process: it finishes second phases left unfinished (by a
   * crash, or by `run` returning after `settleWaitMs`) and cancels (compensates) transactions
   * still in their first phase past their timeout. Runs until `close()`.
   */
  start(options: { httpOnly?: boolean } = {}): this {
    if (this.#closing.signal.aborted)
      throw new ConfigError('start', 'this coordinator is closed; create a new one');
    this.#recovery ??= this.#recoveryLoop(options.httpOnly === true);
    return this;
  }

  /**
   * One recovery round: takes up to `recoveryBatchSize` due transactions and works each one
   * round. Returns how many it took. `httpOnly` takes only transactions whose branches can all
   * be reached without registered in-process participants (what `mailroom tcc recover` does).
   */
  async recoverOnce(options: { httpOnly?: boolean } = {}): Promise<number> {
    const claimed = await this.state.claim({
      owner: this.owner,
      leaseMs: this.options.leaseMs,
      limit: this.options.recoveryBatchSize,
      httpOnly: options.httpOnly ?? false,
      kind: this.kind,
    });
    await Promise.all(claimed.map((r) => this.#recoverOne(r)));
    return claimed.length;
  }

  /** Stops recovery, aborts calls in flight, and waits for runs in progress here to end. */
  async close(): Promise<void> {
    if (!this.#closing.signal.aborted) this.#closing.abort(new Error('the coordinator was closed'));
    this.#wakeRecovery?.();
    await this.#recovery;
    await Promise.allSettled([...this.#active]);
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
  }

  /** @internal */
  get closed(): boolean {
    return this.#closing.signal.aborted;
  }

  /** @internal */
  get closingSignal(): AbortSignal {
    return this.#closing.signal;
  }

  /** Tracks a run so `close()` waits for it. @internal */
  track<T>(promise: Promise<T>): Promise<T> {
    this.#active.add(promise);
    void promise.finally(() => this.#active.delete(promise)).catch(() => {});
    return promise;
  }

  /** @internal */
  hold(gid: string): void {
    this.#held.set(gid, (this.#held.get(gid) ?? 0) + 1);
    if (this.#heartbeat === undefined) {
      this.#heartbeat = setInterval(
        () => {
          this.state
            .extendLeases([...this.#held.keys()], this.owner, this.options.leaseMs)
            .catch((err: unknown) => {
              this.logger.warn('tcc lease renewal failed', { error: errorText(err) });
            });
        },
        Math.max(50, Math.floor(this.options.leaseMs / 3)),
      );
      this.#heartbeat.unref();
    }
  }

  /** @internal */
  release(gid: string): void {
    const n = (this.#held.get(gid) ?? 1) - 1;
    if (n > 0) this.#held.set(gid, n);
    else this.#held.delete(gid);
    if (this.#held.size === 0 && this.#heartbeat) {
      clearInterval(this.#heartbeat);
      this.#heartbeat = undefined;
    }
  }

  /** @internal */
  liveParticipants(gid: string): Map<string, AnyParticipant> {
    let map = this.#live.get(gid);
    if (!map) this.#live.set(gid, (map = new Map()));
    return map;
  }

  /** @internal */
  forget(gid: string): void {
    this.#live.delete(gid);
  }

  /** @internal */
  checkParticipant(branch: string, p: unknown): AnyParticipant {
    return this.#checkParticipant(branch, p);
  }

  /** @internal */
  isRegistered(branch: string, p: AnyParticipant): boolean {
    return this.#registered[branch] !== undefined || p.descriptor !== undefined;
  }

  /** @internal */
  checkGid(gid: unknown): string {
    return checkName('gid', gid);
  }

  /** @internal */
  checkBranch(branch: unknown): string {
    return checkName('branch', branch);
  }

  /** The decision's transaction: the state change, the app's `onDecision`, and `extra`. @internal */
  async decide(
    record: Pick<GlobalRecord, 'gid' | 'kind' | 'meta'>,
    from: GlobalState,
    to: GlobalState,
    reason: string | null,
    byRecovery: boolean,
    extra?: (tx: Tx) => Promise<void>,
  ): Promise<GlobalState | 'missing'> {
    const decision: DecisionInfo['decision'] =
      to === 'confirming'
        ? 'confirm'
        : to === 'cancelling'
          ? 'cancel'
          : to === 'succeeded'
            ? 'succeed'
            : 'compensate';
    const result = await this.state.decide(record.gid, from, to, reason, async (tx, stored) => {
      if (extra) await extra(tx);
      if (this.#onDecision) {
        await this.#onDecision(tx, {
          gid: record.gid,
          kind: record.kind,
          decision,
          meta: stored.meta,
          reason,
          byRecovery,
        });
      }
    });
    if (result === to)
      // One per global transaction: detail, not a change of the coordinator's state.
      this.logger.debug('tcc decided', {
        event: 'tcc_decided',
        gid: record.gid,
        kind: record.kind,
        decision,
        reason,
      });
    return result;
  }

  /** The participant to call for a stored branch, or null when none can be found here. */
  #participantFor(gid: string, branch: BranchRecord): AnyParticipant | 'message' | null {
    if (branch.participant.kind === 'message') return 'message';
    const live = this.#live.get(gid)?.get(branch.branch);
    if (live) return live;
    const registered = this.#registered[branch.branch];
    if (registered) return registered;
    if (branch.participant.kind === 'http') {
      return httpParticipantFromDescriptor(branch.participant, { secret: this.options.httpSecret });
    }
    return null;
  }

  /** Calls one phase of a branch, with the call deadline for in-process participants. @internal */
  async call(
    participant: AnyParticipant,
    call: Omit<BranchCall, 'signal'>,
    signal: AbortSignal,
  ): Promise<unknown> {
    const deadline = AbortSignal.any([
      signal,
      this.#closing.signal,
      ...(participant.descriptor?.kind === 'http' ? [] : [AbortSignal.timeout(this.options.callTimeoutMs)]),
    ]);
    const method = (participant as unknown as Record<string, (c: BranchCall) => Promise<unknown>>)[
      METHOD[call.phase]
    ];
    if (typeof method !== 'function') {
      throw new ConfigError('participant', `the participant of branch ${call.branch} has no ${call.phase}()`);
    }
    return race(
      Promise.resolve().then(() => method.call(participant, { ...call, signal: deadline })),
      deadline,
    );
  }

  /**
   * One round of the second phase: calls every branch not yet done (TCC: all at once; saga
   * compensations: newest first, one at a time, stopping at the first failure). True when every
   * branch is done and the transaction is final.
   *
   * @internal
   */
  async secondPhaseRound(
    record: GlobalRecord,
    signal: AbortSignal,
  ): Promise<{ done: boolean; error: string | null }> {
    const second = SECOND_PHASE[record.state];
    const final = FINAL_OF[record.state];
    if (!second || !final) return { done: true, error: null };
    const branches = await this.state.branches(record.gid);
    const pending = branches.filter((b) => b.state !== second.branchDone);
    let firstError: string | null = null;
    const work = async (b: BranchRecord): Promise<boolean> => {
      const participant = this.#participantFor(record.gid, b);
      if (participant === null) {
        firstError ??=
          `branch ${b.branch} has an in-process participant that this coordinator does not have ` +
          `registered (participants: { ${JSON.stringify(b.branch)}: … }); a coordinator that registers it will finish it`;
        return false;
      }
      if (participant === 'message') {
        const d = b.participant as Extract<ParticipantDescriptor, { kind: 'message' }>;
        await this.state.setBranch(
          record.gid,
          b.branch,
          { state: second.branchDone, error: null, attempted: true },
          (tx) =>
            this.outbox
              .enqueue(
                tx,
                sagaMessage(d.compensateTopic, record.gid, b.branch, 'compensate', b.input, d.replyTo),
              )
              .then(() => undefined),
        );
        return true;
      }
      try {
        await this.call(
          participant,
          { gid: record.gid, branch: b.branch, phase: second.phase, input: b.input, attempt: b.attempts + 1 },
          signal,
        );
        await this.state.setBranch(record.gid, b.branch, {
          state: second.branchDone,
          error: null,
          attempted: true,
        });
        return true;
      } catch (err) {
        const text = errorText(err);
        firstError ??= `${b.branch}.${second.phase}: ${text}`;
        this.logger.warn('tcc phase call failed', {
          gid: record.gid,
          branch: b.branch,
          phase: second.phase,
          error: text,
        });
        await this.state.setBranch(record.gid, b.branch, { error: text, attempted: true }).catch(() => {});
        return false;
      }
    };
    let ok = true;
    if (second.phase === 'compensate') {
      for (const b of pending.sort((x, y) => y.seq - x.seq)) {
        if (!(await work(b))) {
          ok = false;
          break;
        }
      }
    } else {
      ok = (await Promise.all(pending.map(work))).every(Boolean);
    }
    if (!ok) return { done: false, error: firstError };
    await this.state.finish(record.gid, record.state, final);
    this.logger.debug('tcc finished', {
      event: 'tcc_finished',
      gid: record.gid,
      kind: record.kind,
      state: final,
    });
    return { done: true, error: null };
  }

  /** @internal */
  delayMs(attempts: number): number {
    const { baseDelayMs, maxDelayMs } = this.options.retry;
    const ceiling = Math.min(maxDelayMs, baseDelayMs * 2 ** Math.min(30, Math.max(0, attempts - 1)));
    return Math.max(1, Math.floor(Math.random() * ceiling));
  }

  /**
   * Drives the second phase from a `run`: rounds with backoff until done, `settleWaitMs` passes
   * or the coordinator closes; then hands what is left to recovery. Returns the state reached.
   *
   * @internal
   */
  async settle(gid: string): Promise<GlobalState> {
    const until = Date.now() + this.options.settleWaitMs;
    let attempts = 0;
    let lastError: string | null = null;
    for (;;) {
      const record = await this.state.get(gid);
      if (record === null)
        throw new MailroomError('tcc_missing', `global transaction ${gid} disappeared (pruned?)`);
      if (!SECOND_PHASE[record.state]) return record.state;
      const round = await this.secondPhaseRound(record, this.#closing.signal);
      if (round.done) return FINAL_OF[record.state] as GlobalState;
      lastError = round.error;
      attempts += 1;
      const delay = this.delayMs(attempts);
      if (this.closed || Date.now() + delay > until) {
        await this.state.postpone(gid, this.owner, delay, lastError);
        this.#wakeRecovery?.();
        return record.state;
      }
      await sleep(delay, this.#closing.signal);
    }
  }

  async #recoverOne(record: GlobalRecord): Promise<void> {
    this.hold(record.gid);
    try {
      let current = record;
      if (record.state === 'trying' || record.state === 'running') {
        const to = record.state === 'trying' ? 'cancelling' : 'compensating';
        const reason = `timeout: still ${record.state} at its deadline (${record.timeoutAt.toISOString()}), its coordinator gone`;
        const now = await this.decide(record, record.state, to, reason, true);
        if (now !== to) return;
        current = { ...record, state: to, reason };
      }
      const round = await this.secondPhaseRound(current, this.#closing.signal);
      if (!round.done) {
        const delay = this.delayMs(record.attempts + 1);
        await this.state.postpone(record.gid, this.owner, delay, round.error);
        const log = record.attempts + 1 >= 10 ? 'error' : 'warn';
        this.logger[log]('tcc phase unfinished, retrying later', {
          gid: record.gid,
          state: current.state,
          attempts: record.attempts + 1,
          retryInMs: delay,
          error: round.error,
        });
      }
    } catch (err) {
      this.logger.error('tcc recovery failed', { gid: record.gid, error: errorText(err) });
      await this.state
        .postpone(record.gid, this.owner, this.delayMs(record.attempts + 1), errorText(err))
        .catch(() => {});
    } finally {
      this.release(record.gid);
    }
  }

  async #recoveryLoop(httpOnly: boolean): Promise<void> {
    const signal = this.#closing.signal;
    let failures = 0;
    while (!signal.aborted) {
      let wait = this.options.recoveryIntervalMs;
      try {
        const n = await this.recoverOnce({ httpOnly });
        failures = 0;
        if (n >= this.options.recoveryBatchSize) continue;
        const due = await this.state.nextDueInMs(httpOnly, this.kind);
        if (due !== null) wait = Math.min(wait, Math.max(10, Math.ceil(due)));
      } catch (err) {
        failures += 1;
        wait = Math.min(30_000, this.options.recoveryIntervalMs * 2 ** Math.min(5, failures));
        if (!signal.aborted)
          this.logger.warn('tcc recovery round failed', { error: errorText(err), retryInMs: wait });
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, wait);
        this.#wakeRecovery = done;
        signal.addEventListener('abort', done, { once: true });
        function done() {
          clearTimeout(timer);
          signal.removeEventListener('abort', done);
          resolve();
        }
      });
      this.#wakeRecovery = undefined;
    }
  }

  /** Writes a branch row and classifies the first-phase call; shared by `try` and `step`. @internal */
  async firstPhaseCall(input: {
    gid: string;
    expect: 'trying' | 'running';
    branch: string;
    seq: number;
    participant: AnyParticipant;
    input: JsonValue | null;
    signal: AbortSignal;
  }): Promise<
    { ok: true; result: unknown } | { ok: false; refused: boolean; error: unknown; stateNow?: GlobalState }
  > {
    const { gid, branch } = input;
    const descriptor: ParticipantDescriptor = input.participant.descriptor ?? { kind: 'local' };
    const phase: BranchPhase = input.expect === 'trying' ? 'try' : 'action';
    const running: BranchState = input.expect === 'trying' ? 'trying' : 'running';
    const isMessage = descriptor.kind === 'message';
    const now = await this.state.addBranch(
      {
        gid,
        expect: input.expect,
        branch,
        seq: input.seq,
        participant: descriptor,
        input: input.input,
        state: running,
      },
      isMessage
        ? (tx) =>
            this.outbox
              .enqueue(
                tx,
                sagaMessage(descriptor.topic, gid, branch, 'action', input.input, descriptor.replyTo),
              )
              .then(() => undefined)
        : undefined,
    );
    if (now !== input.expect) {
      return {
        ok: false,
        refused: false,
        error: new MailroomError(
          'tcc_not_trying',
          `global transaction ${gid} is ${now}, no longer ${input.expect}`,
        ),
        ...(now === 'missing' ? {} : { stateNow: now }),
      };
    }
    this.liveParticipants(gid).set(branch, input.participant);
    const okState: BranchState = input.expect === 'trying' ? 'tried' : 'done';
    const refusedState: BranchState = input.expect === 'trying' ? 'refused' : 'failed';
    try {
      const result = isMessage
        ? await this.#awaitReply(gid, branch, input.signal)
        : await this.call(
            input.participant,
            { gid, branch, phase, input: input.input, attempt: 1 },
            input.signal,
          );
      if (!isMessage) {
        await this.state.setBranch(gid, branch, {
          state: okState,
          result: result === undefined ? undefined : (result as JsonValue),
          attempted: true,
        });
      }
      return { ok: true, result };
    } catch (err) {
      const refused = isBranchRefused(err);
      if (!isMessage) {
        await this.state
          .setBranch(gid, branch, {
            state: refused ? refusedState : 'unknown',
            error: errorText(err),
            attempted: true,
          })
          .catch((e: unknown) =>
            this.logger.warn('tcc branch outcome not recorded', { gid, branch, error: errorText(e) }),
          );
      }
      return { ok: false, refused, error: err };
    }
  }

  /** Waits until a message step's reply is recorded (`reply`), polling the branch row. */
  async #awaitReply(gid: string, branch: string, signal: AbortSignal): Promise<unknown> {
    const key = `${gid}\u0000${branch}`;
    let pause = 50;
    for (;;) {
      const rows = await this.state.branches(gid);
      const row = rows.find((b) => b.branch === branch);
      if (row?.state === 'done') return row.result ?? undefined;
      if (row?.state === 'failed') {
        throw new MailroomError(
          'branch_refused',
          `step ${branch} failed: ${row.lastError ?? 'the receiver refused it'}`,
        );
      }
      if (signal.aborted || this.closed) throw new Aborted(`no reply to step ${branch} before the deadline`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, pause);
        this.replyWaiters.set(key, done);
        signal.addEventListener('abort', done, { once: true });
        function done() {
          clearTimeout(timer);
          signal.removeEventListener('abort', done);
          resolve();
        }
      });
      this.replyWaiters.delete(key);
      pause = Math.min(1000, pause * 2);
    }
  }
}

/** The message a message step sends (action) or enqueues on compensation. */
function sagaMessage(
  topic: string,
  gid: string,
  branch: string,
  phase: 'action' | 'compensate',
  input: JsonValue | null,
  replyTo: string,
): MessageInput {
  return {
    topic,
    key: gid,
    type: `mailroom.saga.${phase}`,
    headers: {
      [SAGA_GID_HEADER]: gid,
      [SAGA_BRANCH_HEADER]: branch,
      [SAGA_PHASE_HEADER]: phase,
      [SAGA_REPLY_TO_HEADER]: replyTo,
    },
    payload: { gid, branch, phase, input },
  };
}

export { Aborted as CallAborted, race as raceSignal, sleep as sleepFor };
export type { AnyParticipant, Resolved as ResolvedCoordinatorOptions };
