/**
 * One STOMP 1.2 connection over Node's `net` or `tls`: the CONNECT handshake under a deadline,
 * heart-beats both ways, frames written with backpressure, RECEIPTs matched to the frames that
 * asked for them, ERROR frames turned into the refusal of the frame they answer, and a close that
 * never waits longer than its deadline.
 *
 * Why not `@stomp/stompjs` (over `@stomp/tcp-wrapper`): its BEGIN, COMMIT and ABORT take no
 * headers, so a COMMIT cannot ask for a receipt and "the broker committed" cannot be observed,
 * which is what `BrokerTransaction.commit()` promises; the client exposes no way to send another
 * frame. It also ignores the socket's backpressure (a 5,000-message batch is buffered at once),
 * the TCP wrapper has no TLS and no connect deadline, and its close (`socket.end()`) waits for a
 * peer that may never answer. The protocol part we need is small (stomp-frame.ts); owning it keeps
 * every wait bounded.
 *
 * @module
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';

import {
  connectError,
  connectRefusedError,
  connectTimeoutError,
  connectionLostError,
  errorFrameText,
  handshakeClosedError,
  notStompError,
  StompRefusal,
} from './stomp-errors.js';
import {
  encodeFrame,
  FrameDecoder,
  HEARTBEAT,
  StompProtocolError,
  type HeaderList,
  type StompFrame,
} from './stomp-frame.js';

/** Where and as whom to connect; from the URL. */
export interface StompEndpoint {
  host: string;
  port: number;
  tls: boolean;
  login: string | undefined;
  passcode: string | undefined;
  /** The CONNECT `host` header: RabbitMQ's virtual host (`/` by default); ActiveMQ ignores it. */
  vhost: string;
  /** The URL with the password masked, for messages. */
  safeUrl: string;
}

export interface StompConnectionOptions {
  endpoint: StompEndpoint;
  /** TLS options for `stomps://` (`ca`, `cert`, `key`, `servername`, `rejectUnauthorized`). */
  tls: ConnectionOptions;
  /** Limit for TCP/TLS connect plus the CONNECT/CONNECTED exchange. */
  connectTimeoutMs: number;
  /** Heart-beat interval to offer both ways, in ms; 0 disables heart-beats. */
  heartbeatMs: number;
  /** Largest frame accepted from the broker. */
  maxFrameBytes: number;
  /** Called with each MESSAGE frame. */
  onMessage?: (frame: StompFrame) => void;
  /** Aborts connecting. */
  signal?: AbortSignal;
}

/** How long {@link StompConnection.close} waits for the broker's RECEIPT of DISCONNECT. */
export const CLOSE_HANDSHAKE_MS = 2000;

/** Extra time granted to a silent broker beyond twice its heart-beat interval. */
const HEARTBEAT_GRACE_MS = 1000;

interface Waiter {
  resolve: (frame: StompFrame) => void;
  reject: (err: Error) => void;
  /** May be blamed for an ERROR frame that names no receipt (a SEND or COMMIT, not a DISCONNECT). */
  blameable: boolean;
}

/** A frame sent with a receipt: when it was written, and the broker's answer. */
export interface Request {
  /** Resolves once the frame is in the socket (after `drain` when the buffer was full). */
  written: Promise<void>;
  /** Resolves with the RECEIPT; rejects with a {@link StompRefusal} or the connection's loss. */
  answered: Promise<StompFrame>;
  /**
   * Stops waiting for the RECEIPT (`answered` then rejects): for frames the broker will never
   * answer, such as the SENDs of a transaction RabbitMQ aborted.
   */
  cancel(): void;
}

let connectionCounter = 0;

export class StompConnection {
  readonly #socket: Socket;
  readonly #options: StompConnectionOptions;
  readonly #decoder: FrameDecoder;
  readonly #receipts = new Map<string, Waiter>();
  readonly #drainWaiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  readonly #ended = new AbortController();
  readonly #prefix = `m${++connectionCounter}-`;
  #receiptCounter = 0;
  #lost: Error | undefined;
  #connected = false;
  #handshake: { resolve: () => void; reject: (err: Error) => void } | undefined;
  #lastRead = Date.now();
  #lastWrite = Date.now();
  #timers: Array<ReturnType<typeof setInterval>> = [];
  /** The broker's `server` header. */
  server = '';

  private constructor(socket: Socket, options: StompConnectionOptions) {
    this.#socket = socket;
    this.#options = options;
    this.#decoder = new FrameDecoder(options.maxFrameBytes);
  }

  /**
   * Connects and logs in. Rejects with a `TransportError`: `unreachable` (refused, silent past
   * `connectTimeoutMs`, hung up), `not_stomp`, `auth_failed` or `vhost_refused`.
   */
  static open(options: StompConnectionOptions): Promise<StompConnection> {
    const { endpoint } = options;
    const socket = endpoint.tls
      ? tlsConnect({ host: endpoint.host, port: endpoint.port, servername: endpoint.host, ...options.tls })
      : netConnect({ host: endpoint.host, port: endpoint.port });
    socket.setNoDelay(true);
    const connection = new StompConnection(socket, options);
    return connection.#start();
  }

