import type { ConsumerEvents } from '../../consumer/consumer-events.js';

/**
 * Events a {@link NatsConsumer} emits: every consumer's ({@link ConsumerEvents}), naming the
 * subject and durable consumed and the dead-letter subject (dead letters are published with a
 * PubAck, then the original is acknowledged). Listeners that throw are logged and ignored.
 */
export type NatsConsumerEvents = ConsumerEvents<
  { subject: string; durable: string },
  { deadLetterSubject: string }
>;
