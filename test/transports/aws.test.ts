// The SQS and SNS transports. No AWS endpoint (nor LocalStack or ElasticMQ) runs on this machine
// or in this project's CI: the mapping, batching, per-entry outcomes and error classification are
// tested with a stub client whose `send` records the SDK commands it gets; the real SDK client is
// tested against a small HTTP server speaking SQS's JSON protocol, found through
// AWS_ENDPOINT_URL. The conformance suites run only when AWS_ENDPOINT_URL names an endpoint.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';

import { isConfigError } from '../../src/core/errors/config-error.js';
import { isPermanentDeliveryError } from '../../src/core/errors/permanent-delivery-error.js';
import { isTransportError } from '../../src/core/errors/transport-error.js';
import type { PublishOutcome } from '../../src/core/ports.js';
import {
  runTransportConformance,
  testMessage,
  type ConformanceConsumer,
  type ReceivedMessage,
} from '../../src/testkit/transport-conformance.js';
import {
  awsNameFor,
  bodyOf,
  chunkEntries,
  classifyAwsError,
  classifyFailedEntry,
  entryOf,
  groupIdOf,
  payloadOf,
  resolveAwsUrl,
  SnsTransport,
  SqsTransport,
  type AwsClientLike,
  type AwsTransportOptions,
} from '../../src/transports/aws/index.js';

// Read before any test changes the environment.
const conformanceEndpoint = process.env['AWS_ENDPOINT_URL'];

/** An SDK-shaped service error: the SDK sets `name` from the service's code and `$metadata`. */
function sdkError(name: string, status?: number, message = `${name} happened`): Error {
  return Object.assign(new Error(message), {
    name,
    ...(status === undefined ? {} : { $metadata: { httpStatusCode: status } }),
  });
}

interface SentCommand {
  command: string;
  input: Record<string, unknown>;
}

type Entry = {
  Id: string;
  MessageBody?: string;
  Message?: string;
  MessageAttributes: Record<string, { StringValue: string }>;
  MessageGroupId?: string;
  MessageDeduplicationId?: string;
};

/**
 * A client whose `send` records each command (by class name and input) and answers with
 * `respond`: by default every entry taken, every queue found.
 */
class StubClient implements AwsClientLike {
  sent: SentCommand[] = [];
  destroyed = 0;
  respond: (command: string, input: Record<string, unknown>, call: number) => unknown = defaultAnswer;
  config: { region?: unknown } = {};

  async send(command: unknown, options?: { abortSignal?: AbortSignal }): Promise<unknown> {
    const name = (command as object).constructor.name;
    const input = (command as { input: Record<string, unknown> }).input;
    this.sent.push({ command: name, input });
    const answer = this.respond(name, input, this.sent.filter((s) => s.command === name).length);
    if (answer === 'hang') {
      return new Promise((_, reject) =>
        options?.abortSignal?.addEventListener('abort', () => reject(sdkError('AbortError')), { once: true }),
      );
    }
    await new Promise((resolve) => setImmediate(resolve));
    if (answer instanceof Error) throw answer;
    return answer;
  }

  destroy(): void {
    this.destroyed++;
  }

  batches(): Entry[][] {
    return this.sent
      .filter((s) => s.command === 'SendMessageBatchCommand' || s.command === 'PublishBatchCommand')
      .map((s) => (s.input['Entries'] ?? s.input['PublishBatchRequestEntries']) as Entry[]);
  }
}

function defaultAnswer(command: string, input: Record<string, unknown>): unknown {
  if (command === 'GetQueueUrlCommand')
    return { QueueUrl: `https://sqs.test/000000000000/${String(input['QueueName'])}` };
  const entries = (input['Entries'] ?? input['PublishBatchRequestEntries']) as Entry[] | undefined;
  if (entries)
    return { Successful: entries.map((e) => ({ Id: e.Id, MessageId: `aws-${e.Id}` })), Failed: [] };
  return {};
}

function sqs(client: StubClient, options: Partial<AwsTransportOptions> = {}): SqsTransport {
  return new SqsTransport({ url: 'sqs://eu-west-1/orders', client, ...options });
}

function statuses(outcomes: PublishOutcome[]): string[] {
  return outcomes.map((o) => o.status);
}

function errorOf(outcome: PublishOutcome | undefined): Error {
  assert.ok(outcome && outcome.status !== 'ok', `expected a failure, got ${outcome?.status}`);
  return outcome.error;
}

