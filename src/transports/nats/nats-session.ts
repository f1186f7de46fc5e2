/**
 * The publishing connection: opened on demand (one attempt shared by concurrent callers), checked
 * for JetStream, the `ensureStream` stream set up, and forgotten when it ends so that the next
 * publish opens a new one. The client's own reconnect is off: a reconnecting client buffers
 * publishes and sends them after reconnecting, after a part of the batch written before the loss
 * may have been dropped, which would break the order the transport promises; and messages sent
 * while disconnected would wait for their PubAck timeout instead of reporting `unavailable` at once.
 *
 * @module
 */
import { connect as tcpConnect } from 'node:net';

import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';

import {
  closedError,
  connectError,
  ensureStreamError,
  jetStreamDisabledError,
  notNatsError,
} from './nats-errors.js';
import type { ResolvedNatsTransportOptions } from './nats-options.js';

/** One open connection and the JetStream handles on it. */
export interface NatsSession {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  /** The server's `max_payload`: headers and payload of one message together. */
  readonly maxPayload: number;
  /** Aborted when the connection ends (lost or closed), with the reason. */
  readonly ended: AbortSignal;
}

export const noop = (): void => {};

/** Rejects with `error()` when `ms` pass before `promise` settles. */
function withTimeout<T>(promise: Promise<T>, ms: number, error: () => Error): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(error()), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export class NatsSessions {
  readonly #options: Readonly<ResolvedNatsTransportOptions>;
  #current: NatsSession | undefined;
  #opening: Promise<NatsSession> | undefined;
  #closed = false;

  constructor(options: Readonly<ResolvedNatsTransportOptions>) {
    this.#options = options;
  }

  get current(): NatsSession | undefined {
    return this.#current;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The open session, or a new one. Throws a TransportError when the server cannot be used. */
  open(): Promise<NatsSession> {
    if (this.#closed) return Promise.reject(closedError(this.#options.endpoint.safeUrl));
    if (this.#current) return Promise.resolve(this.#current);
    this.#opening ??= this.#connect().finally(() => {
      this.#opening = undefined;
    });
    return this.#opening;
  }

  /** Closes `session`'s connection (a no-op when it is not the current one any more). */
  drop(session: NatsSession): void {
    if (this.#current === session) this.#current = undefined;
    session.nc.close().catch(noop);
  }

  /** Closes the connection after `drain` (waiting for calls in flight). Later opens fail until `reopen`. */
  async close(drain: () => Promise<void>): Promise<void> {
    this.#closed = true;
    await this.#opening?.catch(noop);
    await drain();
    const session = this.#current;
    this.#current = undefined;
    await session?.nc.close().catch(noop);
  }

  reopen(): void {
    this.#closed = false;
  }

  async #connect(): Promise<NatsSession> {
    const o = this.#options;
    const { endpoint } = o;
    await checkHandshake(o);
    let nc: NatsConnection;
    try {
      nc = await connect({
        servers: endpoint.server,
        name: o.name,
        reconnect: false,
        timeout: o.connectTimeoutMs,
        ...(o.tls !== undefined ? { tls: { ...o.tls } } : endpoint.tls ? { tls: {} } : {}),
        ...(endpoint.user === undefined ? {} : { user: endpoint.user }),
        ...(endpoint.pass === undefined ? {} : { pass: endpoint.pass }),
        ...(endpoint.token === undefined ? {} : { token: endpoint.token }),
      });
    } catch (err) {
      throw connectError(err, endpoint.safeUrl, endpoint.server);
    }
    try {
      const setupTimeout = () =>
        connectError(
          new Error(`JetStream did not answer within connectTimeoutMs (${o.connectTimeoutMs} ms)`),
          endpoint.safeUrl,
          endpoint.server,
        );
      let jsm: JetStreamManager;
      try {
        // Checks the account for JetStream (a STREAM INFO-like request to $JS.API.INFO).
        jsm = await withTimeout(
          jetstreamManager(nc, { timeout: o.connectTimeoutMs }),
          o.connectTimeoutMs,
          setupTimeout,
        );
      } catch (err) {
        if (nc.isClosed()) throw connectError(err, endpoint.safeUrl, endpoint.server);
        throw jetStreamDisabledError(endpoint.safeUrl, err);
      }
      if (o.ensureStream) {
        const { name, subjects } = o.ensureStream;
        try {
          await withTimeout(ensureStream(jsm, name, subjects), o.connectTimeoutMs, setupTimeout);
        } catch (err) {
          throw ensureStreamError(endpoint.safeUrl, name, subjects, err);
        }
      }
      if (this.#closed) throw closedError(endpoint.safeUrl);
      const ended = new AbortController();
      const session: NatsSession = {
        nc,
        js: jetstream(nc, { timeout: o.ackTimeoutMs }),
        jsm,
        maxPayload: nc.info?.max_payload ?? 1024 * 1024,
        ended: ended.signal,
      };
      void nc.closed().then((err) => {
        if (this.#current === session) this.#current = undefined;
        ended.abort(err ?? new Error('connection closed'));
      });
      this.#current = session;
      return session;
    } catch (err) {
      await nc.close().catch(noop);
      throw err;
    }
  }
}

/** Creates the stream, or adds missing subjects to it when it exists. */
async function ensureStream(jsm: JetStreamManager, name: string, subjects: readonly string[]): Promise<void> {
  let info;
  try {
    info = await jsm.streams.info(name);
  } catch (err) {
    if ((err as { name?: string }).name !== 'StreamNotFoundError') throw err;
    await jsm.streams.add({ name, subjects: [...subjects] });
    return;
  }
  const have = new Set(info.config.subjects ?? []);
  if (subjects.every((s) => have.has(s))) return;
  await jsm.streams.update(name, { ...info.config, subjects: [...new Set([...have, ...subjects])] });
}

/**
 * Opens a TCP connection of its own and waits for the server's `INFO` line, then closes it.
 *
 * Why: when the NATS client's connect timeout fires after the TCP connection was made but before
 * the server's INFO came (a hung server, a black-holing proxy, a port of something that waits for
 * the client to speak first, like HTTP), @nats-io/transport-node 3.4 rejects without closing its
 * socket (its close handler returns early for a connection it never finished). A relay probing
 * such a server would leak a socket per attempt. This check takes the common case off the client:
 * it only connects once a server answered with INFO moments before. Costs one short connection
 * per (re)connect, never per publish.
 */
function checkHandshake(o: Readonly<ResolvedNatsTransportOptions>): Promise<void> {
  const { host, port, server, safeUrl } = o.endpoint;
  return new Promise<void>((resolve, reject) => {
    let received = '';
    const socket = tcpConnect({ host, port });
    const finish = (err?: Error) => {
      clearTimeout(timer);
      socket.removeAllListeners();
      socket.on('error', noop);
      socket.destroy();
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(
      () =>
        finish(
          received === '' && socket.connecting
            ? connectError(
                new Error(`no TCP connection within connectTimeoutMs (${o.connectTimeoutMs} ms)`),
                safeUrl,
                server,
              )
            : notNatsError(safeUrl, server, o.connectTimeoutMs, received),
        ),
      o.connectTimeoutMs,
    );
    socket.on('error', (err) => finish(connectError(err, safeUrl, server)));
    socket.on('close', () =>
      finish(
        connectError(new Error('the server closed the connection before sending INFO'), safeUrl, server),
      ),
    );
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      if (received.startsWith('INFO ') || received.startsWith('INFO\t')) finish();
      else if (received.length >= 5 || !'INFO '.startsWith(received)) {
        finish(notNatsError(safeUrl, server, o.connectTimeoutMs, received));
      }
    });
  });
}
