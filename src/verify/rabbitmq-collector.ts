import { ConfigError } from '../core/errors/config-error.js';
import { TransportError } from '../core/errors/transport-error.js';
import { groupOf } from '../core/atomic-group.js';
import { redactUrl } from '../core/redact.js';

/** The slice of amqplib the collector uses (a consuming channel). */
interface AmqpMessage {
  content: Buffer;
  fields: { routingKey: string; redelivered: boolean };
  properties: { messageId?: unknown; headers?: Record<string, unknown> };
}
interface AmqpChannel {
  assertExchange(name: string, type: string, options: { durable: boolean }): Promise<unknown>;
  assertQueue(name: string, options: { durable: boolean; autoDelete: boolean }): Promise<unknown>;
  bindQueue(queue: string, exchange: string, pattern: string): Promise<unknown>;
  prefetch(n: number): Promise<unknown>;
  consume(queue: string, onMessage: (m: AmqpMessage | null) => void): Promise<{ consumerTag: string }>;
  cancel(tag: string): Promise<unknown>;
  ack(m: AmqpMessage, allUpTo?: boolean): void;
  ackAll(): void;
  deleteQueue(name: string): Promise<unknown>;
  close(): Promise<void>;
  on(event: 'error', listener: (err: Error) => void): unknown;
}
interface AmqpModel {
  createChannel(): Promise<AmqpChannel>;
  close(): Promise<void>;
  on(event: 'error', listener: (err: Error) => void): unknown;
  on(event: 'close', listener: () => void): unknown;
}

/** One delivery the collector saw, in arrival order. */
export interface CollectedDelivery {
  id: string;
  topic: string;
  key: string | null;
  redelivered: boolean;
  /** The atomic group it came in (its `mailroom-group*` headers), or null. */
  group: { id: string; size: number; index: number } | null;
}

/** Options of {@link RabbitMqCollector}. */
export interface RabbitMqCollectorOptions {
  url: string;
  /** Exchange the relay publishes to. @default 'mailroom' */
  exchange?: string;
  /** Durable queue that keeps deliveries while the collector is not consuming. @default 'mailroom.verify' */
  queue?: string;
  /** Routing pattern bound to the queue. @default '#' (everything) */
  binding?: string;
  /**
   * `auto`: acknowledge each delivery on arrival. `manual`: keep them unacknowledged until
   * {@link RabbitMqCollector.ackAll}, so a crash before the caller saved them loses nothing.
   * @default 'auto'
   */
  ack?: 'auto' | 'manual';
  /**
   * Called with the number of deliveries so far after every {@link progressEvery} of them, so
   * a long read (a soak's million messages) shows it is moving. Runs inside the consumer's
   * callback: keep it quick; an exception it throws is ignored.
   * @example onProgress: (n) => process.stderr.write(`${n} read\n`)
   */
  onProgress?: (received: number) => void;
  /** Deliveries between two {@link onProgress} calls. @default 10000 */
  progressEvery?: number;
  /**
   * Longest wait for the broker to complete the AMQP handshake. Past it the connection is
   * dropped with a TransportError, so a URL that points at something other than RabbitMQ, or a
   * black-holed link, fails in seconds instead of hanging the check.
   * @default 10000
   */
  connectTimeoutMs?: number;
}

/**
 * The verifier's consumer on RabbitMQ: a durable queue bound to the relay's exchange that
 * records the id of every message in arrival order. Attach it before the traffic you want to
 * check; it keeps messages even while nothing consumes.
 */
export class RabbitMqCollector {
  readonly exchange: string;
  readonly queue: string;
  readonly #url: string;
  readonly #binding: string;
  readonly #ack: 'auto' | 'manual';
  readonly #onProgress: ((received: number) => void) | undefined;
  readonly #progressEvery: number;
  readonly #connectTimeoutMs: number;
  #model: AmqpModel | undefined;
  #channel: AmqpChannel | undefined;
  #tag: string | undefined;
  readonly deliveries: CollectedDelivery[] = [];
  #lastAt = 0;
  #closing = false;
  /** Times the collector lost its connection and came back (broker restarts, dropped links). */
  reconnects = 0;

  constructor(options: RabbitMqCollectorOptions) {
    if (!/^amqps?:\/\//.test(options.url)) {
      throw new ConfigError(
        'transport',
        `the verifier needs an amqp:// or amqps:// URL, got ${redactUrl(options.url)}`,
      );
    }
    this.#url = options.url;
    this.exchange = options.exchange ?? 'mailroom';
    this.queue = options.queue ?? 'mailroom.verify';
    this.#binding = options.binding ?? '#';
    this.#ack = options.ack ?? 'auto';
    const every = options.progressEvery ?? 10_000;
    if (!Number.isInteger(every) || every < 1) {
      throw new ConfigError(
        'progressEvery',
        `progressEvery must be a whole number of deliveries, at least 1, got ${String(every)}`,
      );
    }
    this.#progressEvery = every;
    this.#onProgress = options.onProgress;
    const timeout = options.connectTimeoutMs ?? 10_000;
    // 2^31 - 1: a longer Node timer fires at once.
    if (!Number.isInteger(timeout) || timeout < 1 || timeout > 2_147_483_647) {
      throw new ConfigError(
        'connectTimeoutMs',
        `connectTimeoutMs must be a whole number of milliseconds from 1 to 2147483647, got ${String(timeout)}`,
      );
    }
    this.#connectTimeoutMs = timeout;
  }

