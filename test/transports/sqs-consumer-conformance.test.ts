// SqsConsumer through runConsumerConformance (mailroom/testkit), published by SqsTransport. As in
// sqs-consumer.test.ts: against the fake SQS server of sqs-fake.ts (no SQS endpoint runs on this
// machine or in this project's CI), or against AWS_ENDPOINT_URL when it is set. Standard queues:
// a FIFO queue would drop the republished copy the inbox check needs (its deduplication id is
// the message id); real standard queues do not promise order, which the key-order check expects.
import { after, before } from 'node:test';

import { runConsumerConformance } from '../../src/testkit/consumer-conformance.js';
import { closedPort } from '../../src/testkit/conformance-support.js';
import { awsNameFor, SqsConsumer, SqsTransport } from '../../src/transports/aws/index.js';
import { FakeSqs } from './sqs-fake.js';

const realEndpoint = process.env['AWS_ENDPOINT_URL'] || undefined;
const sdk = await import('@aws-sdk/client-sqs');
let fake: FakeSqs | undefined;
let endpoint = realEndpoint ?? '';
let admin: InstanceType<typeof sdk.SQSClient> | undefined;
const created = new Map<string, Promise<string[]>>();
const savedEnv: Record<string, string | undefined> = {};

before(async () => {
  if (realEndpoint === undefined) {
    fake = await FakeSqs.start();
    endpoint = fake.url;
    const env = {
      AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE',
      AWS_SECRET_ACCESS_KEY: 'fake-secret-for-tests',
      AWS_REGION: 'eu-west-1',
    };
    for (const [name, value] of Object.entries(env)) {
      savedEnv[name] = process.env[name];
      process.env[name] = value;
    }
  }
  admin = new sdk.SQSClient({ endpoint });
});

after(async () => {
  for (const urls of created.values()) {
    for (const url of await urls.catch(() => [])) {
      await admin?.send(new sdk.DeleteQueueCommand({ QueueUrl: url })).catch(() => {});
    }
  }
  admin?.destroy();
  await fake?.close();
  for (const [name, value] of Object.entries(savedEnv)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

const TEMPLATE = 'mr-{topic}';

/** The topic's queue and its dead-letter queue, created once. */
function ensureQueues(topic: string): Promise<string[]> {
  const name = awsNameFor(TEMPLATE, topic);
  let urls = created.get(name);
  if (urls === undefined) {
    urls = Promise.all(
      [name, `${name}-dead`].map(async (queue) => {
        const answer = await admin!.send(new sdk.CreateQueueCommand({ QueueName: queue }));
        return answer.QueueUrl!;
      }),
    );
    created.set(name, urls);
  }
  return urls;
}

runConsumerConformance('sqs', {
  createTransport: async () => new SqsTransport({ url: `sqs:///${TEMPLATE}`, endpoint }),
  createConsumer: async (topic, options) => {
    await ensureQueues(topic);
    return new SqsConsumer({
      url: `sqs:///${awsNameFor(TEMPLATE, topic)}`,
      endpoint,
      // A consumer stopped mid-run leaves its message to the next after this long.
      visibilityTimeoutSeconds: 2,
      ...options,
    } as never);
  },
  createUnreachable: async (topic, options) =>
    new SqsConsumer({
      url: `sqs://eu-west-1/${awsNameFor(TEMPLATE, topic)}`,
      endpoint: `http://127.0.0.1:${await closedPort()}`,
      ...options,
    } as never),
});
