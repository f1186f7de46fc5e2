import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { systemClock, type Clock } from './clock.js';
import { ConfigError } from './errors/config-error.js';
import { RelayStateError } from './errors/relay-state-error.js';
import { silentLogger, type Logger } from './logger.js';
import type { ClaimedBatch, ClaimRequest, OutboxStats, OutboxStore, Settlement, Transport } from './ports.js';
import { BatchBudget, type BudgetUsage } from './relay-group-budget.js';
import type { RelayEvents } from './relay-events.js';
import { detachObserver, type RelayOptions } from './relay-options.js';
import { Relay } from './relay.js';
import { TypedEmitter } from './typed-emitter.js';

export type { BudgetUsage } from './relay-group-budget.js';

/**
 * A source name: a letter or digit, then letters, digits, `_`, `.` or `-`, 63 characters at
 * most. Names go into log fields, metric labels and relay owner names, so they stay plain.
 */
export const SOURCE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Relay options a source may set for itself; the rest are the group's. */
export type RelayGroupSourceOverrides = Partial<
  Omit<RelayOptions, 'store' | 'transport' | 'signal' | 'logger' | 'clock' | 'metrics'>
>;

/**
 * Watches a relay group while it runs: `RelayMetrics` from `mailroom/metrics` is one (see
 * {@link RelayObserver} for a single relay).
 */
export interface RelayGroupObserver {
  /** Starts watching `group` (every source, by name); returns the function that stops. */
  observe(group: RelayGroup): () => void;
}

/** One database (or schema) a {@link RelayGroup} relays from. */
export interface RelayGroupSource extends RelayGroupSourceOverrides {
  /**
   * The source's name in events, logs, status and owner names (`tenant_a`, `billing`).
   * Unique in the group; see {@link SOURCE_NAME}.
   */
  name: string;
  /** The source's outbox store (its own pool: a database that is down affects only this source). */
  store: OutboxStore;
}

/** Options of {@link RelayGroup}: the shared relay options, the sources, the shared transport. */
export interface RelayGroupOptions extends Omit<RelayOptions, 'store' | 'source' | 'owner' | 'metrics'> {
  /** The sources, each with its store and the relay options it sets for itself. At least one. */
  sources: readonly RelayGroupSource[];
  /**
   * Batches in flight across all sources at once (claimed and not yet settled). Free slots go
   * round-robin to the sources waiting for one, so a busy source cannot take them all: a quiet
   * source waits for at most one slot to free up per busy source. Each source's own
   * `concurrency` still caps its share.
   *
   * @default concurrency + number of sources - 1: one source at full concurrency while every
   *   other source has a batch out
   */
  maxInFlightBatches?: number;
  /**
   * Watches the group from its start to its stop, each source under its name: a `RelayMetrics`
   * from `mailroom/metrics`. The same as `metrics.observe(group)`, detached after `stop()`.
   */
  metrics?: RelayGroupObserver;
  /**
   * Prefix of each source's relay owner name (`${owner}:${source}`), unless the source sets
   * `owner` itself. @default `${hostname}:${pid}:${random}`
   */
  owner?: string;
}

/** A source's relay events carry the source's name. */
export type RelayGroupEvents = { [K in keyof RelayEvents]: RelayEvents[K] & { source: string } };

/** Every relay event, so that the group can forward each (the compiler checks the list is whole). */
const RELAY_EVENTS: { [K in keyof RelayEvents]: true } = {
  'relay:started': true,
  'relay:stopped': true,
  'relay:batch:claimed': true,
  'relay:claim:empty': true,
  'relay:batch:settled': true,
  'relay:message:retry': true,
  'relay:message:dead': true,
  'relay:transport:unavailable': true,
  'relay:transport:available': true,
  'relay:transport:probe-failed': true,
  'relay:acks:swept': true,
  'relay:wakeup': true,
  'relay:error': true,
};

