import { isTransportError } from '../../core/errors/transport-error.js';
import type { PublishOptions, PublishOutcome, Transport } from '../../core/ports.js';
import type { OutboxMessage } from '../../core/types.js';
import {
  classifyKafkaError,
  closedError,
  heldBackError,
  probeAbortedError,
  publishTimeoutError,
  sendFailedError,
  unreachableError,
} from './kafka-errors.js';
import {
  resolveKafkaOptions,
  type KafkaTransportOptions,
  type ResolvedKafkaTransportOptions,
} from './kafka-options.js';
import {
  createKafkaProducer,
  type KafkaProducerLike,
  type KafkaRecord,
  type KafkaSendBatch,
} from './kafka-producer.js';
import { recordOf } from './kafka-wire.js';

/** A message ready to send: where it sits in the call, its Kafka topic and record. */
interface Prepared {
  index: number;
  message: OutboxMessage;
  topic: string;
  record: KafkaRecord;
}

const noop = (): void => {};

/**
 * Publishes outbox messages to Apache Kafka with kafkajs: an idempotent producer (one request in
 * flight per broker), `acks: -1` so that a record counts as written only once every in-sync
 * replica has it, the message key as the record key (one key, one partition, in order), the
 * payload as the value, and the id, topic, type, content type, attempt and creation time as
 * headers beside the user's. A message is `ok` only once the brokers acknowledged its record.
 *
 * Broker outages (no connection, requests timing out, leaders moving) report `unavailable`.
 * Records the brokers refuse (too large, an invalid topic, no write permission) are `permanent`;
 * other broker errors `retry`. After any send that failed or got no answer, the producer is
 * disconnected and the next call builds a new one (a new producer id: see `#retire`).
 * docs/transports/kafka.md has the table, and says what has and has not been tested.
 *
 * @example
 * ```ts
 * const transport = new KafkaTransport({ url: 'kafka://localhost:9092', topicPrefix: 'shop.' });
 * await transport.start();
 * const relay = new Relay({ store, transport });
 * ```
 */
export class KafkaTransport implements Transport {
  readonly name = 'kafka';
  /**
   * One call's records go out in one `sendBatch`: a partition's records in array order in one
   * record batch, which the broker appends whole or not at all, and the idempotent producer keeps
   * retries from reordering. A key's records share a partition, so a key's later message is never
   * taken without its earlier ones; when a call falls back to sending one by one, a key whose
   * message failed has its later messages held back.
   */
  readonly ordering = true;
  // Private: the endpoint holds the SASL password, and public fields end up in logs.
  readonly #options: Readonly<ResolvedKafkaTransportOptions>;
  /** Builds the producer: the given function, the given producer, or one from the URL. */
  readonly #build: () => Promise<KafkaProducerLike>;
  #producer: KafkaProducerLike | undefined;
  #connected = false;
  #connecting: Promise<void> | undefined;
  #dropping: Promise<void> | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;
  readonly #inFlight = new Set<Promise<unknown>>();

