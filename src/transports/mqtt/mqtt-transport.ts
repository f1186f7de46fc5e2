import { TransportError } from '../../core/errors/transport-error.js';
import type { PublishOptions, PublishOutcome, Transport } from '../../core/ports.js';
import type { OutboxMessage } from '../../core/types.js';
import type { MqttConnection } from './mqtt-connection.js';
import { closedError, connectionLostError, probeAbortedError, publishAbortedError } from './mqtt-errors.js';
import {
  resolveMqttOptions,
  type MqttTransportOptions,
  type ResolvedMqttTransportOptions,
} from './mqtt-options.js';
import { publishBatch, settledBefore } from './mqtt-publish.js';
import { MqttSession, noop } from './mqtt-session.js';

/**
 * Publishes outbox messages to an MQTT 5 broker (Mosquitto, EMQX, HiveMQ…) with MQTT.js: each
 * message a PUBLISH with QoS 1 (or 2), never retained, to the topic name its topic maps to
 * (`order.created` → `order/created` by default); reported `ok` only at the broker's PUBACK
 * (QoS 1) or PUBCOMP (QoS 2). The message id, topic, key, type, attempt and creation time travel
 * as `mailroom-*` user properties beside the user's headers; the content type as the MQTT 5
 * content type.
 *
 * Many PUBLISH packets are in flight at once (up to `maxInflight` and the broker's Receive
 * Maximum). MQTT.js's own reconnect and offline queue are off: when the connection is lost,
 * messages without an acknowledgement report `unavailable` at once and the next `publish` opens a
 * new connection (with backoff after failed attempts). A PUBACK/PUBREC reason code of 0x80 or
 * above is `permanent` or `retry` by the table in docs/transports/mqtt.md.
 *
 * @example
 * ```ts
 * const transport = new MqttTransport({ url: 'mqtt://relay:s3cret@localhost:1883', prefix: 'shop/' });
 * const relay = new Relay({ store, transport });
 * await relay.start();
 * ```
 */
export class MqttTransport implements Transport {
  readonly name = 'mqtt';
  /**
   * One connection, whose PUBLISH packets MQTT.js writes in call order (the inflight window hands
   * out slots first come, first served) and the broker reads in order: when the broker took a
   * message of a call, it got every earlier one first, and took it unless it refused it with a
   * reason code. The relay then batches runs of a key's messages. Subscribers see one topic's
   * messages from one publisher in that order (MQTT 5 §4.6, "Ordered Topic"); a key's messages
   * on different topics have no order across topics for a subscriber, as with any broker.
   */
  readonly ordering = true;
  readonly #options: Readonly<ResolvedMqttTransportOptions>;
  readonly #session: MqttSession;
  #closing: Promise<void> | undefined;
  readonly #inFlight = new Set<Promise<unknown>>();

  constructor(options: MqttTransportOptions) {
    this.#options = Object.freeze(resolveMqttOptions(options));
    this.#session = new MqttSession(this.#options);
  }

  /** True while the connection is open. */
  get connected(): boolean {
    return this.#session.current !== undefined;
  }

  /**
   * The limit a PUBLISH packet is checked against: the broker's Maximum Packet Size while
   * connected to a broker that announced one, else `maxPacketBytes`.
   */
  get maxPacketBytes(): number {
    return this.#session.current?.maxPacketBytes ?? this.#options.maxPacketBytes;
  }

  /**
   * Connects (CONNECT with clean start, CONNACK). Idempotent; reopens a closed transport. Throws a
   * {@link TransportError}: `unreachable`, `auth_failed`, `not_mqtt5`, `connect_refused`.
   */
  async start(): Promise<void> {
    if (this.#closing) {
      await this.#closing;
      this.#closing = undefined;
      this.#session.reopen();
    }
    await this.#session.open(true);
  }

  /**
   * Resolves when the connection is open, connecting at once when needed. Throws a
   * {@link TransportError}: the connect error, `closed`, or `probe_aborted` when `signal` aborts.
   */
  async probe(options: PublishOptions = {}): Promise<void> {
    const { signal } = options;
    const { safeUrl } = this.#options.endpoint;
    if (this.#session.closed) throw closedError(safeUrl);
    if (signal?.aborted) throw probeAbortedError(safeUrl, signal);
    const opening = this.#session.open(true);
    opening.catch(noop);
    if (signal && !(await settledBefore(opening, signal))) throw probeAbortedError(safeUrl, signal);
    await opening;
  }

  /**
   * Publishes the batch pipelined and waits for each acknowledgement. Never throws; one outcome
   * per message, in order. When `signal` aborts first, resolves at once: messages without an
   * acknowledgement report `unavailable` (`publish_timeout`) and the connection is dropped, so
   * none is sent or acknowledged after its outcome was reported.
   */
  publish(messages: readonly OutboxMessage[], options: PublishOptions = {}): Promise<PublishOutcome[]> {
    if (messages.length === 0) return Promise.resolve([]);
    const call = this.#publish(messages, options.signal);
    this.#inFlight.add(call);
    void call.then(() => this.#inFlight.delete(call));
    return call;
  }

  /**
   * Waits up to `closeTimeoutMs` for batches in flight, then closes the connection (DISCONNECT, at
   * most 2 s, then the socket is destroyed). Idempotent. Messages still without an acknowledgement
   * then report `unavailable`.
   */
  close(): Promise<void> {
    this.#closing ??= this.#session.close(async () => {
      if (this.#inFlight.size === 0) return;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.allSettled([...this.#inFlight]),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, this.#options.closeTimeoutMs))),
      ]);
      clearTimeout(timer);
    });
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #publish(
    messages: readonly OutboxMessage[],
    signal: AbortSignal | undefined,
  ): Promise<PublishOutcome[]> {
    const { safeUrl } = this.#options.endpoint;
    if (this.#session.closed) {
      const error = closedError(safeUrl);
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    const opening = this.#session.open(false);
    opening.catch(noop);
    if (signal && !(await settledBefore(opening, signal))) {
      return messages.map((message) => ({
        status: 'unavailable',
        error: publishAbortedError(safeUrl, message, signal, 'connecting'),
      }));
    }
    let connection: MqttConnection;
    try {
      connection = await opening;
    } catch (err) {
      const error = err instanceof Error ? err : new TransportError('unreachable', String(err));
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    const result = await publishBatch(connection, messages, this.#options, signal);
    // A broker that did not answer in time is not worth waiting on again, and PUBLISH packets still
    // waiting for a slot must not go out after their outcome was reported.
    if (result.unanswered && connection.open) {
      this.#session.drop(
        connection,
        connectionLostError(safeUrl, 'acknowledgements did not come in time; dropped'),
      );
    }
    return result.outcomes;
  }
}
