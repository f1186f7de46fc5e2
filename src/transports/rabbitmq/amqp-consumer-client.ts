/**
 * The slice of an AMQP 0-9-1 client that {@link RabbitMqConsumer} uses: a channel to consume
 * from, and a confirm channel for dead letters. amqplib's promise API satisfies it as is, like
 * `amqp-client.ts` for the transport, so Mailroom never imports amqplib's types.
 *
 * @module
 */
import type { AmqpChannel } from './amqp-client.js';

/** One message as the broker delivered it (amqplib's `ConsumeMessage`). */
export interface AmqpDelivery {
  content: Buffer;
  fields: {
    deliveryTag: number;
    redelivered: boolean;
    exchange: string;
    routingKey: string;
  };
  /** AMQP basic properties; anything may be missing when another client published the message. */
  properties: {
    messageId?: unknown;
    contentType?: unknown;
    contentEncoding?: unknown;
    type?: unknown;
    timestamp?: unknown;
    correlationId?: unknown;
    replyTo?: unknown;
    appId?: unknown;
    priority?: unknown;
    headers?: Record<string, unknown> | undefined;
  };
}

/** Properties of a dead letter as republished (a subset of amqplib's `Options.Publish`). */
export interface AmqpDeadLetterProperties {
  /** Routes a dead letter back when its queue does not exist, instead of dropping it. */
  mandatory: true;
  persistent: true;
  messageId?: string;
  contentType?: string;
  contentEncoding?: string;
  type?: string;
  timestamp?: number;
  correlationId?: string;
  replyTo?: string;
  appId?: string;
  priority?: number;
  headers: Record<string, unknown>;
}

/** What the broker says when it returns a message with `basic.return`. */
export interface AmqpReturn {
  fields: { replyCode?: number; replyText?: string };
}

/** The channel dead letters are published on, in confirm mode (amqplib's `ConfirmChannel`). */
export interface AmqpDeadLetterChannel {
  /** `callback` runs once the broker confirmed (`err` null), nacked, or the channel closed. */
  publish(
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: AmqpDeadLetterProperties,
    callback: (err: unknown) => void,
  ): boolean;
  close(): Promise<void>;
  on(event: 'return', listener: (message: AmqpReturn) => void): unknown;
  on(event: 'close', listener: () => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
}

/** The channel messages are consumed from (amqplib's `Channel`). */
export interface AmqpConsumeChannel {
  assertExchange(exchange: string, type: string, options: { durable: boolean }): Promise<unknown>;
  assertQueue(
    queue: string,
    options: { durable: boolean; arguments?: Record<string, unknown> },
  ): Promise<unknown>;
  bindQueue(queue: string, exchange: string, pattern: string): Promise<unknown>;
  /** `basic.qos` for the consumers that follow on this channel. */
  prefetch(count: number): Promise<unknown>;
  /** `onMessage` gets `null` when the broker cancels the consumer (its queue was deleted…). */
  consume(
    queue: string,
    onMessage: (message: AmqpDelivery | null) => void,
    options: { noAck: false },
  ): Promise<{ consumerTag: string }>;
  cancel(consumerTag: string): Promise<unknown>;
  /** Throws when the channel is closed. */
  ack(message: AmqpDelivery): void;
  close(): Promise<void>;
  on(event: 'close', listener: () => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
}

/**
 * True when the consume channel can also publish (amqplib's `Channel` can), which transacted
 * receive needs: outputs and the acknowledgement share the channel's transaction.
 */
export function canPublish(channel: AmqpConsumeChannel): channel is AmqpConsumeChannel & AmqpChannel {
  const c = channel as Partial<Record<keyof AmqpChannel, unknown>>;
  return typeof c.publish === 'function' && typeof c.removeListener === 'function';
}

/** An open connection (amqplib's `ChannelModel`). */
export interface AmqpConsumerConnection {
  /**
   * amqplib's connection object underneath; when it holds the socket as `stream`, the consumer
   * destroys that socket if the broker does not answer a close.
   */
  readonly connection?: object;
  createChannel(): Promise<AmqpConsumeChannel>;
  createConfirmChannel(): Promise<AmqpDeadLetterChannel>;
  close(): Promise<void>;
  on(event: 'close', listener: (err?: Error) => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
}

/**
 * Opens a connection for a consumer. The default is amqplib's `connect`, loaded on first use.
 *
 * @example
 * ```ts
 * import * as amqplib from 'amqplib';
 * new RabbitMqConsumer({ …, connect: (url, socketOptions) => amqplib.connect(url, socketOptions) });
 * ```
 */
export type AmqpConsumerConnect = (
  url: string,
  socketOptions: Record<string, unknown>,
) => Promise<AmqpConsumerConnection>;

/** True when `value` has what a consumer needs (the transport's connections need less). */
export function isConsumerConnection(value: unknown): value is AmqpConsumerConnection {
  const v = value as Partial<Record<keyof AmqpConsumerConnection, unknown>> | null;
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof v.createChannel === 'function' &&
    typeof v.createConfirmChannel === 'function' &&
    typeof v.close === 'function' &&
    typeof v.on === 'function'
  );
}
