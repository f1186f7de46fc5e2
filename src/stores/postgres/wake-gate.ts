import { StoreError } from '../../core/errors/store-error.js';
import type { WakeGate } from '../../core/ports.js';
import type { PgPool, PgPoolClient } from './postgres-driver.js';

/** How long `disarm` waits for the unlock before it ends the session instead. */
const DISARM_TIMEOUT_MS = 5000;
/** How long an aborted `arm` waits for the server to cancel its lock wait before it drops the connection. */
const CANCEL_WAIT_MS = 1000;
/** How often an aborted `arm` asks the server again to cancel its lock wait. */
const CANCEL_RETRY_MS = 50;

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
      // granted. On abort: ask the server to cancel the wait, again every CANCEL_RETRY_MS (a
      // cancel that lands before the backend has started the statement is ignored), until the
      // statement ends; only that answer proves the wait is gone. After CANCEL_WAIT_MS without
      // one, drop the connection anyway.
      const query = co.client.query(this.#sql.arm);
      let settled = false;
      const ended = query.then(
        () => {
          settled = true;
        },
        () => {
          settled = true;
        },
      );
      const onAbort = () => {
        const pid = (client as { processID?: unknown }).processID;
        if (typeof pid !== 'number') {
          co.drop(
            new StoreError('wake_gate_aborted', 'wake gate: arm() was aborted (the relay is stopping)'),
          );
          return;
        }
        cancelling = this.#cancel(pid, ended, () => settled).then((answered) => {
          if (!answered)
            co.drop(
              new StoreError(
                'wake_gate_aborted',
                `wake gate: arm() was aborted and the server did not cancel the lock wait within ${CANCEL_WAIT_MS} ms`,
              ),
            );
        });
      };
      arming.signal.addEventListener('abort', onAbort, { once: true });
      try {
        await query;
      } catch (err) {
        throw arming.signal.aborted ? arming.signal.reason : this.#wrap(err, 'statement');
      } finally {
        arming.signal.removeEventListener('abort', onAbort);
      }
      if (arming.signal.aborted) {
        // The lock came before the cancel: give it back on this session, so it is free when
        // arm() settles (ending the session frees it too, but only once the server notices).
        await cancelling;
        if (co.lost === undefined) {
          try {
            await co.client.query(this.#sql.disarm);
            co.giveBack();
          } catch {
            // The catch below ends the session.
          }
        }
        throw arming.signal.reason;
      }
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

  /**
   * Asks the server to cancel backend `pid`'s statement until `ended` settles or CANCEL_WAIT_MS
   * pass. True when the statement ended in time and no cancel request is still on its way (a
   * late one could hit the next statement of that session, or of whoever uses it next).
   */
  async #cancel(pid: number, ended: Promise<void>, isSettled: () => boolean): Promise<boolean> {
    const deadline = Date.now() + CANCEL_WAIT_MS;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), CANCEL_WAIT_MS);
    });
    try {
      while (!isSettled() && Date.now() < deadline) {
        const cancel = this.#pool.query('SELECT pg_cancel_backend($1)', [pid]).then(
          () => 'done' as const,
          () => 'done' as const,
        );
        // The cancel's own query may wait for a pool connection or a server that does not answer.
        if ((await Promise.race([cancel, late])) === 'late') return false;
        if (isSettled()) break;
        let retry: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          ended,
          late,
          new Promise<void>((resolve) => (retry = setTimeout(resolve, CANCEL_RETRY_MS))),
        ]);
        clearTimeout(retry);
      }
      return isSettled();
    } finally {
      clearTimeout(timer);
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
