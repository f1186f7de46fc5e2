import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { OutboxStore, RelayPresenceRecord, RelayState } from './ports.js';
import type { RelayEvents } from './relay-events.js';

/** How often a relay heartbeats its presence row by default. */
export const DEFAULT_PRESENCE_INTERVAL_MS = 10_000;

/** What {@link RelayPresence.attach} listens to: a `Relay` (or anything with its events). */
export interface RelayEventSource {
  on<K extends keyof RelayEvents>(event: K, listener: (payload: RelayEvents[K]) => void): () => void;
}

/** Options of {@link RelayPresence}. */
export interface RelayPresenceOptions {
  /** The relay's store; a store without `recordRelay` makes the presence do nothing. */
  store: OutboxStore;
  /** The transport's name, recorded for operators (`rabbitmq`, `kafka`…). */
  transport: string;
  /**
   * Milliseconds between heartbeats. The relay counts as alive while its last heartbeat is
   * within three of these.
   *
   * @default 10000
   */
  intervalMs?: number;
  /**
   * Called with every failed write of the presence row (the relay emits it as a `relay:error`).
   * A failed write is retried at the next heartbeat; it never stops the relay.
   */
  onError: (error: unknown) => void;
  /** @default os.hostname() */
  host?: string;
  /** @default process.pid */
  pid?: number;
  /** @default the version in Mailroom's package.json */
  version?: string;
}

let packageVersion: string | undefined;

/** Mailroom's version, from its package.json (read once). */
export function mailroomVersion(): string {
  if (packageVersion === undefined) {
    try {
      const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
        version?: unknown;
      };
      packageVersion = typeof pkg.version === 'string' ? pkg.version : 'unknown';
    } catch {
      packageVersion = 'unknown';
    }
  }
  return packageVersion;
}

/**
 * Keeps a relay's row in the store's presence table (`OutboxStore.recordRelay`, schema version
 * 13 on PostgreSQL): records it when the relay starts, heartbeats it every `intervalMs` on an
 * unref'd timer, records the state when the transport goes down (`unavailable`) or comes back
 * (`running`) and when the relay begins to stop (`stopping`), and deletes it once stopped.
 * Writes run one at a time, in order; failures go to `onError` and are never thrown.
 *
 * A relay killed without a stop leaves its row behind; `listRelays` shows it with `alive: false`
 * after three intervals, and a heartbeat of any relay deletes rows dead for over a day.
 *
 * @example
 * ```ts
 * const presence = new RelayPresence({ store, transport: transport.name, onError: console.error });
 * presence.attach(relay); // records on relay:started, removes on relay:stopped
 * ```
 */
export class RelayPresence {
  readonly intervalMs: number;
  readonly #store: OutboxStore;
  readonly #onError: (error: unknown) => void;
  readonly #base: Omit<RelayPresenceRecord, 'owner' | 'wakeup' | 'state'>;
  #owner: string | undefined;
  #wakeup: RelayPresenceRecord['wakeup'] = 'poll';
  #state: RelayState = 'running';
  #timer: ReturnType<typeof setInterval> | undefined;
  /** The writes in order: each waits for the one before. */
  #chain: Promise<void> = Promise.resolve();
  /** A heartbeat is queued or running: the timer skips its turn instead of piling up writes. */
  #beating = false;
  #stopped = false;

  constructor(options: RelayPresenceOptions) {
    this.#store = options.store;
    this.#onError = options.onError;
    const interval = options.intervalMs ?? DEFAULT_PRESENCE_INTERVAL_MS;
    if (!Number.isFinite(interval) || interval < 1) {
      throw new RangeError(
        `RelayPresence option intervalMs must be a positive number of milliseconds, got ${String(interval)}`,
      );
    }
    this.intervalMs = Math.round(interval);
    this.#base = {
      host: options.host ?? hostname(),
      pid: options.pid ?? process.pid,
      version: options.version ?? mailroomVersion(),
      transport: options.transport,
      heartbeatIntervalMs: this.intervalMs,
    };
  }

  /** True when the store keeps presence rows (has `recordRelay`). */
  get supported(): boolean {
    return typeof this.#store.recordRelay === 'function';
  }

  /** The state last recorded (or about to be). */
  get state(): RelayState {
    return this.#state;
  }

  /**
   * Follows a relay's events: `relay:started` records the row and starts the heartbeat,
   * `relay:transport:unavailable`/`available` record the state, `relay:stopped` removes the row.
   * Returns a function that stops listening.
   */
  attach(relay: RelayEventSource): () => void {
    const offs = [
      relay.on('relay:started', ({ owner, wakeup }) => this.start(owner, wakeup)),
      relay.on('relay:transport:unavailable', () => this.setState('unavailable')),
      relay.on('relay:transport:available', () => this.setState('running')),
      relay.on('relay:stopped', () => void this.stop()),
    ];
    return () => {
      for (const off of offs) off();
    };
  }

  /** Records the row (state `running`) and starts heartbeating. Idempotent for the same owner. */
  start(owner: string, wakeup: RelayPresenceRecord['wakeup']): void {
    if (!this.supported || this.#stopped) return;
    this.#owner = owner;
    this.#wakeup = wakeup;
    this.#enqueue(() => this.#record());
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => this.heartbeat(), this.intervalMs);
      this.#timer.unref();
    }
  }

  /** Records a new state at once (the heartbeats carry it from then on). */
  setState(state: RelayState): void {
    if (this.#state === state) return;
    this.#state = state;
    if (this.#owner === undefined || this.#stopped) return;
    this.#enqueue(() => this.#record());
  }

  /** Records `stopping`: the relay drains its batches and will remove the row when stopped. */
  markStopping(): void {
    this.setState('stopping');
  }

  /** Writes a heartbeat now, unless one is already queued. */
  heartbeat(): void {
    if (this.#owner === undefined || this.#stopped || this.#beating) return;
    this.#beating = true;
    this.#enqueue(async () => {
      this.#beating = false;
      await this.#record();
    });
  }

  /**
   * Stops the heartbeat and deletes the row, after any write in progress. Idempotent; resolves
   * when the row is gone (or the delete failed, reported to `onError`).
   */
  stop(): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = true;
      if (this.#timer !== undefined) clearInterval(this.#timer);
      this.#timer = undefined;
      const owner = this.#owner;
      if (owner !== undefined && this.#store.removeRelay) {
        const remove = this.#store.removeRelay.bind(this.#store);
        this.#enqueue(() => remove(owner));
      }
    }
    return this.#chain;
  }

  #record(): Promise<void> {
    const owner = this.#owner;
    const record = this.#store.recordRelay?.bind(this.#store);
    if (owner === undefined || record === undefined) return Promise.resolve();
    return record({ ...this.#base, owner, wakeup: this.#wakeup, state: this.#state });
  }

  #enqueue(write: () => Promise<void>): void {
    this.#chain = this.#chain.then(async () => {
      try {
        await write();
      } catch (err) {
        try {
          this.#onError(err);
        } catch {
          // An error handler that throws must not break the chain of writes.
        }
      }
    });
  }
}