describe('sqs:// and sns:// URLs and options', () => {
  it('reads region, account and queue or topic name', () => {
    assert.deepEqual(resolveAwsUrl('sqs://eu-west-1/orders.fifo', 'sqs', 'SqsTransport'), {
      service: 'sqs',
      region: 'eu-west-1',
      account: undefined,
      nameTemplate: 'orders.fifo',
      safeUrl: 'sqs://eu-west-1/orders.fifo',
    });
    const other = resolveAwsUrl('sqs:///123456789012/mailroom-{topic}', 'sqs', 'SqsTransport');
    assert.equal(other.region, undefined, 'no host: the SDK chain decides');
    assert.equal(other.account, '123456789012');
    assert.equal(other.nameTemplate, 'mailroom-{topic}');
    const topic = resolveAwsUrl('sns://us-gov-west-1/123456789012/orders', 'sns', 'SnsTransport');
    assert.equal(topic.region, 'us-gov-west-1');
    assert.equal(topic.account, '123456789012');
  });

  it('refuses URLs it cannot use, naming the problem', () => {
    const cases: Array<[string, 'sqs' | 'sns', RegExp]> = [
      [
        'https://sqs.eu-west-1.amazonaws.com/123456789012/q',
        'sqs',
        /has scheme "https"; expected sqs:\/\/\[region\]/,
      ],
      ['sqs://eu-west-1/orders?region=x', 'sqs', /has a query or fragment/],
      [
        'sqs://AKIA:secret@eu-west-1/orders',
        'sqs',
        /has credentials; AWS credentials come from the SDK chain/,
      ],
      ['sqs://localhost:4566/orders', 'sqs', /host "localhost:4566", which is not an AWS region/],
      ['sqs://eu-west-1/12345/orders', 'sqs', /account "12345"; an AWS account id is 12 digits/],
      ['sqs://eu-west-1/orders.created', 'sqs', /contains "\."; SQS names take only/],
      ['sqs://eu-west-1/' + 'q'.repeat(81), 'sqs', /81 characters long; SQS allows at most 80/],
      ['sqs://eu-west-1/{topic}-{topic}', 'sqs', /'\{topic\}' more than once/],
      ['sqs://eu-west-1/a/b/c', 'sqs', /has path "\/a\/b\/c"/],
      ['sns://eu-west-1/orders', 'sns', /expected sns:\/\/\[region\]\/account-id\/topic-name/],
    ];
    for (const [url, service, pattern] of cases) {
      assert.throws(
        () => (service === 'sqs' ? new SqsTransport({ url }) : new SnsTransport({ url })),
        (err: unknown) => isConfigError(err) && pattern.test(err.message) && !err.message.includes('secret'),
        url,
      );
    }
  });

  it('refuses bad options with the key, the value and what is allowed', () => {
    assert.throws(
      () => new SnsTransport({ url: 'sns://eu-west-1/123456789012/t', maxMessageBytes: 1_048_576 }),
      /SnsTransport option maxMessageBytes must be an integer from 1024 to 262144, got 1048576/,
    );
    // SQS queues may take up to 1 MiB.
    assert.doesNotThrow(() => new SqsTransport({ url: 'sqs://eu-west-1/q', maxMessageBytes: 1_048_576 }));
    assert.throws(
      () => new SqsTransport({ url: 'sqs://eu-west-1/q', keylessGroupId: 'with space' }),
      /option keylessGroupId must be 1 to 128 printable ASCII characters/,
    );
    assert.throws(
      () => new SqsTransport({ url: 'sqs://eu-west-1/q', region: 'Europe' }),
      /option region must be an AWS region/,
    );
    assert.throws(
      () => new SqsTransport({ url: 'sqs://eu-west-1/q', queue: 'x' } as unknown as AwsTransportOptions),
      /unknown SqsTransport option "queue"/,
    );
    assert.throws(
      () => new SqsTransport({ url: 'sqs://eu-west-1/q', client: {} as AwsClientLike }),
      /option client must be an SDK client/,
    );
  });

  it('makes queue names from topics with dots turned into dashes', () => {
    assert.equal(awsNameFor('mailroom-{topic}.fifo', 'order.created'), 'mailroom-order-created.fifo');
    assert.equal(awsNameFor('orders', 'order.created'), 'orders');
  });
});

