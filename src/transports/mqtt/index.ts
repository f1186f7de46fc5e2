/**
 * The MQTT 5 transport (`mailroom/mqtt`): Mosquitto, EMQX, HiveMQ and other MQTT 5 brokers, with
 * MQTT.js (`npm install mqtt`). docs/transports/mqtt.md.
 *
 * @module
 */
export { MqttTransport } from './mqtt-transport.js';
export {
  resolveMqttOptions,
  resolveMqttUrl,
  MQTT_MAX_PACKET_BYTES,
  type MqttTransportOptions,
  type ResolvedMqttTransportOptions,
  type MqttTopicMapper,
  type MqttEndpoint,
} from './mqtt-options.js';
export {
  topicNameFor,
  topicNameProblem,
  mqttStringProblem,
  escapeMqttString,
  unescapeMqttString,
} from './mqtt-topic.js';
export {
  PUBLISH_REASON_CODES,
  classifyReasonCode,
  type ReasonClass,
  type ReasonCodeInfo,
} from './mqtt-reason-codes.js';
export {
  decodeMqttMessage,
  userPropertiesOf,
  publicationOf,
  publishPacketBytes,
  ID_HEADER,
  TOPIC_HEADER,
  KEY_HEADER,
  TYPE_HEADER,
  ATTEMPT_HEADER,
  CREATED_AT_HEADER,
  ESCAPED_HEADER,
  type DecodedMqttMessage,
  type MqttPublication,
} from './mqtt-wire.js';
export { MqttConsumer } from './mqtt-consumer.js';
export {
  resolveMqttConsumerOptions,
  type MqttConsumerOptions,
  type MqttConsumerBaseOptions,
  type ResolvedMqttConsumerOptions,
  type ConsumerContext,
  type ConsumerHandler,
  type ConsumerInbox,
  type ConsumerRetryOptions,
} from './mqtt-consumer-options.js';
export type { MqttConsumerEvents } from './mqtt-consumer-events.js';
export {
  ERROR_PROPERTY,
  FAILED_ATTEMPTS_PROPERTY,
  DEAD_AT_PROPERTY,
  DEAD_REASON_PROPERTY,
  DEAD_QUEUE_PROPERTY,
  DEAD_TOPIC_PROPERTY,
} from './mqtt-consumer-session.js';