  constructor(options: KafkaTransportOptions) {
    this.#options = Object.freeze(resolveKafkaOptions(options));
    const given = this.#options.producer;
    this.#build =
      typeof given === 'function'
        ? async () => given()
        : given !== undefined
          ? async () => given
          : () => createKafkaProducer(this.#options);
  }

  /** True while the producer is connected. */
  get connected(): boolean {
    return this.#connected;
  }

  /**
   * Connects the producer (kafkajs loads the cluster's metadata). Idempotent, also concurrently;
   * reopens a closed transport. Throws a TransportError `unreachable` naming the brokers.
   */
  async start(): Promise<void> {
    if (this.#closing) {
      await this.#closing;
      this.#closing = undefined;
      this.#closed = false;
    }
    await this.#connect();
  }

  /**
   * Resolves once the producer is connected, connecting when needed. Throws a TransportError:
   * `unreachable`, `closed`, or `probe_aborted` when `signal` aborts first.
   */
  async probe(options: PublishOptions = {}): Promise<void> {
    const { signal } = options;
    const where = this.#options.where;
    if (this.#closed) throw closedError(where);
    if (signal?.aborted) throw probeAbortedError(where);
    const connecting = this.#connect();
    connecting.catch(noop);
    if (signal && !(await settledBefore(connecting, signal))) throw probeAbortedError(where);
    await connecting;
  }

  /**
   * Sends the batch in one `sendBatch` and waits for the brokers' acknowledgement. Never throws;
   * one outcome per message, in order. Messages the transport refuses itself (an illegal topic
   * name, too large, a header that cannot be encoded) are `permanent` and not sent.
   */
  publish(messages: readonly OutboxMessage[], options: PublishOptions = {}): Promise<PublishOutcome[]> {
    if (messages.length === 0) return Promise.resolve([]);
    const call = this.#publish(messages, options.signal);
    this.#inFlight.add(call);
    void call.finally(() => this.#inFlight.delete(call));
    return call;
  }

  /**
   * Waits up to `closeTimeoutMs` for publish calls in flight, then disconnects the producer.
   * Idempotent. Publish calls after it report `unavailable` (`closed`) until `start()`.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      if (this.#inFlight.size > 0) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          Promise.allSettled([...this.#inFlight]),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, this.#options.closeTimeoutMs))),
        ]);
        clearTimeout(timer);
      }
      await this.#connecting?.catch(noop);
      await this.#dropping;
      const producer = this.#producer;
      this.#connected = false;
      // start() builds a new one: a new producer id, sequences from zero.
      this.#producer = undefined;
      if (producer !== undefined) await producer.disconnect().catch(noop);
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #connect(): Promise<void> {
    if (this.#connected) return Promise.resolve();
    this.#connecting ??= (async () => {
      const where = this.#options.where;
      try {
        await this.#dropping;
        // A publish still running when close() gave up waiting must not connect again.
        if (this.#closed) throw closedError(where);
        this.#producer ??= await this.#build();
        await this.#producer.connect();
        this.#connected = true;
      } catch (err) {
        throw isTransportError(err) ? err : unreachableError(where, err);
      } finally {
        this.#connecting = undefined;
      }
    })();
    return this.#connecting;
  }

  /**
   * Gives up the producer after a send that failed (or got no answer): it is disconnected, and
   * the next send builds a new one. kafkajs rolls a failed send's sequence numbers back, so the
   * same producer would number the next records as the failed ones; if the brokers had written
   * those, they would take the new records for a retry and acknowledge them unwritten. A new
   * producer has a new producer id, so its records are never taken for another's.
   */
  #retire(producer: KafkaProducerLike | undefined): void {
    // Only the producer that failed: another call may have built its successor already.
    if (producer === undefined || producer !== this.#producer) return;
    this.#producer = undefined;
    this.#connected = false;
    const dropping: Promise<void> = (this.#dropping ?? Promise.resolve())
      .then(() => producer.disconnect())
      .catch(noop)
      .then(() => {
        if (this.#dropping === dropping) this.#dropping = undefined;
      });
    this.#dropping = dropping;
  }

  async #publish(
    messages: readonly OutboxMessage[],
    signal: AbortSignal | undefined,
  ): Promise<PublishOutcome[]> {
    const { where, topicPrefix, maxMessageBytes, publishTimeoutMs } = this.#options;
    if (this.#closed) {
      const error = closedError(where);
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    const outcomes = new Array<PublishOutcome>(messages.length);
    const prepared: Prepared[] = [];
    for (const [index, message] of messages.entries()) {
      const mapped = recordOf(message, topicPrefix, maxMessageBytes);
      if ('error' in mapped) outcomes[index] = { status: 'permanent', error: mapped.error };
      else prepared.push({ index, message, topic: mapped.topic, record: mapped.record });
    }
    if (prepared.length > 0) {
      const deadline = new AbortController();
      const timer = setTimeout(() => deadline.abort(), publishTimeoutMs);
      const stop = signal ? AbortSignal.any([signal, deadline.signal]) : deadline.signal;
      try {
        const sent = await this.#sendAll(prepared, stop, signal);
        prepared.forEach((p, i) => (outcomes[p.index] = sent[i] as PublishOutcome));
      } finally {
        clearTimeout(timer);
      }
    }
    return outcomes;
  }

  /** Outcomes of `prepared`, in its order: one `sendBatch`, or one by one after a refusal. */
  async #sendAll(
    prepared: Prepared[],
    stop: AbortSignal,
    signal: AbortSignal | undefined,
  ): Promise<PublishOutcome[]> {
    const timedOut = this.#timedOut(signal);
    const result = await this.#send(prepared, stop);
    if (result === 'ok') return prepared.map(() => ({ status: 'ok' }));
    if (result === 'stopped') return prepared.map(timedOut);
    if ('unreachable' in result)
      return prepared.map(() => ({ status: 'unavailable', error: result.unreachable }));
    const kind = classifyKafkaError(result.error);
    if (kind !== 'permanent' || prepared.length === 1) {
      return prepared.map((p) => this.#failed(p, result.error, kind));
    }
    return this.#oneByOne(prepared, stop, timedOut);
  }

  /**
   * After a refusal of a multi-message call: kafkajs names no culprit, so each message is sent on
   * its own, in order, to give the refusal to the one it was about. Messages of the call that the
   * brokers had taken may be written twice (their outcome was not `ok`, consumers dedupe on
   * `mailroom-id`). A key whose message failed (other than refused) holds back its later ones,
   * which would otherwise overtake it.
   */
  async #oneByOne(
    prepared: Prepared[],
    stop: AbortSignal,
    timedOut: (p: Prepared) => PublishOutcome,
  ): Promise<PublishOutcome[]> {
    const outcomes: PublishOutcome[] = [];
    const failedKeys = new Map<string, OutboxMessage>();
    for (const [i, p] of prepared.entries()) {
      const keyId = p.message.key === null ? undefined : `${p.topic}\u0000${p.message.key}`;
      const earlier = keyId === undefined ? undefined : failedKeys.get(keyId);
      if (earlier !== undefined) {
        outcomes.push({ status: 'retry', error: heldBackError(p.message, earlier) });
        continue;
      }
      const result = await this.#send([p], stop);
      if (result === 'ok') {
        outcomes.push({ status: 'ok' });
        continue;
      }
      const rest = prepared.slice(i);
      if (result === 'stopped') return [...outcomes, ...rest.map(timedOut)];
      if ('unreachable' in result) {
        return [
          ...outcomes,
          ...rest.map((): PublishOutcome => ({ status: 'unavailable', error: result.unreachable })),
        ];
      }
      const kind = classifyKafkaError(result.error);
      if (kind === 'unavailable')
        return [...outcomes, ...rest.map((q) => this.#failed(q, result.error, kind))];
      outcomes.push(this.#failed(p, result.error, kind));
      if (kind === 'retry' && keyId !== undefined) failedKeys.set(keyId, p.message);
    }
    return outcomes;
  }

  #timedOut(signal: AbortSignal | undefined): (p: Prepared) => PublishOutcome {
    const { where, publishTimeoutMs } = this.#options;
    return (p) => ({
      status: 'unavailable',
      error: publishTimeoutError(where, p.message, signal?.aborted ? 'aborted' : 'timeout', publishTimeoutMs),
    });
  }

  #failed(p: Prepared, err: unknown, kind: 'unavailable' | 'permanent' | 'retry'): PublishOutcome {
    return { status: kind, error: sendFailedError(this.#options.where, p.message, p.topic, err, kind) };
  }

  /**
   * Connects when needed, then one `sendBatch` of `prepared`, grouped by topic in order of first
   * appearance. A send that fails or gets no answer before `stop` retires the producer.
   */
  async #send(
    prepared: Prepared[],
    stop: AbortSignal,
  ): Promise<'ok' | 'stopped' | { error: unknown } | { unreachable: Error }> {
    const connecting = this.#connect();
    connecting.catch(noop);
    if (!(await settledBefore(connecting, stop))) return 'stopped';
    try {
      await connecting;
    } catch (err) {
      return { unreachable: err instanceof Error ? err : unreachableError(this.#options.where, err) };
    }
    const producer = this.#producer as KafkaProducerLike;
    const byTopic = new Map<string, KafkaRecord[]>();
    for (const p of prepared) {
      const list = byTopic.get(p.topic);
      if (list) list.push(p.record);
      else byTopic.set(p.topic, [p.record]);
    }
    const batch: KafkaSendBatch = {
      topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
      acks: -1,
      timeout: this.#options.requestTimeoutMs,
    };
    let sending: Promise<unknown>;
    try {
      sending = producer.sendBatch(batch);
    } catch (err) {
      this.#retire(producer);
      return { error: err };
    }
    sending.catch(noop);
    if (!(await settledBefore(sending, stop))) {
      // No answer: the records may be written or not; a new producer numbers the next ones.
      this.#retire(producer);
      return 'stopped';
    }
    try {
      await sending;
      return 'ok';
    } catch (err) {
      this.#retire(producer);
      return { error: err };
    }
  }
}

/** True when `promise` settled (either way) before `signal` aborted; false otherwise. Never rejects. */
function settledBefore(promise: Promise<unknown>, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise<boolean>((resolve) => {
    const onAbort = () => resolve(false);
    signal.addEventListener('abort', onAbort, { once: true });
    const settle = () => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    };
    promise.then(settle, settle);
  });
}