describe('SNS/SQS wire format', () => {
  it('sends UTF-8 text as it is, anything else as base64, and an empty payload as "-"', () => {
    assert.deepEqual(bodyOf(Buffer.from('{"a":"naïve ✓"}')), { body: '{"a":"naïve ✓"}' });
    const binary = Buffer.from([0, 1, 2, 255]);
    assert.deepEqual(bodyOf(binary), { body: binary.toString('base64'), encoding: 'base64' });
    // Valid UTF-8, but a control character SQS refuses.
    assert.equal(bodyOf(Buffer.from('a\u0001b')).encoding, 'base64');
    assert.deepEqual(bodyOf(Buffer.alloc(0)), { body: '-', encoding: 'empty' });
    for (const payload of [binary, Buffer.from('plain'), Buffer.alloc(0)]) {
      const { body, encoding } = bodyOf(payload);
      assert.ok(payloadOf(body, encoding).equals(payload));
    }
  });

  it('uses a key as the FIFO group when AWS takes it, else a stable hash of it', () => {
    assert.equal(groupIdOf('order-1'), 'order-1');
    assert.match(groupIdOf('ключ 🔑'), /^sha256:[0-9a-f]{64}$/);
    assert.equal(groupIdOf('ключ 🔑'), groupIdOf('ключ 🔑'));
    assert.match(groupIdOf('x'.repeat(129)), /^sha256:/);
  });

  it('carries the fields in at most 10 attributes, the user headers as one JSON attribute', () => {
    const headers = Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`x-h${i}`, `v${i}`]));
    const message = testMessage({ key: 'k', type: 'order.created', headers, payload: Buffer.alloc(0) });
    const mapped = entryOf(message, { fifo: true, keylessGroupId: undefined, maxMessageBytes: 262_144 });
    assert.ok('entry' in mapped);
    const attributes = mapped.entry.attributes;
    assert.equal(Object.keys(attributes).length, 9);
    assert.ok(Object.keys(attributes).length <= 10);
    assert.deepEqual(JSON.parse(attributes['mailroom-headers']?.StringValue ?? ''), headers);
    assert.equal(attributes['mailroom-id']?.StringValue, message.id);
    assert.equal(attributes['mailroom-key']?.StringValue, 'k');
    assert.equal(attributes['mailroom-body-encoding']?.StringValue, 'empty');
    assert.equal(mapped.entry.groupId, 'k');
    assert.equal(mapped.entry.deduplicationId, message.id);
  });

  it('refuses, as permanent, a message over maxMessageBytes counting attributes, and an empty key', () => {
    const big = testMessage({ payload: Buffer.alloc(2000, 0x61) });
    const tooLarge = entryOf(big, { fifo: false, keylessGroupId: undefined, maxMessageBytes: 2000 });
    assert.ok('error' in tooLarge && isPermanentDeliveryError(tooLarge.error));
    assert.match(tooLarge.error.message, /is \d+ bytes as SNS\/SQS count it, over maxMessageBytes of 2000/);
    const emptyKey = entryOf(testMessage({ key: '' }), {
      fifo: false,
      keylessGroupId: undefined,
      maxMessageBytes: 262_144,
    });
    assert.ok('error' in emptyKey);
    assert.match(emptyKey.error.message, /its mailroom-key is empty/);
  });

  it('splits entries into batches of 10 and under the byte limit, in order', () => {
    assert.deepEqual(
      chunkEntries(Array(25).fill(100), 262_144).map((c) => c.length),
      [10, 10, 5],
    );
    assert.deepEqual(chunkEntries([100, 100, 100, 50], 250), [
      [0, 1],
      [2, 3],
    ]);
    assert.deepEqual(chunkEntries([300, 10], 250), [[0], [1]], 'an entry alone is never split further');
  });
});

describe('AWS error classification', () => {
  const cases: Array<[string, unknown, string]> = [
    [
      'connection refused (no HTTP answer)',
      Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }),
      'unavailable',
    ],
    ['a request timeout', sdkError('TimeoutError'), 'unavailable'],
    ['an abort', sdkError('AbortError'), 'unavailable'],
    ['no credentials found', sdkError('CredentialsProviderError'), 'unavailable'],
    ['an unknown access key', sdkError('InvalidClientTokenId', 403), 'unavailable'],
    ['an expired token', sdkError('ExpiredToken', 400), 'unavailable'],
    ['503 Service Unavailable', sdkError('ServiceUnavailable', 503), 'retry'],
    ['502 with no code', sdkError('Error', 502), 'unavailable'],
    ['a queue that does not exist', sdkError('QueueDoesNotExist', 400), 'missing'],
    ['a topic that does not exist', sdkError('NotFound', 404), 'missing'],
    ['throttling', sdkError('ThrottlingException', 400), 'retry'],
    ['KMS key disabled', sdkError('KMSDisabled', 400), 'retry'],
    ['500 internal error', sdkError('InternalError', 500), 'retry'],
    ['access denied by a policy', sdkError('AccessDenied', 403), 'permanent'],
    ['SNS authorization error', sdkError('AuthorizationError', 403), 'permanent'],
    ['batch too long', sdkError('BatchRequestTooLong', 400), 'permanent'],
    ['an invalid parameter', sdkError('InvalidParameterValue', 400), 'permanent'],
  ];
  for (const [label, err, expected] of cases) {
    it(`${label} → ${expected}`, () => {
      assert.equal(classifyAwsError(err), expected);
    });
  }

  it('refused batch entries: sender fault → permanent, else retry', () => {
    assert.equal(classifyFailedEntry({ SenderFault: true, Code: 'InvalidMessageContents' }), 'permanent');
    assert.equal(classifyFailedEntry({ SenderFault: false, Code: 'InternalError' }), 'retry');
    assert.equal(classifyFailedEntry({ SenderFault: true, Code: 'ThrottlingException' }), 'retry');
    assert.equal(classifyFailedEntry({ Code: 'Unknown' }), 'retry');
  });
});

