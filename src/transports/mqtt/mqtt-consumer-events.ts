import type { ConsumerEvents } from '../../consumer/consumer-events.js';

/**
 * Events a {@link MqttConsumer} emits: every consumer's ({@link ConsumerEvents}), naming the
 * topic filter subscribed to (`$share/<group>/<topic name>` with a shared subscription) and the
 * client identifier of its session, and the dead-letter topic (dead letters are published at
 * QoS 1 and PUBACKed, then the original is acknowledged). Listeners that throw are logged and
 * ignored.
 */
export type MqttConsumerEvents = ConsumerEvents<
  { filter: string; clientId: string },
  { deadLetterTopic: string }
>;
