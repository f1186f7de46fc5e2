/**
 * One MQTT 5 connection of the transport: MQTT.js client opened with its own reconnect off
 * (`reconnectPeriod: 0`), a clean start and a session that ends with the connection, so nothing
 * is ever queued offline to be sent or acknowledged later; the inflight window; and the end of the
 * connection, which settles every PUBLISH still waiting as lost. A connection is used until it
 * ends, then forgotten: the transport opens a new one.
 *
 * @module
 */
import type { MqttClientLike, MqttConnect, MqttConnackProperties, MqttReasonError } from './mqtt-client.js';
import {
  connectError,
  connectionLostError,
  connectTimeoutError,
  describe,
  handshakeClosedError,
} from './mqtt-errors.js';
import type { MqttEndpoint } from './mqtt-options.js';
import { hex } from './mqtt-reason-codes.js';

/** MQTT 5's default Receive Maximum, when the CONNACK gives none. */
const DEFAULT_RECEIVE_MAXIMUM = 65_535;

export interface MqttConnectionOptions {
  endpoint: MqttEndpoint;
  clientId: string;
  connectTimeoutMs: number;
  keepaliveSeconds: number;
  tls: Record<string, unknown>;
  maxInflight: number;
  maxPacketBytes: number;
}

/** A PUBLISH the broker refused with a reason code (PUBACK or PUBREC ≥ 0x80). */
export class MqttRefusal extends Error {
  override name = 'MqttRefusal';
  constructor(readonly reasonCode: number) {
    super(`refused with reason code ${hex(reasonCode)}`);
  }
}

/** One PUBLISH handed to the connection. */
export interface MqttRequest {
  /** Resolves when the PUBLISH got an inflight slot and went to MQTT.js (which writes it in order). */
  written: Promise<void>;
  /** Resolves at the PUBACK/PUBCOMP; rejects with an {@link MqttRefusal} or the connection's end. */
  answered: Promise<void>;
  /** True once the PUBLISH went to MQTT.js. */
  readonly sent: boolean;
}

export class MqttConnection {
  readonly #client: MqttClientLike;
  readonly #endedController = new AbortController();
  readonly #safeUrl: string;
  /** Largest PUBLISH packet: the broker's Maximum Packet Size when it announced one. */
  readonly maxPacketBytes: number;
  readonly maxPacketAnnounced: boolean;
  readonly #window: number;
  #inflight = 0;
  readonly #waiting: Array<() => void> = [];
  readonly #pending = new Set<(error: Error) => void>();
  #lostReason: Error | undefined;

  private constructor(
    client: MqttClientLike,
    connack: MqttConnackProperties | undefined,
    options: MqttConnectionOptions,
  ) {
    this.#client = client;
    this.#safeUrl = options.endpoint.safeUrl;
    const announced = connack?.maximumPacketSize;
    this.maxPacketAnnounced = typeof announced === 'number' && announced > 0;
    this.maxPacketBytes = this.maxPacketAnnounced ? (announced as number) : options.maxPacketBytes;
    const receiveMaximum =
      typeof connack?.receiveMaximum === 'number' ? connack.receiveMaximum : DEFAULT_RECEIVE_MAXIMUM;
    this.#window = Math.max(1, Math.min(options.maxInflight, receiveMaximum));
  }

  /**
   * Connects and waits for the CONNACK. Throws a TransportError (`unreachable`, `auth_failed`,
   * `not_mqtt5`…), or `abandon`'s reason when it aborts first (the transport is closing).
   */
  static open(
    connect: MqttConnect,
    options: MqttConnectionOptions,
    abandon: AbortSignal,
  ): Promise<MqttConnection> {
    const { endpoint } = options;
    return new Promise<MqttConnection>((resolve, reject) => {
      if (abandon.aborted) {
        reject(abandon.reason as Error);
        return;
      }
      let client: MqttClientLike;
      try {
        client = connect({
          ...options.tls,
          protocol: endpoint.tls ? 'mqtts' : 'mqtt',
          host: endpoint.host,
          port: endpoint.port,
          protocolVersion: 5,
          clientId: options.clientId,
          clean: true,
          keepalive: options.keepaliveSeconds,
          connectTimeout: options.connectTimeoutMs,
          reconnectPeriod: 0,
          queueQoSZero: false,
          resubscribe: false,
          properties: { sessionExpiryInterval: 0 },
          ...(endpoint.username === undefined ? {} : { username: endpoint.username }),
          ...(endpoint.password === undefined ? {} : { password: endpoint.password }),
        });
      } catch (err) {
        reject(connectError(err, endpoint.safeUrl));
        return;
      }
      let settled = false;
      // Only our own listeners come off: MQTT.js listens to its own events too (its 'close'
      // handler stops the keep-alive timer).
      const unlisten = () => {
        clearTimeout(timer);
        abandon.removeEventListener('abort', onAbandon);
        client.removeListener('error', onError);
        client.removeListener('close', onClose);
        client.removeListener('connect', onConnect);
      };
      const fail = (error: Error) => {
        if (settled) return;
        settled = true;
        unlisten();
        client.on('error', () => undefined); // late errors of a client given up on
        client.end(true, {}, () => undefined);
        reject(error);
      };
      const onError = (err: MqttReasonError) =>
        fail(
          err.message === 'connack timeout'
            ? connectTimeoutError(endpoint.safeUrl, options.connectTimeoutMs)
            : connectError(err, endpoint.safeUrl),
        );
      const onClose = () => fail(handshakeClosedError(endpoint.safeUrl));
      const onAbandon = () => fail(abandon.reason as Error);
      const onConnect = (packet: { properties?: MqttConnackProperties }) => {
        if (settled) return;
        settled = true;
        unlisten();
        const connection = new MqttConnection(client, packet.properties ?? client.serverProperties, options);
        connection.#watch();
        resolve(connection);
      };
      // MQTT.js has its own connack timer; this one also bounds a TLS handshake that hangs.
      const timer = setTimeout(
        () => fail(connectTimeoutError(endpoint.safeUrl, options.connectTimeoutMs)),
        options.connectTimeoutMs,
      );
      abandon.addEventListener('abort', onAbandon, { once: true });
      client.on('error', onError);
      client.on('close', onClose);
      client.on('connect', onConnect);
    });
  }