describe('SqsTransport with a stub client', () => {
  it('sends 25 messages in 3 SendMessageBatch calls, after one GetQueueUrl, and maps each entry', async () => {
    const client = new StubClient();
    const transport = sqs(client);
    await transport.start();
    const batch = Array.from({ length: 25 }, (_, i) =>
      testMessage({ topic: 'orders', key: `k${i % 3}`, headers: { 'x-n': String(i) } }),
    );
    const outcomes = await transport.publish(batch);
    assert.deepEqual(statuses(outcomes), Array(25).fill('ok'));
    assert.deepEqual(
      client.sent.map((s) => s.command),
      ['GetQueueUrlCommand', 'SendMessageBatchCommand', 'SendMessageBatchCommand', 'SendMessageBatchCommand'],
    );
    const batches = client.batches();
    assert.deepEqual(
      batches.map((b) => b.length),
      [10, 10, 5],
    );
    const sendInputs = client.sent.filter((s) => s.command === 'SendMessageBatchCommand');
    assert.ok(sendInputs.every((s) => s.input['QueueUrl'] === 'https://sqs.test/000000000000/orders'));
    const entries = batches.flat();
    assert.deepEqual(
      entries.map((e) => e.MessageAttributes['mailroom-id']?.StringValue),
      batch.map((m) => m.id),
    );
    assert.equal(entries[0]?.MessageBody, batch[0]?.payload.toString());
    assert.equal(entries[0]?.MessageGroupId, undefined, 'no group on a standard queue');
    assert.equal(entries[0]?.MessageDeduplicationId, undefined);
    assert.deepEqual(JSON.parse(entries[7]?.MessageAttributes['mailroom-headers']?.StringValue ?? ''), {
      'x-n': '7',
    });
    await transport.close();
    assert.equal(client.destroyed, 0, 'a given client is not destroyed');
  });

  it('maps per-entry failures back to the right messages', async () => {
    const client = new StubClient();
    client.respond = (command, input, call) => {
      if (command !== 'SendMessageBatchCommand') return defaultAnswer(command, input);
      const entries = input['Entries'] as Entry[];
      if (call !== 2) return defaultAnswer(command, input);
      // Second batch (messages 10…19): m3 refused as the sender's fault, m6 a transient failure,
      // m8 not mentioned at all.
      return {
        Successful: entries.filter((e) => !['m3', 'm6', 'm8'].includes(e.Id)).map((e) => ({ Id: e.Id })),
        Failed: [
          { Id: 'm6', SenderFault: false, Code: 'InternalError', Message: 'try again' },
          { Id: 'm3', SenderFault: true, Code: 'InvalidParameterValue', Message: 'bad attribute' },
        ],
      };
    };
    const transport = sqs(client);
    const batch = Array.from({ length: 25 }, () => testMessage({ topic: 'orders' }));
    const outcomes = await transport.publish(batch);
    const expected = Array<string>(25).fill('ok');
    expected[13] = 'permanent';
    expected[16] = 'retry';
    expected[18] = 'retry';
    assert.deepEqual(statuses(outcomes), expected);
    assert.match(
      errorOf(outcomes[13]).message,
      new RegExp(
        `refused message ${batch[13]?.id} for orders: InvalidParameterValue: bad attribute \\(sender fault\\)`,
      ),
    );
    assert.ok(isPermanentDeliveryError(errorOf(outcomes[13])));
    assert.match(errorOf(outcomes[16]).message, /InternalError: try again/);
    assert.match(errorOf(outcomes[18]).message, /without a word on message/);
    await transport.close();
  });

  it('on a FIFO queue, groups by key (keyless: own id, or keylessGroupId) and dedupes by id', async () => {
    const client = new StubClient();
    const transport = new SqsTransport({ url: 'sqs://eu-west-1/orders.fifo', client });
    const keyed = testMessage({ key: 'order-1' });
    const keyless = testMessage({ key: null });
    const unicode = testMessage({ key: 'ключ' });
    await transport.publish([keyed, keyless, unicode]);
    const [a, b, c] = client.batches()[0] as Entry[];
    assert.equal(a?.MessageGroupId, 'order-1');
    assert.equal(a?.MessageDeduplicationId, keyed.id);
    assert.equal(b?.MessageGroupId, keyless.id);
    assert.equal(c?.MessageGroupId, groupIdOf('ключ'));
    await transport.close();

    const client2 = new StubClient();
    const grouped = new SqsTransport({
      url: 'sqs://eu-west-1/orders.fifo',
      client: client2,
      keylessGroupId: 'keyless',
    });
    await grouped.publish([testMessage({ key: null })]);
    assert.equal(client2.batches()[0]?.[0]?.MessageGroupId, 'keyless');
    await grouped.close();
  });

  it('sends each topic to its own queue under a {topic} template, and refuses names SQS would not take', async () => {
    const client = new StubClient();
    const transport = new SqsTransport({ url: 'sqs://eu-west-1/mailroom-{topic}', client });
    const outcomes = await transport.publish([
      testMessage({ topic: 'order.created' }),
      testMessage({ topic: 'stock.reserved' }),
      testMessage({ topic: 'bad topic' }),
      testMessage({ topic: 'order.created' }),
    ]);
    assert.deepEqual(statuses(outcomes), ['ok', 'ok', 'permanent', 'ok']);
    assert.match(
      errorOf(outcomes[2]).message,
      /queue name "mailroom-bad topic" \(from topic "bad topic"\) contains " "/,
    );
    const lookups = client.sent
      .filter((s) => s.command === 'GetQueueUrlCommand')
      .map((s) => s.input['QueueName']);
    assert.deepEqual(lookups.sort(), ['mailroom-order-created', 'mailroom-stock-reserved']);
    await transport.close();
  });

  it('reports retry naming the queue when it does not exist, and looks it up again next time', async () => {
    const client = new StubClient();
    let exists = false;
    client.respond = (command, input) =>
      command === 'GetQueueUrlCommand' && !exists
        ? sdkError('QueueDoesNotExist', 400, 'The specified queue does not exist.')
        : defaultAnswer(command, input);
    const transport = sqs(client);
    const outcomes = await transport.publish([testMessage(), testMessage()]);
    assert.deepEqual(statuses(outcomes), ['retry', 'retry']);
    assert.match(errorOf(outcomes[0]).message, /SQS queue orders does not exist .* create it/);
    exists = true;
    assert.deepEqual(statuses(await transport.publish([testMessage()])), ['ok']);
    await transport.close();
  });

  it('classifies a failed call: outage → unavailable for all, throttling → retry, credentials → unavailable', async () => {
    for (const [err, expected] of [
      [
        Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:4566'), { code: 'ECONNREFUSED' }),
        'unavailable',
      ],
      [sdkError('ThrottlingException', 400, 'Rate exceeded'), 'retry'],
      [
        sdkError('InvalidClientTokenId', 403, 'The security token included in the request is invalid'),
        'unavailable',
      ],
      [sdkError('AccessDenied', 403, 'not authorized to perform sqs:SendMessage'), 'permanent'],
    ] as const) {
      const client = new StubClient();
      client.respond = (command, input) =>
        command === 'SendMessageBatchCommand' ? err : defaultAnswer(command, input);
      const transport = sqs(client);
      const batch = Array.from({ length: 12 }, () => testMessage());
      const outcomes = await transport.publish(batch);
      assert.deepEqual(new Set(statuses(outcomes)), new Set([expected]), `${err.name}`);
      await transport.close();
    }
  });

  it('stops sending the remaining batches once one found the service unavailable', async () => {
    const client = new StubClient();
    client.respond = (command, input) =>
      command === 'SendMessageBatchCommand' ? sdkError('TimeoutError') : defaultAnswer(command, input);
    const transport = sqs(client);
    const outcomes = await transport.publish(Array.from({ length: 25 }, () => testMessage()));
    assert.deepEqual(new Set(statuses(outcomes)), new Set(['unavailable']));
    assert.equal(client.batches().length, 1, 'no batch sent after the first found an outage');
    await transport.close();
  });

  it('sends a batch refused whole (a 4xx) one message at a time, so only the culprit is permanent', async () => {
    const client = new StubClient();
    client.respond = (command, input) => {
      if (command !== 'SendMessageBatchCommand') return defaultAnswer(command, input);
      const entries = input['Entries'] as Entry[];
      const bad = entries.some((e) => e.MessageAttributes['mailroom-type']?.StringValue === 'bad');
      return bad
        ? sdkError('InvalidParameterValue', 400, 'Message attribute value is invalid')
        : defaultAnswer(command, input);
    };
    const transport = sqs(client);
    const outcomes = await transport.publish([testMessage(), testMessage({ type: 'bad' }), testMessage()]);
    assert.deepEqual(statuses(outcomes), ['ok', 'permanent', 'ok']);
    assert.deepEqual(
      client.batches().map((b) => b.length),
      [3, 1, 1, 1],
    );
    await transport.close();
  });

  it('reports unavailable when the signal aborts, and after publishTimeoutMs', async () => {
    const client = new StubClient();
    client.respond = (command, input) =>
      command === 'SendMessageBatchCommand' ? 'hang' : defaultAnswer(command, input);
    const transport = sqs(client, { publishTimeoutMs: 50 });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 10);
    const aborted = await transport.publish([testMessage(), testMessage()], { signal: controller.signal });
    assert.deepEqual(statuses(aborted), ['unavailable', 'unavailable']);
    assert.match(errorOf(aborted[0]).message, /was aborted before SQS answered/);
    const late = await transport.publish([testMessage()]);
    assert.equal(late[0]?.status, 'unavailable');
    assert.match(errorOf(late[0]).message, /within publishTimeoutMs \(50 ms\)/);
    await transport.close();
  });

  it('probes: a missing fixed queue fails with destination_missing; a template only needs an answer', async () => {
    const client = new StubClient();
    client.respond = (command, input) =>
      command === 'GetQueueUrlCommand' ? sdkError('QueueDoesNotExist', 400) : defaultAnswer(command, input);
    const fixed = sqs(client);
    await assert.rejects(
      fixed.start(),
      (err: unknown) =>
        isTransportError(err) &&
        err.code === 'destination_missing' &&
        /queue orders does not exist/.test(err.message),
    );
    await fixed.close();
    const templated = new SqsTransport({ url: 'sqs://eu-west-1/mailroom-{topic}', client });
    await templated.start();
    await templated.close();
    const down = new StubClient();
    down.respond = () =>
      Object.assign(new Error('getaddrinfo ENOTFOUND sqs.eu-west-1.amazonaws.com'), { code: 'ENOTFOUND' });
    const unreachable = sqs(down);
    await assert.rejects(
      unreachable.probe(),
      (err: unknown) => isTransportError(err) && err.code === 'unreachable' && /ENOTFOUND/.test(err.message),
    );
    await unreachable.close();
  });

  it('close is idempotent, publish after it is unavailable without sending, start reopens', async () => {
    const client = new StubClient();
    const transport = sqs(client);
    await Promise.all([transport.start(), transport.start()]);
    await Promise.all([transport.close(), transport.close()]);
    const sentBefore = client.sent.length;
    const outcomes = await transport.publish([testMessage(), testMessage()]);
    assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
    assert.match(errorOf(outcomes[0]).message, /is closed; call start\(\)/);
    assert.equal(client.sent.length, sentBefore);
    await transport.start();
    assert.deepEqual(statuses(await transport.publish([testMessage()])), ['ok']);
    await transport.close();
  });
});

