// Every consumer through runConsumerConformance (mailroom/testkit): the RabbitMQ consumer, and
// the STOMP consumer on RabbitMQ's STOMP plugin and on ActiveMQ. The consumers of issue 17's
// transports run it from their own test files.
import { after } from 'node:test';

import { runConsumerConformance } from '../../src/testkit/consumer-conformance.js';
import { closedPort } from '../../src/testkit/conformance-support.js';
import { RabbitMqConsumer, RabbitMqTransport } from '../../src/transports/rabbitmq/index.js';
import { StompConsumer, StompTransport } from '../../src/transports/stomp/index.js';
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
