/**
 * The MQTT transport's connection: opened on demand, at most one connect at a time, forgotten
 * when it ends so that the next caller reconnects, with a backoff after failed connects.
 *
 * @module
 */
import { loadMqttConnect } from './mqtt-client.js';
import { MqttConnection } from './mqtt-connection.js';
import { backoffError, closedError } from './mqtt-errors.js';
import type { ResolvedMqttTransportOptions } from './mqtt-options.js';

export const noop = (): void => {};

export class MqttSession {
  readonly #options: Readonly<ResolvedMqttTransportOptions>;
  #current: MqttConnection | undefined;
  #connecting: Promise<MqttConnection> | undefined;
  #closed = false;
  #failures = 0;
  #retryAt = 0;
  #lastConnectError: Error | undefined;
  /** Aborted by close(): a connect under way gives up at once instead of running to its timeout. */
  #abandon = new AbortController();

  constructor(options: Readonly<ResolvedMqttTransportOptions>) {
    this.#options = options;
  }

  get current(): MqttConnection | undefined {
    return this.#current?.open === true ? this.#current : undefined;
  }

  get closed(): boolean {
    return this.#closed;
  }

  reopen(): void {
    this.#closed = false;
    this.#abandon = new AbortController();
  }

  /**
   * The open connection, or a new one. Unless `ignoreBackoff`, fails at once with the last connect
   * error while the reconnect backoff runs.
   */
  open(ignoreBackoff: boolean): Promise<MqttConnection> {
    if (this.#closed) return Promise.reject(closedError(this.#options.endpoint.safeUrl));
    if (this.#current?.open) return Promise.resolve(this.#current);
    if (this.#connecting) return this.#connecting;
    const wait = this.#retryAt - Date.now();
    if (!ignoreBackoff && wait > 0 && this.#lastConnectError) {
      return Promise.reject(backoffError(this.#lastConnectError, wait));
    }
    const connecting = this.#connect();
    this.#connecting = connecting;
    void connecting.then(
      () => (this.#connecting = undefined),
      () => (this.#connecting = undefined),
    );
    return connecting;
  }

  async #connect(): Promise<MqttConnection> {
    const options = this.#options;
    let connection: MqttConnection;
    try {
      const connect = await loadMqttConnect();
      connection = await MqttConnection.open(
        connect,
        {
          endpoint: options.endpoint,
          clientId: options.clientId,
          connectTimeoutMs: options.connectTimeoutMs,
          keepaliveSeconds: options.keepaliveSeconds,
          tls: { ...options.tls },
          maxInflight: options.maxInflight,
          maxPacketBytes: options.maxPacketBytes,
        },
        this.#abandon.signal,
      );
    } catch (err) {
      this.#failures++;
      const cap = Math.min(options.maxReconnectDelayMs, options.reconnectDelayMs * 2 ** (this.#failures - 1));
      this.#retryAt = Date.now() + Math.round(cap / 2 + (Math.random() * cap) / 2);
      this.#lastConnectError = err instanceof Error ? err : new Error(String(err));
      throw err;
    }
    this.#failures = 0;
    this.#retryAt = 0;
    this.#lastConnectError = undefined;
    if (this.#closed) {
      await connection.close(closedError(options.endpoint.safeUrl));
      throw closedError(options.endpoint.safeUrl);
    }
    this.#current = connection;
    connection.ended.addEventListener('abort', () => {
      if (this.#current === connection) this.#current = undefined;
    });
    return connection;
  }

  /** Ends a connection that does not answer; the next caller reconnects. */
  drop(connection: MqttConnection, reason: Error): void {
    connection.destroy(reason);
  }

  /** Stops handing out connections, lets `drain` wait for work in flight, then closes the connection. */
  async close(drain: () => Promise<void>): Promise<void> {
    this.#closed = true;
    await drain();
    this.#abandon.abort(closedError(this.#options.endpoint.safeUrl));
    await this.#connecting?.catch(noop);
    const current = this.#current;
    this.#current = undefined;
    await current?.close(closedError(this.#options.endpoint.safeUrl));
  }
}