describe('SnsTransport with a stub client', () => {
  it('publishes with PublishBatch to the ARN built from region and account, FIFO fields on .fifo topics', async () => {
    const client = new StubClient();
    const transport = new SnsTransport({ url: 'sns://eu-west-1/123456789012/orders.fifo', client });
    await transport.start();
    const batch = Array.from({ length: 12 }, (_, i) => testMessage({ key: `k${i}` }));
    const outcomes = await transport.publish(batch);
    assert.deepEqual(statuses(outcomes), Array(12).fill('ok'));
    const publishes = client.sent.filter((s) => s.command === 'PublishBatchCommand');
    assert.equal(publishes.length, 2);
    assert.equal(publishes[0]?.input['TopicArn'], 'arn:aws:sns:eu-west-1:123456789012:orders.fifo');
    const first = client.batches()[0]?.[0];
    assert.equal(first?.Message, batch[0]?.payload.toString());
    assert.equal(first?.MessageGroupId, 'k0');
    assert.equal(first?.MessageDeduplicationId, batch[0]?.id);
    assert.equal(client.sent[0]?.command, 'GetTopicAttributesCommand', 'start probes the topic');
    await transport.close();
  });

  it("takes the region from the client when the URL has none, in the region's partition", async () => {
    const client = new StubClient();
    client.config = { region: async () => 'cn-north-1' };
    const transport = new SnsTransport({ url: 'sns:///123456789012/orders', client });
    await transport.publish([testMessage()]);
    assert.equal(
      client.sent.find((s) => s.command === 'PublishBatchCommand')?.input['TopicArn'],
      'arn:aws-cn:sns:cn-north-1:123456789012:orders',
    );
    await transport.close();
  });

  it('fails start with region_missing when no region can be found', async () => {
    const client = new StubClient();
    const transport = new SnsTransport({ url: 'sns:///123456789012/orders', client });
    await assert.rejects(
      transport.start(),
      (err: unknown) => isTransportError(err) && err.code === 'region_missing',
    );
    await transport.close();
  });

  it('maps a refused entry (sender fault) to permanent and the rest to ok', async () => {
    const client = new StubClient();
    client.respond = (command, input) => {
      if (command !== 'PublishBatchCommand') return defaultAnswer(command, input);
      const entries = input['PublishBatchRequestEntries'] as Entry[];
      return {
        Successful: entries.filter((e) => e.Id !== 'm1').map((e) => ({ Id: e.Id })),
        Failed: [
          {
            Id: 'm1',
            SenderFault: true,
            Code: 'InvalidParameter',
            Message: 'Invalid parameter: Message too long',
          },
        ],
      };
    };
    const transport = new SnsTransport({ url: 'sns://eu-west-1/123456789012/orders', client });
    const outcomes = await transport.publish([testMessage(), testMessage(), testMessage()]);
    assert.deepEqual(statuses(outcomes), ['ok', 'permanent', 'ok']);
    assert.match(errorOf(outcomes[1]).message, /SNS refused message .* Message too long/);
    await transport.close();
  });
});