  async #open(): Promise<AmqpChannel> {
    if (this.#channel) return this.#channel;
    let amqp: { connect(url: string, socketOptions: { timeout: number }): Promise<AmqpModel> };
    try {
      const mod = (await import('amqplib')) as unknown as { default?: typeof amqp } & typeof amqp;
      amqp = mod.default ?? mod;
    } catch (err) {
      throw new ConfigError(
        'amqplib',
        'the RabbitMQ verifier needs the `amqplib` package: run `npm install amqplib`',
        {},
        err,
      );
    }
    try {
      // amqplib applies `timeout` to the socket until the handshake is done.
      this.#model = await amqp.connect(this.#url, { timeout: this.#connectTimeoutMs });
    } catch (err) {
      const message = (err as Error).message;
      const silent = message === 'connect ETIMEDOUT';
      throw new TransportError(
        'unreachable',
        silent
          ? `${redactUrl(this.#url)} did not answer as RabbitMQ within ${this.#connectTimeoutMs} ms: ` +
              'check that the URL names a RabbitMQ server and its AMQP port (5672, 5671 for amqps), ' +
              'and that nothing between swallows the traffic'
          : `cannot reach RabbitMQ at ${redactUrl(this.#url)}: ${message}`,
        { cause: err },
      );
    }
    const model = this.#model;
    model.on('error', () => undefined);
    if (this.#closing) {
      // close() ran while this connection was being opened (a reconnect in progress).
      this.#model = undefined;
      await model.close().catch(() => undefined);
      throw new TransportError('closed', 'the collector was closed');
    }
    // The broker restarting must not end the verification: come back and consume again.
    // Unacknowledged deliveries return (marked redelivered); first deliveries are what count.
    model.on('close', () => {
      if (this.#model !== model) return;
      this.#model = undefined;
      this.#channel = undefined;
      const consuming = this.#tag !== undefined;
      this.#tag = undefined;
      if (!this.#closing && consuming) void this.#reconnect();
    });
    this.#channel = await this.#model.createChannel();
    this.#channel.on('error', () => undefined);
    return this.#channel;
  }

  async #reconnect(): Promise<void> {
    for (let attempt = 0; !this.#closing; attempt++) {
      await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** Math.min(attempt, 5))));
      if (this.#closing) return;
      try {
        await this.attach();
        await this.start();
        this.reconnects++;
        return;
      } catch {
        // Broker still down: try again.
      }
    }
  }

  /** Declares the exchange (as the relay does) and the durable queue bound to it. Idempotent. */
  async attach(): Promise<void> {
    const ch = await this.#open();
    await ch.assertExchange(this.exchange, 'topic', { durable: true });
    await ch.assertQueue(this.queue, { durable: true, autoDelete: false });
    await ch.bindQueue(this.queue, this.exchange, this.#binding);
  }

  /** Starts consuming; every delivery is recorded and acknowledged. */
  async start(): Promise<void> {
    if (this.#tag) return;
    const ch = await this.#open();
    // Manual mode holds every delivery unacknowledged: no prefetch limit, or consumption stalls.
    await ch.prefetch(this.#ack === 'auto' ? 1000 : 0);
    const { consumerTag } = await ch.consume(this.queue, (m) => {
      if (!m) return;
      const key = m.properties.headers?.['mailroom-key'];
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(m.properties.headers ?? {})) {
        if (name.startsWith('mailroom-group')) headers[name] = String(value);
      }
      this.deliveries.push({
        id: String(m.properties.messageId),
        topic: m.fields.routingKey,
        key: typeof key === 'string' ? key : null,
        redelivered: m.fields.redelivered,
        group: groupOf(headers),
      });
      this.#lastAt = Date.now();
      if (this.#ack === 'auto') ch.ack(m);
      if (this.#onProgress && this.deliveries.length % this.#progressEvery === 0) {
        try {
          this.#onProgress(this.deliveries.length);
        } catch {
          // Progress is a courtesy: a failing reporter must not lose a delivery.
        }
      }
    });
    this.#tag = consumerTag;
  }

  /** Resolves once nothing arrived for `idleMs` (or `timeoutMs` passed). */
  async settle(idleMs = 1000, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    this.#lastAt = Math.max(this.#lastAt, Date.now());
    while (Date.now() - this.#lastAt < idleMs && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, Math.min(100, idleMs)));
    }
  }

  /** Acknowledges every delivery so far (manual mode); they leave the queue. */
  ackAll(): void {
    this.#channel?.ackAll();
  }

  /** Ids in arrival order, duplicates included. */
  get ids(): string[] {
    return this.deliveries.map((d) => d.id);
  }

  /** Stops consuming and closes the connection; with `deleteQueue`, removes the queue. */
  async close(options: { deleteQueue?: boolean } = {}): Promise<void> {
    this.#closing = true;
    const ch = this.#channel;
    if (ch && this.#tag) await ch.cancel(this.#tag).catch(() => undefined);
    this.#tag = undefined;
    if (ch && options.deleteQueue) await ch.deleteQueue(this.queue).catch(() => undefined);
    await ch?.close().catch(() => undefined);
    await this.#model?.close().catch(() => undefined);
    this.#channel = undefined;
    this.#model = undefined;
  }
}