/** Where one source stands, from {@link RelayGroup.status}. */
export interface RelayGroupSourceStatus {
  name: string;
  /**
   * `starting`: first start under way; `running`; `retrying`: its start failed (database down,
   * schema missing) and is tried again with backoff; `stopped`.
   */
  state: 'starting' | 'running' | 'retrying' | 'stopped';
  /** False while this source's relay sees the shared transport as unavailable. */
  transportAvailable: boolean;
  /** Batches between claim and settle now. */
  inFlightBatches: number;
  /** Messages delivered since the group started. */
  delivered: number;
  /** When the last message was delivered, or null. */
  lastDeliveredAt: Date | null;
  /** The last error (start, claim, publish, settle…), or null. Kept after recovery, with its time. */
  lastError: { phase: RelayEvents['relay:error']['phase']; message: string; at: Date } | null;
  /** The source's share of the batch budget ({@link RelayGroupOptions.maxInFlightBatches}). */
  budget: BudgetUsage;
}

/** One source's backlog, from {@link RelayGroup.backlog}. */
export interface RelayGroupSourceBacklog {
  name: string;
  /** The store's counts, or null when the store did not answer (then `error` says why). */
  stats: OutboxStats | null;
  error?: string;
}

interface SourceState {
  name: string;
  store: OutboxStore;
  /** The relay options of this source, with the wrapped store. */
  options: RelayOptions;
  relay: Relay;
  state: RelayGroupSourceStatus['state'];
  delivered: number;
  lastDeliveredAt: Date | null;
  lastError: RelayGroupSourceStatus['lastError'];
  /** Lease tokens of claims that hold a budget slot, until their settle. */
  held: Set<string>;
  /** The event subscriptions of the current relay. */
  unsubscribe: Array<() => void>;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The store a source's relay sees: the source's store, with claims taking a slot of the group's
 * budget first and settles giving it back. Everything else goes to the store unchanged (bound
 * to it, so stores with private fields work).
 */
function budgetedStore(
  name: string,
  store: OutboxStore,
  held: Set<string>,
  budget: BatchBudget,
): OutboxStore {
  const claim = async (request: ClaimRequest): Promise<ClaimedBatch> => {
    if (!(await budget.acquire(name))) return { leaseToken: '', messages: [] };
    let batch: ClaimedBatch;
    try {
      batch = await store.claim(request);
    } catch (err) {
      budget.release(name);
      throw err;
    }
    if (batch.messages.length === 0) budget.release(name);
    else held.add(batch.leaseToken);
    return batch;
  };
  const settle = async (settlement: Settlement): Promise<void> => {
    try {
      await store.settle(settlement);
    } finally {
      // The batch's publish is over: its slot goes back at the first settle attempt (the relay
      // retries a failed settle while it holds the lease, without holding up other sources).
      if (held.delete(settlement.leaseToken)) budget.release(name);
    }
  };
  return new Proxy(store, {
    get(target, prop) {
      if (prop === 'claim') return claim;
      if (prop === 'settle') return settle;
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** A logger that adds `source` to every line. */
function sourceLogger(logger: Logger, source: string): Logger {
  return {
    debug: (m, f) => logger.debug(m, { source, ...f }),
    info: (m, f) => logger.info(m, { source, ...f }),
    warn: (m, f) => logger.warn(m, { source, ...f }),
    error: (m, f) => logger.error(m, { source, ...f }),
  };
}

/**
 * Relays from several databases or schemas to one transport: one {@link Relay} (one claim loop)
 * per source, all publishing through the same transport connection, sharing a budget of batches
 * in flight handed out round-robin, so a tenant with a backlog of millions does not delay a
 * quiet tenant's message by more than a batch or so per busy tenant.
 *
 * A source whose database is down does not hold up the others: its claims fail and back off on
 * their own; a source that cannot start (database unreachable, schema not migrated yet) is
 * started again with backoff (`probeMinDelayMs` doubling up to `probeMaxDelayMs`) while the others
 * run. `start()` fails only when no source could start.
 *
 * The group starts the transport and never closes it (nor the stores): the caller does, after
 * `stop()`.
 *
 * @example
 * ```ts
 * const group = new RelayGroup({
 *   transport,
 *   sources: [
 *     { name: 'tenant_a', store: storeA },
 *     { name: 'tenant_b', store: storeB, batchSize: 50 },
 *   ],
 * });
 * group.on('relay:message:dead', ({ source, message }) => log(source, message.id));
 * await group.start();
 * // … on shutdown:
 * await group.stop();
 * ```
 */
export class RelayGroup extends TypedEmitter<RelayGroupEvents> {
  /** Batches in flight across all sources at once (see {@link RelayGroupOptions.maxInFlightBatches}). */
  readonly maxInFlightBatches: number;
  readonly #transport: Transport;
  readonly #clock: Clock;
  readonly #budget: BatchBudget;
  readonly #sources: SourceState[];
  readonly #forwarded = new Set<keyof RelayEvents>();
  readonly #probeMinDelayMs: number;
  readonly #probeMaxDelayMs: number;
  readonly #abort = new AbortController();
  readonly #signal: AbortSignal | undefined;
  readonly #onAbort = () => void this.stop();
  readonly #observer: RelayGroupObserver | undefined;
  #unobserve: (() => void) | undefined;
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  readonly #retries = new Set<Promise<void>>();

  constructor(options: RelayGroupOptions) {
    const logger = options.logger ?? silentLogger;
    super(logger);
    const { sources, transport, maxInFlightBatches, owner, signal, metrics, ...shared } = options;
    this.#observer = metrics;
    if (!Array.isArray(sources) || sources.length === 0) {
      throw new ConfigError(
        'sources',
        'RelayGroup option sources must list at least one source: [{ name: "tenant_a", store }]',
      );
    }
    const seen = new Set<string>();
    const stores = new Set<OutboxStore>();
    for (const [i, source] of sources.entries()) {
      const name: unknown = (source as { name?: unknown } | null)?.name;
      if (typeof name !== 'string' || !SOURCE_NAME.test(name)) {
        throw new ConfigError(
          'sources',
          `RelayGroup source ${i + 1} has the name ${JSON.stringify(name ?? null)}; a source name is 1 to 63 ` +
            'letters, digits, "_", "." or "-", starting with a letter or digit (it goes into logs and metrics), e.g. "tenant_a"',
          { value: name ?? null, index: i },
        );
      }
      if (seen.has(name)) {
        throw new ConfigError(
          'sources',
          `RelayGroup has two sources named ${JSON.stringify(name)}; give each source a name of its own`,
          { value: name },
        );
      }
      seen.add(name);
      if (stores.has(source.store)) {
        throw new ConfigError(
          'sources',
          `RelayGroup source ${JSON.stringify(name)} has the same store object as an earlier source; ` +
            'two claim loops on one store only compete with each other: list each database or schema once',
          { value: name },
        );
      }
      stores.add(source.store);
    }
    const concurrency = shared.concurrency ?? 4;
    const limit = maxInFlightBatches ?? concurrency + sources.length - 1;
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > 10_000) {
      throw new ConfigError(
        'maxInFlightBatches',
        `RelayGroup option maxInFlightBatches must be a whole number from 1 to 10000, got ${JSON.stringify(limit)}`,
        { value: limit },
      );
    }
    this.maxInFlightBatches = limit;
    this.#transport = transport;
    this.#clock = shared.clock ?? systemClock;
    this.#signal = signal;
    this.#budget = new BatchBudget(
      limit,
      this.#clock,
      sources.map((s) => s.name),
    );
    const prefix = owner ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
    this.#sources = sources.map(({ name, store, ...own }): SourceState => {
      const held = new Set<string>();
      const relayOptions: RelayOptions = {
        ...shared,
        ...own,
        owner: own.owner ?? `${prefix}:${name}`,
        transport,
        store: budgetedStore(name, store, held, this.#budget),
        logger: sourceLogger(logger, name),
      };
      return {
        name,
        store,
        options: relayOptions,
        // Every source's options are checked now: a bad one fails the constructor, not a retry later.
        relay: new Relay(relayOptions),
        state: 'stopped',
        delivered: 0,
        lastDeliveredAt: null,
        lastError: null,
        held,
        unsubscribe: [],
      };
    });
    // The first relay's resolved values: the shared probe delays pace the start retries.
    const resolved = (this.#sources[0] as SourceState).relay.options;
    this.#probeMinDelayMs = resolved.probeMinDelayMs;
    this.#probeMaxDelayMs = resolved.probeMaxDelayMs;
  }

  /** The source names, in the order given. */
  get sourceNames(): string[] {
    return this.#sources.map((s) => s.name);
  }

  /** The store of a source, as given in its options (for metrics and status). */
  store(name: string): OutboxStore {
    const state = this.#sources.find((s) => s.name === name);
    if (!state) {
      throw new ConfigError(
        'source',
        `RelayGroup has no source ${JSON.stringify(name)}; it has ${this.sourceNames.join(', ')}`,
      );
    }
    return state.store;
  }

  /** The relay of a source now (a new one after each failed start), for its own events and state. */
  relay(name: string): Relay {
    const state = this.#sources.find((s) => s.name === name);
    if (!state) {
      throw new ConfigError(
        'source',
        `RelayGroup has no source ${JSON.stringify(name)}; it has ${this.sourceNames.join(', ')}`,
      );
    }
    return state.relay;
  }

  override on<K extends keyof RelayGroupEvents>(
    event: K,
    listener: (payload: RelayGroupEvents[K]) => void,
  ): () => void {
    if (!this.#forwarded.has(event)) {
      this.#forwarded.add(event);
      for (const state of this.#sources) this.#forward(state, event);
    }
    return super.on(event, listener);
  }

  /**
   * Starts the transport, then every source's relay at once. Resolves when each source started
   * or failed its first start; those that failed are started again with backoff in the
   * background (`relay:error` with phase `start` and the source's name, each time). Throws a
   * {@link RelayStateError} (`no_source_started`) naming each source's error when none started;
   * nothing runs then. Idempotent.
   */
  start(): Promise<void> {
    if (this.#stopping) {
      return Promise.reject(
        new RelayStateError(
          'stopped',
          'this relay group was stopped; create a new RelayGroup to start again',
        ),
      );
    }
    this.#starting ??= this.#start().catch((err: unknown) => {
      this.#detachObserver();
      // The transport did not start: nothing runs, and start() may be called again (as a
      // Relay's may). No source could start: the group is stopped for good.
      if (!this.#stopping) {
        this.#signal?.removeEventListener('abort', this.#onAbort);
        this.#starting = undefined;
      }
      throw err;
    });
    return this.#starting;
  }

  async #start(): Promise<void> {
    this.#signal?.addEventListener('abort', this.#onAbort, { once: true });
    // The observer sees the sources start (relay:started, a failed start's relay:error).
    this.#unobserve ??= this.#observer?.observe(this);
    await this.#transport.start();
    const results = await Promise.all(this.#sources.map((state) => this.#startOne(state)));
    if (this.#abort.signal.aborted) return;
    if (!results.some((ok) => ok)) {
      const errors = this.#sources.map((s) => `${s.name}: ${s.lastError?.message ?? 'did not start'}`);
      // Nothing runs (each failed relay was stopped): the group ends here, stopped.
      this.#signal?.removeEventListener('abort', this.#onAbort);
      this.#abort.abort();
      this.#budget.close();
      this.#stopping = Promise.resolve();
      for (const state of this.#sources) state.state = 'stopped';
      throw new RelayStateError(
        'no_source_started',
        `no source of the relay group could start (${errors.join('; ')}); check each database URL and run migrate for each schema`,
        { details: { sources: this.sourceNames } },
      );
    }
    this.#sources.forEach((state, i) => {
      if (results[i]) return;
      const retry = this.#retry(state).finally(() => this.#retries.delete(retry));
      this.#retries.add(retry);
    });
    if (this.#signal?.aborted) void this.stop();
  }

  /** One start attempt of a source's relay; on failure a fresh relay is made for the next one. */
  async #startOne(state: SourceState): Promise<boolean> {
    state.state = state.state === 'retrying' ? 'retrying' : 'starting';
    this.#attach(state);
    try {
      await state.relay.start();
      if (this.#abort.signal.aborted) {
        await state.relay.stop();
        return true;
      }
      state.state = 'running';
      return true;
    } catch (err) {
      state.lastError = { phase: 'start', message: errorText(err), at: new Date(this.#clock.now()) };
      this.logger.warn('relay group: a source did not start', {
        event: 'source_start_failed',
        source: state.name,
        error: err,
      });
      this.#emitFrom(state, 'relay:error', { phase: 'start', error: err });
      const failed = state.relay;
      await failed.stop().catch(() => undefined);
      this.#detach(state);
      state.state = 'retrying';
      // A relay whose start failed half-way cannot start again: the next attempt gets a new one.
      state.relay = new Relay(state.options);
      return false;
    }
  }

  async #retry(state: SourceState): Promise<void> {
    let delay = this.#probeMinDelayMs;
    const signal = this.#abort.signal;
    while (!signal.aborted) {
      const slept = await this.#clock.sleep(Math.round(delay * (0.5 + Math.random() * 0.5)), signal);
      if (!slept || signal.aborted) return;
      if (await this.#startOne(state)) {
        this.logger.info('relay group: source started after retrying', {
          event: 'source_started',
          source: state.name,
        });
        return;
      }
      delay = Math.min(this.#probeMaxDelayMs, delay * 2);
    }
  }

  /**
   * Wakes the relay of one source, or of every source, to look for work now: what a store
   * without NOTIFY needs after a commit in this process (see `Relay.wake`).
   */
  wake(source?: string): void {
    if (source === undefined) for (const state of this.#sources) state.relay.wake();
    else this.relay(source).wake();
  }

  /**
   * Stops every source's relay at once (each drains its batches within `shutdownTimeoutMs`) and
   * the start retries. Idempotent. Does not close the transport or the stores.
   */
  stop(): Promise<void> {
    this.#stopping ??= this.#shutdown();
    return this.#stopping;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  async #shutdown(): Promise<void> {
    this.#signal?.removeEventListener('abort', this.#onAbort);
    this.#abort.abort();
    // A start under way finishes first, so that each relay it started is stopped below.
    await this.#starting?.catch(() => undefined);
    await Promise.allSettled([...this.#retries]);
    const stopping = this.#sources.map((s) => s.relay.stop());
    // Claims waiting for a slot end now, with nothing claimed, so each loop sees its stop.
    this.#budget.close();
    await Promise.allSettled(stopping);
    for (const state of this.#sources) {
      state.state = 'stopped';
      this.#detach(state);
    }
    this.#detachObserver();
  }

  #detachObserver(): void {
    const unobserve = this.#unobserve;
    this.#unobserve = undefined;
    detachObserver(unobserve, this.logger);
  }

  /** Each source's state, cheaply (no database call): for health checks and metrics. */
  status(): RelayGroupSourceStatus[] {
    return this.#sources.map((s) => ({
      name: s.name,
      state: s.state,
      transportAvailable: s.relay.transportAvailable,
      inFlightBatches: s.relay.inFlightBatches,
      delivered: s.delivered,
      lastDeliveredAt: s.lastDeliveredAt,
      lastError: s.lastError,
      budget: this.#budget.usage(s.name),
    }));
  }

  /**
   * Each source's counts from its store (`store.stats()`: exact on small tables, estimates on big
   * ones), asked of all sources at once. A store that fails or takes longer than `timeoutMs`
   * gives null and its error, without holding up the others.
   */
  async backlog(timeoutMs = 5000): Promise<RelayGroupSourceBacklog[]> {
    return Promise.all(
      this.#sources.map(async (s): Promise<RelayGroupSourceBacklog> => {
        const timer = new AbortController();
        try {
          const stats = await Promise.race([
            s.store.stats(),
            this.#clock.sleep(timeoutMs, timer.signal).then(() => {
              throw new Error(`no answer within ${timeoutMs} ms`);
            }),
          ]);
          return { name: s.name, stats };
        } catch (err) {
          return { name: s.name, stats: null, error: errorText(err) };
        } finally {
          timer.abort();
        }
      }),
    );
  }

  /** Subscribes the group to the events of a source's current relay that it needs or forwards. */
  #attach(state: SourceState): void {
    this.#detach(state);
    const relay = state.relay;
    state.unsubscribe.push(
      relay.on('relay:batch:settled', ({ delivered }) => {
        if (delivered === 0) return;
        state.delivered += delivered;
        state.lastDeliveredAt = new Date(this.#clock.now());
      }),
      relay.on('relay:error', ({ phase, error }) => {
        state.lastError = { phase, message: errorText(error), at: new Date(this.#clock.now()) };
      }),
    );
    for (const event of this.#forwarded) this.#forward(state, event);
  }

  #detach(state: SourceState): void {
    for (const off of state.unsubscribe.splice(0)) off();
  }

  #forward<K extends keyof RelayEvents>(state: SourceState, event: K): void {
    if (!(event in RELAY_EVENTS)) return;
    const relay = state.relay;
    state.unsubscribe.push(relay.on(event, (payload) => this.#emitFrom(state, event, payload)));
  }

  #emitFrom<K extends keyof RelayEvents>(state: SourceState, event: K, payload: RelayEvents[K]): void {
    this.emit(event, { ...payload, source: state.name } as RelayGroupEvents[K]);
  }
}
