/**
 * The slice of a kafkajs `Producer` the transport uses, and the producer it builds when none is
 * given: idempotent, one request in flight per broker, `acks: -1` on every send.
 *
 * @module
 */
import type { ResolvedKafkaTransportOptions } from './kafka-options.js';

/** One record as kafkajs takes it. */
export interface KafkaRecord {
  key: string | null;
  value: Buffer;
  headers: Record<string, string>;
}

/** The `sendBatch` argument the transport builds. */
export interface KafkaSendBatch {
  topicMessages: Array<{ topic: string; messages: KafkaRecord[] }>;
  /** -1: every in-sync replica has the record before the broker answers. */
  acks: -1;
  timeout: number;
}

/**
 * What the transport needs from a producer (kafkajs `Producer` has it): connect, disconnect, and
 * send records to several topics in one call, resolving once the brokers acknowledged them.
 */
export interface KafkaProducerLike {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  sendBatch(batch: KafkaSendBatch): Promise<unknown>;
}

/**
 * Builds a kafkajs producer for the endpoint. kafkajs is loaded here, on first use, so that
 * `mailroom/kafka` can be imported (and a producer passed in) without it.
 */
export async function createKafkaProducer(
  options: Readonly<ResolvedKafkaTransportOptions>,
): Promise<KafkaProducerLike> {
  const endpoint = options.endpoint;
  if (endpoint === undefined) throw new Error('no Kafka URL to build a producer from');
  const { Kafka, Partitioners, logLevel } = await import('kafkajs');
  const tls = endpoint.tls ? (Object.keys(options.tls).length > 0 ? options.tls : true) : undefined;
  const kafka = new Kafka({
    clientId: options.clientId,
    brokers: endpoint.brokers,
    connectionTimeout: options.connectTimeoutMs,
    requestTimeout: options.requestTimeoutMs,
    // kafkajs logs to the console by default, in its own JSON, around the CLI's one-line errors
    // and the relay's logger; the transport reports every failure through its outcomes and
    // typed errors instead, so kafkajs prints nothing.
    logLevel: logLevel.NOTHING,
    retry: { retries: options.retries },
    ...(tls === undefined ? {} : { ssl: tls }),
    ...(endpoint.sasl === undefined
      ? {}
      : {
          sasl: {
            mechanism: endpoint.sasl.mechanism,
            username: endpoint.sasl.username,
            password: endpoint.sasl.password,
          } as never,
        }),
  });
  return kafka.producer({
    // The producer id and per-partition sequence numbers make the broker drop a retried batch it
    // already appended, and refuse one that arrives out of order: retries neither duplicate nor
    // reorder records.
    idempotent: true,
    // One produce request in flight per broker connection, so that two publish calls reach a
    // partition in the order they were made.
    maxInFlightRequests: 1,
    // The Java client's murmur2 partitioning: a key lands on the same partition as from other
    // clients. Named to silence kafkajs's warning about its changed default.
    createPartitioner: Partitioners.DefaultPartitioner,
    // A topic the broker does not have is created when the broker allows it
    // (auto.create.topics.enable); otherwise the message reports `retry` until someone creates it.
    allowAutoTopicCreation: true,
    retry: { retries: options.retries },
  });
}
