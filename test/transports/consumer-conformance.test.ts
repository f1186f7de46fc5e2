// Consumers through runConsumerConformance (mailroom/testkit), with their defaults: RabbitMQ,
// STOMP (RabbitMQ's plugin and ActiveMQ) and MQTT (Mosquitto). NATS JetStream, Redis Streams
// and SQS (a fake server; a real one with AWS_ENDPOINT_URL) run it from files of their own
// (*-consumer-conformance.test.ts). Not WebhookConsumer: senders push to it and retry
// themselves, so "another consumer gets what was not acknowledged" is the sender's resend,
// covered in webhook-consumer.test.ts.
import { after } from 'node:test';

import { runConsumerConformance } from '../../src/testkit/consumer-conformance.js';
import { closedPort } from '../../src/testkit/conformance-support.js';
import { RabbitMqConsumer, RabbitMqTransport } from '../../src/transports/rabbitmq/index.js';
import { StompConsumer, StompTransport } from '../../src/transports/stomp/index.js';
import { MqttConsumer, MqttTransport } from '../../src/transports/mqtt/index.js';
import { endSession, mapped, MQTT_URL, subscribe, type MqttSubscriber } from './mqtt-helpers.js';
import { RABBITMQ_URL } from './rabbitmq-helpers.js';
import { BROKERS, deleteRabbitQueues, uniqueName } from './stomp-helpers.js';

/** Queues (and exchanges, as queues cannot be told apart here) to remove from RabbitMQ afterwards. */
const rabbitQueues = new Set<string>();
after(() => deleteRabbitQueues(rabbitQueues));

const exchange = uniqueName('mr-conformance');
runConsumerConformance('rabbitmq', {
  createTransport: async () => new RabbitMqTransport({ url: RABBITMQ_URL, exchange }),
  createConsumer: async (topic, options) => {
    const queue = `q.${topic}`;
    rabbitQueues.add(queue).add(`${queue}.dead`);
    return new RabbitMqConsumer({
      url: RABBITMQ_URL,
      exchange,
      queue,
      bindings: [topic],
      ...options,
    } as never);
  },
  createUnreachable: async (topic, options) =>
    new RabbitMqConsumer({
      url: `amqp://guest:guest@127.0.0.1:${await closedPort()}`,
      exchange,
      queue: `q.${topic}`,
      bindings: [topic],
      ...options,
    } as never),
});

for (const broker of BROKERS) {
  runConsumerConformance(`stomp (${broker.name})`, {
    createTransport: async () => new StompTransport({ url: broker.url }),
    createConsumer: async (topic, options) => {
      if (broker.name === 'rabbitmq') rabbitQueues.add(topic).add(`${topic}.dead`);
      return new StompConsumer({ url: broker.url, destination: `/queue/${topic}`, ...options } as never);
    },
    createUnreachable: async (topic, options) =>
      new StompConsumer({
        url: `stomp://guest:guest@127.0.0.1:${await closedPort()}`,
        destination: `/queue/${topic}`,
        ...options,
      } as never),
  });
}

/** Persistent sessions the MQTT consumers leave, and the dead-letter readers, ended afterwards. */
const mqttSessions = new Set<string>();
const deadReaders: MqttSubscriber[] = [];
after(async () => {
  for (const reader of deadReaders) await reader.close();
  for (const clientId of mqttSessions) await endSession(MQTT_URL, clientId);
});
runConsumerConformance('mqtt', {
  createTransport: async () => new MqttTransport({ url: MQTT_URL }),
  createConsumer: async (topic, options) => {
    // Someone reads the dead letters (as in production): Mosquitto drops a message nobody
    // subscribes to, and the consumer keeps such a dead letter unacknowledged by default.
    if (!deadReaders.some((r) => (r as { topic?: string }).topic === topic)) {
      const reader = Object.assign(await subscribe(MQTT_URL, [`${mapped(topic)}/dead`]), { topic });
      deadReaders.push(reader);
    }
    const consumer = new MqttConsumer({
      url: MQTT_URL,
      topic,
      group: `g-${topic}`,
      instance: 'a',
      ...options,
    } as never);
    mqttSessions.add(consumer.clientId);
    return consumer;
  },
  createUnreachable: async (topic, options) =>
    new MqttConsumer({
      url: `mqtt://127.0.0.1:${await closedPort()}`,
      topic,
      group: 'g',
      ...options,
    } as never),
});