/** A server speaking enough of SQS's JSON protocol for GetQueueUrl and SendMessageBatch. */
async function fakeSqs(): Promise<{
  server: Server;
  url: string;
  requests: Array<{ target: string; body: Record<string, unknown> }>;
}> {
  const requests: Array<{ target: string; body: Record<string, unknown> }> = [];
  const read = async (req: IncomingMessage) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
  };
  const server = createServer((req, res) => {
    void read(req).then((body) => {
      const target = String(req.headers['x-amz-target'] ?? '');
      requests.push({ target, body });
      res.setHeader('content-type', 'application/x-amz-json-1.0');
      if (target === 'AmazonSQS.GetQueueUrl') {
        if (body['QueueName'] === 'missing') {
          res.statusCode = 400;
          res.setHeader('x-amzn-query-error', 'AWS.SimpleQueueService.NonExistentQueue;Sender');
          res.end(
            JSON.stringify({
              __type: 'com.amazonaws.sqs#QueueDoesNotExist',
              message: 'The specified queue does not exist.',
            }),
          );
          return;
        }
        res.end(
          JSON.stringify({
            QueueUrl: `http://${req.headers.host}/000000000000/${String(body['QueueName'])}`,
          }),
        );
        return;
      }
      if (target === 'AmazonSQS.SendMessageBatch') {
        const entries = body['Entries'] as Entry[];
        res.end(
          JSON.stringify({
            Successful: entries
              .filter((e) => e.Id !== 'm1')
              .map((e) => ({
                Id: e.Id,
                MessageId: `id-${e.Id}`,
                // The SDK checks it against the body it sent.
                MD5OfMessageBody: createHash('md5')
                  .update(e.MessageBody ?? '', 'utf8')
                  .digest('hex'),
              })),
            Failed: entries.some((e) => e.Id === 'm1')
              ? [
                  {
                    Id: 'm1',
                    SenderFault: true,
                    Code: 'InvalidParameterValue',
                    Message: 'refused by the fake',
                  },
                ]
              : [],
          }),
        );
        return;
      }
      res.statusCode = 400;
      res.end(JSON.stringify({ __type: 'com.amazonaws.sqs#InvalidAction', message: `unknown ${target}` }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { server, url: `http://127.0.0.1:${port}`, requests };
}

describe('SqsTransport with the real SDK client', () => {
  const saved: Record<string, string | undefined> = {};
  const env = {
    AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE',
    AWS_SECRET_ACCESS_KEY: 'fake-secret-for-tests',
    AWS_REGION: 'eu-west-1',
    AWS_MAX_ATTEMPTS: '1',
  };
  let fake: Awaited<ReturnType<typeof fakeSqs>>;
  before(async () => {
    fake = await fakeSqs();
    for (const [name, value] of Object.entries({ ...env, AWS_ENDPOINT_URL: fake.url })) {
      saved[name] = process.env[name];
      process.env[name] = value;
    }
  });
  after(async () => {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
    await new Promise((resolve) => fake.server.close(resolve));
  });

  it('goes where AWS_ENDPOINT_URL points, and maps the service answer per entry', async () => {
    const transport = new SqsTransport({ url: 'sqs:///orders' });
    try {
      await transport.start();
      const batch = [testMessage(), testMessage(), testMessage({ payload: Buffer.from([0xff, 0x00]) })];
      const outcomes = await transport.publish(batch);
      assert.deepEqual(
        statuses(outcomes),
        ['ok', 'permanent', 'ok'],
        outcomes.map((o) => (o.status === 'ok' ? 'ok' : o.error.message)).join('; '),
      );
      assert.match(errorOf(outcomes[1]).message, /refused by the fake/);
      const send = fake.requests.find((r) => r.target === 'AmazonSQS.SendMessageBatch');
      assert.ok(send, `requests seen: ${fake.requests.map((r) => r.target).join(', ')}`);
      assert.match(String(send.body['QueueUrl']), /\/000000000000\/orders$/);
      const entries = send.body['Entries'] as Entry[];
      assert.equal(entries[2]?.MessageBody, Buffer.from([0xff, 0x00]).toString('base64'));
      assert.equal(entries[2]?.MessageAttributes['mailroom-body-encoding']?.StringValue, 'base64');
    } finally {
      await transport.close();
    }
  });

  it('fails start with destination_missing for a queue the service does not have', async () => {
    const transport = new SqsTransport({ url: 'sqs:///missing' });
    try {
      await assert.rejects(
        transport.start(),
        (err: unknown) => isTransportError(err) && err.code === 'destination_missing',
      );
    } finally {
      await transport.close();
    }
  });

  it('reports unavailable when the endpoint does not answer', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise((resolve) => closed.close(resolve));
    const transport = new SqsTransport({ url: 'sqs:///orders', endpoint: `http://127.0.0.1:${port}` });
    try {
      await assert.rejects(
        transport.start(),
        (err: unknown) =>
          isTransportError(err) && err.code === 'unreachable' && /ECONNREFUSED/.test(err.message),
      );
      const outcomes = await transport.publish([testMessage(), testMessage()]);
      assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
    } finally {
      await transport.close();
    }
  });
});

// Against a real endpoint (LocalStack, ElasticMQ, AWS), when one is named. Not run in this
// project's CI: no such endpoint runs there.
const skipReason =
  'set AWS_ENDPOINT_URL (and AWS_REGION, credentials) to run against an SQS/SNS endpoint (none here)';
if (conformanceEndpoint === undefined || conformanceEndpoint === '') {
  it('sqs transport conformance', { skip: skipReason }, () => {});
  it('sns transport conformance', { skip: skipReason }, () => {});
} else {
  const {
    SQSClient,
    CreateQueueCommand,
    DeleteQueueCommand,
    ReceiveMessageCommand,
    DeleteMessageBatchCommand,
  } = await import('@aws-sdk/client-sqs');
  const { SNSClient, CreateTopicCommand, DeleteTopicCommand } = await import('@aws-sdk/client-sns');
  const run = Math.random().toString(36).slice(2, 10);
  const queueName = process.env['SQS_CONFORMANCE_QUEUE'] ?? `mailroom-conformance-${run}.fifo`;
  const topicName = process.env['SNS_CONFORMANCE_TOPIC'] ?? `mailroom-conformance-${run}.fifo`;
  const sqsClient = new SQSClient({});
  const snsClient = new SNSClient({});
  let queueUrl: Promise<string> | undefined;
  let topicArn: Promise<string> | undefined;
  const ensureQueue = () =>
    (queueUrl ??= sqsClient
      .send(new CreateQueueCommand({ QueueName: queueName, Attributes: { FifoQueue: 'true' } }))
      .then((r) => r.QueueUrl as string));
  const ensureTopic = () =>
    (topicArn ??= snsClient
      .send(
        new CreateTopicCommand({
          Name: topicName,
          Attributes: { FifoTopic: 'true', ContentBasedDeduplication: 'false' },
        }),
      )
      .then((r) => r.TopicArn as string));
  after(async () => {
    if (queueUrl && !process.env['SQS_CONFORMANCE_QUEUE'])
      await sqsClient.send(new DeleteQueueCommand({ QueueUrl: await queueUrl })).catch(() => {});
    if (topicArn && !process.env['SNS_CONFORMANCE_TOPIC'])
      await snsClient.send(new DeleteTopicCommand({ TopicArn: await topicArn })).catch(() => {});
    sqsClient.destroy();
    snsClient.destroy();
  });

  const unreachable = (service: 'sqs' | 'sns') => async () =>
    service === 'sqs'
      ? new SqsTransport({
          url: 'sqs://us-east-1/orders',
          endpoint: 'http://127.0.0.1:1',
          publishTimeoutMs: 5000,
        })
      : new SnsTransport({
          url: 'sns://us-east-1/000000000000/orders',
          endpoint: 'http://127.0.0.1:1',
          publishTimeoutMs: 5000,
        });
  runTransportConformance('sqs', {
    create: async () => {
      await ensureQueue();
      return new SqsTransport({ url: `sqs:///${queueName}` });
    },
    createUnreachable: unreachable('sqs'),
    // AWS refuses an empty attribute value: the transport refuses the message, alone.
    refusedMessage: (topic) => testMessage({ topic, key: '' }),
    // The FIFO queue drops a second message with the same MessageDeduplicationId (the id).
    dedupes: true,
    // maxPayloadBytes is left out: the limit counts the attributes and the body as sent (base64
    // for binary payloads), so no payload size is exactly at it for every payload.
    consume: async (_transport, topics): Promise<ConformanceConsumer> => {
      const url = await ensureQueue();
      const wanted = new Set(topics);
      const received: ReceivedMessage[] = [];
      let open = true;
      const poll = (async () => {
        while (open) {
          const answer = await sqsClient.send(
            new ReceiveMessageCommand({
              QueueUrl: url,
              MaxNumberOfMessages: 10,
              WaitTimeSeconds: 1,
              MessageAttributeNames: ['All'],
            }),
          );
          const messages = answer.Messages ?? [];
          for (const m of messages) {
            const attr = (name: string) => m.MessageAttributes?.[name]?.StringValue;
            const topic = attr('mailroom-topic') ?? '';
            if (!wanted.has(topic)) continue;
            received.push({
              id: attr('mailroom-id') ?? '',
              topic,
              key: attr('mailroom-key') ?? null,
              headers: JSON.parse(attr('mailroom-headers') ?? '{}') as Record<string, string>,
              payload: payloadOf(m.Body ?? '', attr('mailroom-body-encoding')),
              type: attr('mailroom-type') ?? null,
              contentType: attr('content-type') ?? '',
            });
          }
          if (messages.length > 0) {
            await sqsClient.send(
              new DeleteMessageBatchCommand({
                QueueUrl: url,
                Entries: messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle ?? '' })),
              }),
            );
          }
        }
      })();
      return {
        async take(count, timeoutMs) {
          const until = Date.now() + timeoutMs;
          while (received.length < count) {
            if (Date.now() > until) throw new Error(`received ${received.length} of ${count} messages`);
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
          return received.slice(0, count);
        },
        async close() {
          open = false;
          await poll;
        },
      };
    },
    timeoutMs: 30_000,
  });

  runTransportConformance('sns', {
    create: async () => {
      const arn = await ensureTopic();
      const [, , , region, account] = arn.split(':');
      return new SnsTransport({ url: `sns://${region}/${account}/${topicName}` });
    },
    createUnreachable: unreachable('sns'),
    refusedMessage: (topic) => testMessage({ topic, key: '' }),
  });
}
