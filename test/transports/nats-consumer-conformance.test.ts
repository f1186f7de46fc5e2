// NatsConsumer through runConsumerConformance (mailroom/testkit), published by NatsTransport,
// against the local nats-server -js. One stream of the run's own captures `<prefix>.>` (the
// dead letters `<subject>.dead` too) and is deleted afterwards. ackWaitMs is short: a message
// the first consumer left unacknowledged reaches the next one after it.
import { after, before } from 'node:test';

import { closedPort } from '../../src/testkit/conformance-support.js';
import { runConsumerConformance } from '../../src/testkit/consumer-conformance.js';
import { NatsConsumer, NatsTransport } from '../../src/transports/nats/index.js';
import { createStream, NATS_URL, uniquePrefix } from './nats-helpers.js';

const prefix = uniquePrefix();
/** The shortest duplicate window JetStream takes. */
const DUPLICATE_WINDOW_MS = 100;

/**
 * Publishes after the stream's duplicate window has passed since the last publish: the suite's
 * copy of a message (published again once the first was handled) is then stored instead of
 * being dropped by the stream's dedupe on Nats-Msg-Id, which is what the transport wants.
 */
class SpacedTransport extends NatsTransport {
  override async publish(...args: Parameters<NatsTransport['publish']>) {
    await new Promise((resolve) => setTimeout(resolve, DUPLICATE_WINDOW_MS + 50));
    return super.publish(...args);
  }
}
let stream: { drop(): Promise<void> } | undefined;
before(async () => {
  stream = await createStream([`${prefix}.>`], undefined, {
    duplicate_window: DUPLICATE_WINDOW_MS * 1_000_000,
  });
});
after(() => stream?.drop());

runConsumerConformance('nats', {
  createTransport: async () => new SpacedTransport({ url: NATS_URL, subjectPrefix: prefix }),
  createConsumer: async (topic, options) =>
    new NatsConsumer({
      url: NATS_URL,
      group: 'conformance',
      subjectPrefix: prefix,
      topic,
      ackWaitMs: 1000,
      ...options,
    } as never),
  createUnreachable: async (topic, options) =>
    new NatsConsumer({
      url: `nats://127.0.0.1:${await closedPort()}`,
      group: 'conformance',
      subjectPrefix: prefix,
      topic,
      connectTimeoutMs: 2000,
      ...options,
    } as never),
  redeliveryTimeoutMs: 5000,
});