  /** Aborted when the connection ended (lost, dropped or closed). */
  get ended(): AbortSignal {
    return this.#endedController.signal;
  }

  get open(): boolean {
    return !this.ended.aborted;
  }

  /** Why the connection ended, once it has. */
  get lostReason(): Error | undefined {
    return this.#lostReason;
  }

  #watch(): void {
    const client = this.#client;
    let brokerSaid: string | undefined;
    let lastError: Error | undefined;
    client.on('disconnect', (packet) => {
      const code = packet.reasonCode ?? 0;
      brokerSaid = `the broker sent DISCONNECT with reason code ${hex(code)}`;
    });
    client.on('error', (err: MqttReasonError) => {
      lastError = err;
    });
    client.on('close', () => {
      const reason = brokerSaid ?? (lastError ? describe(lastError) : 'the socket closed');
      this.#end(connectionLostError(this.#safeUrl, reason, lastError));
      // Closes MQTT.js's stores; its own reconnect is off, so the client is done for good.
      client.end(true, {}, () => undefined);
    });
  }

  /**
   * Hands one PUBLISH to MQTT.js once an inflight slot is free (slots go in request order, so the
   * broker gets PUBLISH packets in the order they were requested).
   */
  request(
    topicName: string,
    payload: Buffer,
    qos: 1 | 2,
    properties: Parameters<MqttClientLike['publish']>[2]['properties'],
  ): MqttRequest {
    let sent = false;
    let rejectAnswer: (error: Error) => void = () => undefined;
    let resolveAnswer: () => void = () => undefined;
    const answered = new Promise<void>((resolve, reject) => {
      resolveAnswer = resolve;
      rejectAnswer = reject;
    });
    answered.catch(() => undefined);
    let settledAnswer = false;
    const settle = (error?: Error) => {
      if (settledAnswer) return;
      settledAnswer = true;
      this.#pending.delete(settle);
      if (sent) this.#release();
      if (error) rejectAnswer(error);
      else resolveAnswer();
    };
    this.#pending.add(settle);
    const written = this.#acquire().then((acquired) => {
      if (settledAnswer) {
        if (acquired) this.#release();
        return;
      }
      sent = true;
      this.#client.publish(topicName, payload, { qos, retain: false, properties }, (error) => {
        if (!error) {
          settle();
          return;
        }
        const code = error.code;
        // Reason codes come as numbers; MQTT.js's own errors ("Connection closed") are about the connection.
        if (typeof code === 'number' && code >= 0x80) settle(new MqttRefusal(code));
        else settle(this.#lostReason ?? connectionLostError(this.#safeUrl, describe(error), error));
      });
    });
    if (this.#lostReason) settle(this.#lostReason);
    return {
      written,
      answered,
      get sent() {
        return sent;
      },
    };
  }

  /** Takes an inflight slot, waiting in line for one; false when the connection ended first. */
  #acquire(): Promise<boolean> {
    if (this.#lostReason) return Promise.resolve(false);
    if (this.#inflight < this.#window && this.#waiting.length === 0) {
      this.#inflight++;
      return Promise.resolve(true);
    }
    return new Promise<boolean>((resolve) =>
      this.#waiting.push(() => {
        this.#inflight++;
        resolve(true);
      }),
    );
  }

  #release(): void {
    this.#inflight--;
    if (this.#lostReason) return;
    const next = this.#waiting.shift();
    next?.();
  }

  /** Settles everything waiting with `reason`, once. */
  #end(reason: Error): void {
    if (this.#lostReason) return;
    this.#lostReason = reason;
    this.#endedController.abort(reason);
    for (const settle of [...this.#pending]) settle(reason);
    // Waiters for a slot wake up and find the connection gone (their requests are settled).
    for (const wake of this.#waiting.splice(0)) wake();
  }

  /** Drops the connection at once (the socket is destroyed); everything waiting is lost. */
  destroy(reason: Error): void {
    this.#end(reason);
    this.#client.end(true, {}, () => undefined);
  }

  /** DISCONNECT and close (at most 2 s, then the socket is destroyed). Everything still waiting is lost. */
  async close(reason: Error): Promise<void> {
    if (!this.open) {
      this.#client.end(true, {}, () => undefined);
      return;
    }
    this.#end(reason);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#client.end(true, {}, () => undefined);
        resolve();
      }, 2000);
      this.#client.end(false, { reasonCode: 0 }, () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
