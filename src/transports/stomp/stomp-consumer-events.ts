import type { ConsumerEvents } from '../../consumer/consumer-events.js';

/**
 * Events a {@link StompConsumer} emits: every consumer's ({@link ConsumerEvents}), naming the
 * destination consumed and the dead-letter destination (dead letters are sent with a RECEIPT,
 * then acknowledged). With `transacted`, `consumer:message:handled` follows the commit of the
 * broker transaction holding the outputs and the acknowledgement. Listeners that throw are
 * logged and ignored.
 */
export type StompConsumerEvents = ConsumerEvents<{ destination: string }, { deadLetterDestination: string }>;
