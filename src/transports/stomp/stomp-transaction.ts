/**
 * A STOMP broker transaction: BEGIN, SENDs carrying `transaction:<id>`, then COMMIT or ABORT,
 * each of those two with a receipt, on a connection the transaction has to itself.
 *
 * @module
 */
import { newTransactionId, toOutboxMessages, type BrokerTransaction } from '../../core/broker-transaction.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { MessageInput, OutboxMessage } from '../../core/types.js';
import { CLOSE_HANDSHAKE_MS, type Request, type StompConnection } from './stomp-connection.js';
import {
  commitRefusedError,
  commitUnknownError,
  connectionLostError,
  isStompRefusal,
  messageTooLargeError,
  transactionClosedError,
} from './stomp-errors.js';
import { destinationFor, type ResolvedStompTransportOptions } from './stomp-options.js';
import { settledBefore } from './stomp-publish.js';
import { sendHeaders } from './stomp-wire.js';

type State = 'open' | 'committing' | 'committed' | 'rolled back' | 'failed';

/**
 * One transaction on its own connection. `release` gets the connection back once the transaction
 * is over, healthy or not (the session decides whether to keep it).
 */
export class StompBrokerTransaction implements BrokerTransaction {
  /** The transaction's id on the wire (`transaction` header). */
  readonly id: string;
  readonly #connection: StompConnection;
  readonly #options: Readonly<ResolvedStompTransportOptions>;
  readonly #signal: AbortSignal | undefined;
  readonly #release: (connection: StompConnection) => void;
  #state: State = 'open';
  /** The transaction's SENDs, whose RECEIPTs commit() waits for. */
  readonly #sends: Request[] = [];
  /** The failure that made the transaction unusable, rethrown by later calls. */
  #failure: Error | undefined;

  private constructor(
    connection: StompConnection,
    options: Readonly<ResolvedStompTransportOptions>,
    signal: AbortSignal | undefined,
    release: (connection: StompConnection) => void,
  ) {
    this.id = newTransactionId();
    this.#connection = connection;
    this.#options = options;
    this.#signal = signal;
    this.#release = release;
  }

  /**
   * Sends BEGIN on `connection`. No receipt is asked for: the COMMIT's receipt answers for every
   * frame before it (a broker processes a connection's frames in order), and an ERROR in between
   * ends the connection, which COMMIT then reports.
   */
  static async begin(
    connection: StompConnection,
    options: Readonly<ResolvedStompTransportOptions>,
    signal: AbortSignal | undefined,
    release: (connection: StompConnection) => void,
  ): Promise<StompBrokerTransaction> {
    const tx = new StompBrokerTransaction(connection, options, signal, release);
    try {
      await connection.send('BEGIN', [['transaction', tx.id]]);
    } catch (err) {
      tx.#state = 'failed';
      release(connection);
      throw lostError(options, err);
    }
    return tx;
  }

  async publish(messages: ReadonlyArray<OutboxMessage | MessageInput>): Promise<void> {
    this.#ensureOpen('publish');
    // Invalid input and messages the transport refuses throw before anything is sent.
    const list = toOutboxMessages(messages);
    const frames = list.map((message) => {
      if (message.payload.length > this.#options.maxMessageBytes) {
        throw messageTooLargeError(message, this.#options.maxMessageBytes);
      }
      const destination = destinationFor(this.#options.destination, message.topic);
      const headers = [
        ...sendHeaders(message, destination, this.#options.persistent),
        ['transaction', this.id] as const,
      ];
      return { headers, body: message.payload };
    });
    try {
      for (const frame of frames) {
        // With a receipt: RabbitMQ answers it only once the message, published at COMMIT, is
        // confirmed (durable), so commit() waits for these as well as for the COMMIT's.
        const request = this.#connection.request('SEND', frame.headers, frame.body);
        this.#sends.push(request);
        await request.written;
      }
    } catch (err) {
      this.#fail(lostError(this.#options, err));
      throw this.#failure;
    }
  }

  async commit(): Promise<void> {
    this.#ensureOpen('commit');
    this.#state = 'committing';
    const connection = this.#connection;
    const request = connection.request('COMMIT', [['transaction', this.id]]);
    try {
      await request.written;
    } catch (err) {
      // COMMIT never reached the socket: the broker rolls the transaction back with the connection.
      this.#fail(lostError(this.#options, err));
      throw this.#failure;
    }
    const deadline = new AbortController();
    const timer = setTimeout(
      () =>
        deadline.abort(
          new Error(`no RECEIPT for COMMIT within ${this.#options.receiptTimeoutMs} ms (receiptTimeoutMs)`),
        ),
      this.#options.receiptTimeoutMs,
    );
    const stop = AbortSignal.any([deadline.signal, ...(this.#signal ? [this.#signal] : [])]);
    const answered = await settledBefore(
      Promise.all([request.answered, ...this.#sends.map((r) => r.answered)]),
      stop,
    );
    clearTimeout(timer);
    if (answered) {
      const results = await Promise.allSettled([request.answered, ...this.#sends.map((r) => r.answered)]);
      const failures = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
      if (failures.length === 0) {
        this.#state = 'committed';
        this.#release(connection);
        return;
      }
      const refusal = failures.find(isStompRefusal);
      // A refusal is about what the transaction holds (a destination the broker will not take):
      // tried again with backoff, not waited out as an outage. RabbitMQ may have published the
      // part of the transaction before the refused frame: a retry sends those again, with the
      // same mailroom-id.
      this.#fail(
        refusal
          ? commitRefusedError(this.#options.endpoint.safeUrl, this.id, refusal)
          : commitUnknownError(this.#options.endpoint.safeUrl, this.id, asError(failures[0])),
      );
      throw this.#failure;
    }
    // The deadline or the caller ended the wait: the outcome is unknown, and the connection goes.
    const reason = asError(stop.reason);
    this.#fail(commitUnknownError(this.#options.endpoint.safeUrl, this.id, reason));
    connection.destroy(this.#failure as Error);
    throw this.#failure;
  }

  async rollback(): Promise<void> {
    if (this.#state !== 'open') return;
    this.#state = 'rolled back';
    const connection = this.#connection;
    if (!connection.open) {
      // A broker rolls back the transactions of a connection that ends.
      this.#release(connection);
      return;
    }
    const { answered } = connection.request('ABORT', [['transaction', this.id]]);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const ok = await Promise.race([
      answered.then(
        () => true,
        () => false,
      ),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), CLOSE_HANDSHAKE_MS))),
    ]);
    clearTimeout(timer);
    // Without the ABORT's receipt the connection's state is unknown: ending it aborts the
    // transaction. With it, the SENDs' RECEIPTs still missing will never come (RabbitMQ answers
    // a transaction's SENDs only when it publishes them at COMMIT).
    if (ok) for (const send of this.#sends) send.cancel();
    else connection.destroy(connectionLostError(this.#options.endpoint.safeUrl, 'ABORT was not answered'));
    this.#release(connection);
  }

  #ensureOpen(what: string): void {
    if (this.#state === 'failed' && this.#failure) throw this.#failure;
    if (this.#state !== 'open') throw transactionClosedError(what, this.#state);
  }

  #fail(error: Error): void {
    this.#state = 'failed';
    this.#failure = error;
    this.#release(this.#connection);
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

function lostError(options: Readonly<ResolvedStompTransportOptions>, err: unknown): TransportError {
  if (err instanceof TransportError) return err;
  return connectionLostError(options.endpoint.safeUrl, asError(err).message, err);
}
