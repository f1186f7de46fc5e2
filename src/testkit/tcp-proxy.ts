import { createServer, connect, type Server, type Socket } from 'node:net';

/** Options of {@link TcpProxy}. */
export interface TcpProxyOptions {
  /** Where connections go. */
  targetHost?: string;
  targetPort: number;
  /** Address to listen on. Loopback only by default: fault tests never leave the machine. @default '127.0.0.1' */
  listenHost?: string;
  /** Port to listen on; 0 picks a free one. @default 0 */
  listenPort?: number;
}

type Mode = 'pass' | 'blackhole';

interface Pair {
  client: Socket;
  server: Socket;
}

/**
 * A TCP proxy for fault-injection tests: put it between a relay and its database or broker,
 * then delay, cut or black-hole the traffic while the system runs.
 *
 * - `delay(ms)`: every chunk in both directions waits `ms` before it is forwarded.
 * - `cut()`: resets every open connection (the peer sees ECONNRESET); new ones still work.
 * - `blackhole()`: open and new connections stay up but nothing is forwarded, as when a
 *   firewall drops packets; `heal()` ends it (held data is dropped, like lost packets).
 * - `refuse()`: new connections are closed at once; `heal()` ends it.
 *
 * @example
 * ```ts
 * const proxy = await TcpProxy.start({ targetPort: 5672 });
 * const transport = new RabbitMqTransport({ url: `amqp://guest:guest@127.0.0.1:${proxy.port}` });
 * proxy.cut();
 * ```
 */
export class TcpProxy {
  readonly #server: Server;
  readonly #pairs = new Set<Pair>();
  readonly #target: { host: string; port: number };
  #mode: Mode = 'pass';
  #refusing = false;
  #delayMs = 0;
  /** Connections accepted since start. */
  connections = 0;

  private constructor(server: Server, target: { host: string; port: number }) {
    this.#server = server;
    this.#target = target;
  }

  static async start(options: TcpProxyOptions): Promise<TcpProxy> {
    const server = createServer();
    const proxy = new TcpProxy(server, { host: options.targetHost ?? '127.0.0.1', port: options.targetPort });
    server.on('connection', (client) => proxy.#accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.listenPort ?? 0, options.listenHost ?? '127.0.0.1', () => resolve());
    });
    return proxy;
  }

  /** The port the proxy listens on. */
  get port(): number {
    const addr = this.#server.address();
    return typeof addr === 'object' && addr ? addr.port : 0;
  }

  /** Open proxied connections right now. */
  get openConnections(): number {
    return this.#pairs.size;
  }

  #accept(client: Socket): void {
    this.connections++;
    if (this.#refusing) {
      client.destroy();
      return;
    }
    const server = connect(this.#target.port, this.#target.host);
    const pair = { client, server };
    this.#pairs.add(pair);
    const forward = (from: Socket, to: Socket) => {
      from.on('data', (chunk: Buffer) => {
        if (this.#mode === 'blackhole') return;
        if (this.#delayMs > 0) {
          from.pause();
          setTimeout(() => {
            if (!to.destroyed && this.#mode === 'pass') to.write(chunk);
            from.resume();
          }, this.#delayMs);
        } else if (!to.destroyed) {
          to.write(chunk);
        }
      });
    };
    forward(client, server);
    forward(server, client);
    const close = () => {
      this.#pairs.delete(pair);
      client.destroy();
      server.destroy();
    };
    client.on('close', close);
    server.on('close', close);
    client.on('error', close);
    server.on('error', close);
  }

  /** Forwards every chunk after `ms` (0 to stop delaying). */
  delay(ms: number): void {
    this.#delayMs = ms;
  }

  /** Resets every open connection. */
  cut(): void {
    for (const { client, server } of this.#pairs) {
      // A socket whose writing side already ended (the peer sent FIN, and Node shuts ours down
      // in answer) cannot be reset: Node's reset then fails (EINVAL) and never closes the
      // handle, which stays open for good and spins the event loop. Such a socket is closed.
      if (client.writableEnded || client.destroyed) client.destroy();
      else client.resetAndDestroy();
      server.destroy();
    }
    this.#pairs.clear();
  }

  /** Stops forwarding anything, keeping connections open. */
  blackhole(): void {
    this.#mode = 'blackhole';
  }

  /** Closes new connections at once. */
  refuse(): void {
    this.#refusing = true;
  }

  /** Back to normal: forwards, accepts, no delay. */
  heal(): void {
    this.#mode = 'pass';
    this.#refusing = false;
    this.#delayMs = 0;
  }

  /** Cuts every connection and stops listening. */
  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
