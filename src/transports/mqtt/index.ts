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
