// RedisConsumer through runConsumerConformance (mailroom/testkit), published by
// RedisStreamsTransport, against the local Redis. Every key of the run has one prefix, deleted
// afterwards. claimIdleMs is short: a message the first consumer left pending reaches the next
// one by XAUTOCLAIM.
import { after } from 'node:test';

import { runConsumerConformance } from '../../src/testkit/consumer-conformance.js';
import { closedPort } from '../../src/testkit/conformance-support.js';
import { RedisConsumer, RedisStreamsTransport } from '../../src/transports/redis/index.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './redis-helpers.js';

const prefix = uniquePrefix();
const stream = `${prefix}{topic}`;
after(() => deleteKeys(prefix));

runConsumerConformance('redis', {
  createTransport: async () => new RedisStreamsTransport({ url: REDIS_URL, stream }),
  createConsumer: async (topic, options) =>
    new RedisConsumer({
      url: REDIS_URL,
      stream,
      topic,
      group: 'conformance',
      claimIdleMs: 300,
      ...options,
    } as never),
  createUnreachable: async (topic, options) =>
    new RedisConsumer({
      url: `redis://127.0.0.1:${await closedPort()}`,
      stream,
      topic,
      group: 'conformance',
      ...options,
    } as never),
  redeliveryTimeoutMs: 5000,
});