  /** Aborted, with the error as its reason, when the connection ends for any reason. */
  get ended(): AbortSignal {
    return this.#ended.signal;
  }

  /** True from CONNECTED until the connection ends. */
  get open(): boolean {
    return this.#connected && this.#lost === undefined;
  }

  /** Why the connection ended, once it has. */
  get lostReason(): Error | undefined {
    return this.#lost;
  }

  /** Frames waiting for a RECEIPT. */
  get pendingReceipts(): number {
    return this.#receipts.size;
  }

  /** Writes a frame without a receipt; resolves once it is in the socket. */
  send(command: string, headers: HeaderList, body?: Buffer): Promise<void> {
    return this.#write(encodeFrame(command, headers, body));
  }

  /**
   * Writes a frame with a `receipt` header (added first) and waits for the broker's RECEIPT.
   * `blameable: false` for frames an ERROR without a receipt id cannot be about (DISCONNECT).
   */
  request(command: string, headers: HeaderList, body?: Buffer, blameable = true): Request {
    const receipt = `${this.#prefix}${++this.#receiptCounter}`;
    let waiter!: Waiter;
    const answered = new Promise<StompFrame>((resolve, reject) => {
      waiter = { resolve, reject, blameable };
    });
    // A rejection nobody awaits (the caller gave up) must not crash the process.
    answered.catch(() => {});
    const cancel = () => {
      if (this.#receipts.get(receipt) !== waiter) return;
      this.#receipts.delete(receipt);
      waiter.reject(new Error(`stopped waiting for the RECEIPT of ${command}`));
    };
    if (this.#lost) {
      waiter.reject(this.#lost);
      const written = Promise.reject(this.#lost);
      written.catch(() => {});
      return { written, answered, cancel };
    }
    this.#receipts.set(receipt, waiter);
    const written = this.#write(encodeFrame(command, [['receipt', receipt], ...headers], body));
    written.catch(() => {});
    return { written, answered, cancel };
  }

  /**
   * Sends DISCONNECT with a receipt (so the broker has processed every earlier frame), waits for
   * it at most `CLOSE_HANDSHAKE_MS`, then destroys the socket. Never rejects.
   */
  async close(reason: Error): Promise<void> {
    if (this.#lost) return;
    if (this.#connected) {
      const { answered } = this.request('DISCONNECT', [], undefined, false);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        answered.catch(() => {}),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_HANDSHAKE_MS))),
      ]);
      clearTimeout(timer);
    }
    this.destroy(reason);
  }

  /** Ends the connection at once: pending receipts and writes reject with `reason`. Idempotent. */
  destroy(reason: Error): void {
    if (this.#lost) return;
    this.#lost = reason;
    for (const timer of this.#timers) clearInterval(timer);
    this.#timers = [];
    this.#socket.destroy();
    const waiters = [...this.#receipts.values()];
    this.#receipts.clear();
    for (const waiter of waiters) waiter.reject(reason);
    for (const drain of this.#drainWaiters.splice(0)) drain.reject(reason);
    this.#handshake?.reject(reason);
    this.#handshake = undefined;
    this.#ended.abort(reason);
  }

  #start(): Promise<StompConnection> {
    const { endpoint, connectTimeoutMs, signal } = this.#options;
    const socket = this.#socket;
    let stage = 'the TCP connect';
    return new Promise<StompConnection>((resolve, reject) => {
      const timer = setTimeout(
        () => this.destroy(connectTimeoutError(endpoint.safeUrl, connectTimeoutMs, stage)),
        connectTimeoutMs,
      );
      const onAbort = () =>
        this.destroy(
          connectError(new Error(`connect aborted (${String(signal?.reason)})`), endpoint.safeUrl),
        );
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#ended.signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      this.#handshake = {
        resolve: () => {
          done();
          resolve(this);
        },
        reject: (err) => {
          done();
          reject(err);
        },
      };
      if (signal?.aborted) {
        onAbort();
        return;
      }
      socket.once(endpoint.tls ? 'secureConnect' : 'connect', () => {
        stage = 'CONNECT with CONNECTED';
        const heartbeat = `${this.#options.heartbeatMs},${this.#options.heartbeatMs}`;
        const headers: Array<[string, string]> = [
          ['accept-version', '1.2'],
          ['host', endpoint.vhost],
          ['heart-beat', heartbeat],
        ];
        if (endpoint.login !== undefined) headers.push(['login', endpoint.login]);
        if (endpoint.passcode !== undefined) headers.push(['passcode', endpoint.passcode]);
        // CONNECT is never escaped (STOMP 1.2); a header value with a line break would break it.
        this.#write(encodeFrame('CONNECT', headers, undefined, false)).catch(() => {});
      });
      socket.on('data', (chunk: Buffer) => this.#onData(chunk));
      socket.on('drain', () => {
        for (const drain of this.#drainWaiters.splice(0)) drain.resolve();
      });
      socket.on('error', (err) => {
        this.destroy(
          this.#connected
            ? connectionLostError(endpoint.safeUrl, err.message, err)
            : connectError(err, endpoint.safeUrl),
        );
      });
      socket.on('close', () => {
        this.destroy(
          this.#connected
            ? connectionLostError(endpoint.safeUrl, 'the broker closed the connection')
            : handshakeClosedError(endpoint.safeUrl),
        );
      });
    });
  }

  #write(bytes: Buffer): Promise<void> {
    if (this.#lost) return Promise.reject(this.#lost);
    this.#lastWrite = Date.now();
    if (this.#socket.write(bytes)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => this.#drainWaiters.push({ resolve, reject }));
  }

  #onData(chunk: Buffer): void {
    this.#lastRead = Date.now();
    let frames: StompFrame[];
    try {
      frames = this.#decoder.push(chunk);
    } catch (err) {
      const why = err instanceof StompProtocolError ? err.message : String(err);
      this.destroy(
        this.#connected
          ? connectionLostError(
              this.#options.endpoint.safeUrl,
              `unreadable frame from the broker: ${why}`,
              err,
            )
          : notStompError(this.#options.endpoint.safeUrl, why, err),
      );
      return;
    }
    for (const frame of frames) {
      if (this.#lost) return;
      this.#onFrame(frame);
    }
  }

  #onFrame(frame: StompFrame): void {
    const { safeUrl } = this.#options.endpoint;
    switch (frame.command) {
      case 'CONNECTED':
        if (this.#connected) return;
        this.#connected = true;
        this.server = frame.headers['server'] ?? '';
        this.#startHeartbeats(frame.headers['heart-beat']);
        this.#handshake?.resolve();
        this.#handshake = undefined;
        return;
      case 'RECEIPT': {
        const id = frame.headers['receipt-id'];
        const waiter = id === undefined ? undefined : this.#receipts.get(id);
        if (id !== undefined && waiter) {
          this.#receipts.delete(id);
          waiter.resolve(frame);
        }
        return;
      }
      case 'MESSAGE':
        this.#options.onMessage?.(frame);
        return;
      case 'ERROR':
        this.#onError(frame);
        return;
      default:
        // A frame a client never receives: the peer is not a STOMP broker we understand.
        if (!this.#connected)
          this.destroy(notStompError(safeUrl, `got ${frame.command} instead of CONNECTED`));
    }
  }

  /**
   * An ERROR frame. Before CONNECTED it is the refusal of the login. After, it answers one frame:
   * the one whose receipt it names, or, when it names none (RabbitMQ's adapter leaves it out),
   * the oldest frame still waiting for a RECEIPT, since a broker processes a connection's frames
   * in order. That frame's waiter gets a {@link StompRefusal}; then the connection is dropped, as
   * the specification has the broker do (brokers do not always close it themselves, and a
   * connection after an ERROR is in a state the client cannot know), so every other frame waiting
   * for a RECEIPT fails as a lost connection.
   */
  #onError(frame: StompFrame): void {
    const { safeUrl, vhost } = this.#options.endpoint;
    const text = errorFrameText(frame);
    if (!this.#connected) {
      this.destroy(connectRefusedError(safeUrl, frame, vhost));
      return;
    }
    const named = frame.headers['receipt-id'];
    let target: [string, Waiter] | undefined;
    if (named !== undefined) {
      const waiter = this.#receipts.get(named);
      if (waiter) target = [named, waiter];
    } else {
      target = [...this.#receipts.entries()].find(([, waiter]) => waiter.blameable);
    }
    if (target) {
      this.#receipts.delete(target[0]);
      target[1].reject(new StompRefusal(text, named === undefined, safeUrl));
    }
    this.destroy(connectionLostError(safeUrl, `the broker sent an ERROR frame: ${text}`));
  }

  /** Heart-beats as negotiated (STOMP 1.2, "Heart-beating"): the larger of the two offers, each way. */
  #startHeartbeats(header: string | undefined): void {
    const ours = this.#options.heartbeatMs;
    if (ours === 0 || header === undefined) return;
    const [sx = 0, sy = 0] = header.split(',').map((part) => Number.parseInt(part.trim(), 10) || 0);
    if (sy > 0) {
      const every = Math.max(ours, sy);
      const timer = setInterval(() => {
        if (Date.now() - this.#lastWrite >= every / 2) this.#write(HEARTBEAT).catch(() => {});
      }, every / 2);
      timer.unref();
      this.#timers.push(timer);
    }
    if (sx > 0) {
      const expect = Math.max(ours, sx);
      const timer = setInterval(() => {
        const silent = Date.now() - this.#lastRead;
        if (silent > 2 * expect + HEARTBEAT_GRACE_MS) {
          this.destroy(
            connectionLostError(
              this.#options.endpoint.safeUrl,
              `nothing from the broker for ${silent} ms, its heart-beat interval being ${expect} ms`,
            ),
          );
        }
      }, expect);
      timer.unref();
      this.#timers.push(timer);
    }
  }
}
