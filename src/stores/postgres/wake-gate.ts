import { StoreError } from '../../core/errors/store-error.js';
import type { WakeGate } from '../../core/ports.js';
import type { PgPool, PgPoolClient } from './postgres-driver.js';

/** How long `disarm` waits for the unlock before it ends the session instead. */
const DISARM_TIMEOUT_MS = 5000;
/** How long an aborted `arm` waits for the server to cancel its lock wait before it drops the connection. */
const CANCEL_WAIT_MS = 1000;

/** The statements of the gate (`postgresSql().wakeGate`). */
export interface WakeGateSql {
  arm: string;
  disarm: string;
}

/**
 * The PostgreSQL wake gate (see `postgresSql().wakeGate` and docs/design.md, "Wake-ups"): a
 * session advisory lock taken on a connection checked out for as long as the gate is held. Not
 * the LISTEN connection: a backend waiting for a lock reads no notifications. The connection
 * goes back to the pool at `disarm`, so a busy relay holds no connection for it.
 */
export class PostgresWakeGate implements WakeGate {
  readonly #pool: PgPool;
  readonly #sql: WakeGateSql;
  readonly #wrap: (err: unknown, phase: 'connect' | 'statement') => unknown;
  /** The connection holding the lock. */
  #held: Checkout | undefined;
  /** Ends an arm under way (disarm while arming). */
  #arming: AbortController | undefined;

  constructor(
    pool: PgPool,
    sql: WakeGateSql,
    wrap: (err: unknown, phase: 'connect' | 'statement') => unknown,
  ) {
    this.#pool = pool;
    this.#sql = sql;
    this.#wrap = wrap;
  }

  async arm({ signal, onLost }: { signal: AbortSignal; onLost: (err: unknown) => void }): Promise<void> {
    if (this.#held || this.#arming) {
      throw new StoreError(
        'wake_gate_busy',
        'wake gate: arm() was called while this gate is held or being taken; call disarm() first, or ' +
          'take one gate per relay (store.wakeGate())',
      );
    }
    signal.throwIfAborted();
    const arming = new AbortController();
    this.#arming = arming;
    const abort = () => arming.abort(signal.reason);
    signal.addEventListener('abort', abort, { once: true });
    let checkout: Checkout | undefined;
    // The cancel request of an aborted arm: awaited before arm() settles, so no statement of
    // this gate is still using a pool connection once the relay's stop() has returned.
    let cancelling: Promise<void> | undefined;
    try {
      let client: PgPoolClient;
      try {
        client = await this.#pool.connect();
      } catch (err) {
        throw this.#wrap(err, 'connect');
      }
      const co = new Checkout(client, (err) => {
        // While held: the session is gone and so is its lock. While arming, the query fails.
        if (this.#held === co) {
          this.#held = undefined;
          co.drop(err);
          onLost(err);
        }
      });
      checkout = co;
      if (arming.signal.aborted) throw arming.signal.reason;
      // A backend waiting for a lock does not notice its client going away, so ending the
      // session alone would leave the request queued (and writers notifying) until it is
      // granted. On abort: ask the server to cancel the wait, then drop the connection, which
      // ends the query; after CANCEL_WAIT_MS without an answer, drop it anyway.
      const onAbort = () => {
        const drop = () =>
          co.drop(
            new StoreError('wake_gate_aborted', 'wake gate: arm() was aborted (the relay is stopping)'),
          );
        const pid = (client as { processID?: unknown }).processID;
        if (typeof pid !== 'number') return drop();
        const timer = setTimeout(drop, CANCEL_WAIT_MS);
        cancelling = this.#pool
          .query('SELECT pg_cancel_backend($1)', [pid])
          .then(
            () => undefined,
            () => undefined,
          )
          .finally(() => {
            clearTimeout(timer);
            drop();
          });
      };
      arming.signal.addEventListener('abort', onAbort, { once: true });
      try {
        await co.client.query(this.#sql.arm);
      } catch (err) {
        throw arming.signal.aborted ? arming.signal.reason : this.#wrap(err, 'statement');
      } finally {
        arming.signal.removeEventListener('abort', onAbort);
      }
      if (arming.signal.aborted) throw arming.signal.reason;
      if (co.lost !== undefined) throw this.#wrap(co.lost, 'statement');
      this.#held = co;
      checkout = undefined;
    } catch (err) {
      // Whatever happened, a session that may hold or wait for the lock does not go back to the
      // pool: ending it gives the lock up.
      checkout?.drop(err);
      await cancelling;
      throw err;
    } finally {
      signal.removeEventListener('abort', abort);
      if (this.#arming === arming) this.#arming = undefined;
    }
  }

  async disarm(): Promise<void> {
    this.#arming?.abort(
      new StoreError(
        'wake_gate_aborted',
        'wake gate: disarm() was called while arm() was waiting for the lock',
      ),
    );
    const co = this.#held;
    if (!co) return;
    this.#held = undefined;
    // A server that does not answer must not hold the relay's stop(): past the deadline the
    // session is ended instead, which gives the lock up as well.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new StoreError(
              'wake_gate_timeout',
              `wake gate: no answer to the unlock within ${DISARM_TIMEOUT_MS} ms; the session is ended instead`,
            ),
          ),
        DISARM_TIMEOUT_MS,
      );
    });
    try {
      const res = await Promise.race([co.client.query(this.#sql.disarm), deadline]);
      // Not held: the session is not what we think it is; ending it is the safe way back.
      if (res.rows[0]?.released !== true)
        throw new StoreError('wake_gate_lost', 'wake gate: the lock was not held');
      co.giveBack();
    } catch (err) {
      co.drop(err);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** One checkout of a pool client for the gate: watched for a lost connection, released once. */
class Checkout {
  readonly client: PgPoolClient;
  /** Set when the connection broke. */
  lost: unknown;
  #done = false;
  readonly #onError: (err: unknown) => void;
  readonly #onEnd: () => void;

  constructor(client: PgPoolClient, onLost: (err: unknown) => void) {
    this.client = client;
    this.#onError = (err) => {
      if (this.lost !== undefined || this.#done) return;
      this.lost = err ?? new StoreError('connection_lost', 'wake gate: the connection ended');
      onLost(this.lost);
    };
    this.#onEnd = () => this.#onError(new StoreError('connection_lost', 'wake gate: the connection ended'));
    client.on('error', this.#onError);
    client.on('end', this.#onEnd);
  }

  /** Back to the pool (the lock is not held). */
  giveBack(): void {
    if (this.#finish()) this.client.release();
  }

  /** Ends the session, and with it any lock it holds or waits for. */
  drop(reason: unknown): void {
    if (this.#finish()) this.client.release(reason instanceof Error ? reason : new Error(String(reason)));
  }

  #finish(): boolean {
    if (this.#done) return false;
    this.#done = true;
    this.client.removeListener('error', this.#onError);
    this.client.removeListener('end', this.#onEnd);
    return true;
  }
}
