import type * as SqsSdk from '@aws-sdk/client-sqs';

import type { AwsBatchAnswer, AwsClientLike } from './aws-client.js';
import { classifyAwsError, probeFailedError } from './aws-errors.js';
import { awsNameFor, resolveAwsOptions, type SqsTransportOptions } from './aws-options.js';
import { AwsTransport, entryId } from './aws-transport.js';
import type { AwsEntry } from './aws-wire.js';

/** The SDK's SQS module, loaded on first use. */
type SqsModule = typeof SqsSdk;
let sqsModule: Promise<SqsModule> | undefined;
const loadSqs = (): Promise<SqsModule> => (sqsModule ??= import('@aws-sdk/client-sqs'));

/**
 * Publishes outbox messages to Amazon SQS with `SendMessageBatch`: up to 10 messages per call,
 * each reported `ok` only when SQS listed it among the batch's `Successful` entries (SQS has
 * stored it). A refused entry is `permanent` when SQS says it is the sender's fault (`SenderFault`),
 * else `retry`. On a FIFO queue (a name ending in `.fifo`) the message key is the
 * `MessageGroupId` and the message id the `MessageDeduplicationId`, so SQS keeps a key's order
 * and drops a copy sent again within 5 minutes.
 *
 * The id, topic, key, type, attempt, creation time and content type travel as message
 * attributes, the user's headers as one JSON attribute (`mailroom-headers`): AWS allows 10.
 * Credentials and region come from the SDK's chain; `AWS_ENDPOINT_URL` (or
 * `AWS_ENDPOINT_URL_SQS`) points it at LocalStack or ElasticMQ. docs/transports/sns-sqs.md.
 *
 * @example
 * ```ts
 * const transport = new SqsTransport({ url: 'sqs://eu-west-1/orders.fifo' });
 * await transport.start(); // GetQueueUrl: the queue exists, the credentials work
 * const relay = new Relay({ store, transport });
 * ```
 */
export class SqsTransport extends AwsTransport {
  readonly name = 'sqs';

  constructor(options: SqsTransportOptions) {
    super(Object.freeze(resolveAwsOptions(options, 'sqs')), 'sqs');
  }

  protected async createClient(): Promise<AwsClientLike> {
    const { SQSClient } = await loadSqs();
    const { region, endpoint } = { region: this.options.destination.region, endpoint: this.options.endpoint };
    return new SQSClient({
      ...(region === undefined ? {} : { region }),
      ...(endpoint === undefined ? {} : { endpoint }),
    });
  }

  protected async lookUp(
    client: AwsClientLike,
    name: string,
    signal: AbortSignal | undefined,
  ): Promise<string> {
    const { GetQueueUrlCommand } = await loadSqs();
    const account = this.options.destination.account;
    const answer = (await client.send(
      new GetQueueUrlCommand({
        QueueName: name,
        ...(account === undefined ? {} : { QueueOwnerAWSAccountId: account }),
      }),
      signal ? { abortSignal: signal } : {},
    )) as { QueueUrl?: string };
    if (typeof answer?.QueueUrl !== 'string') throw new Error(`GetQueueUrl for ${name} returned no QueueUrl`);
    return answer.QueueUrl;
  }

  protected async sendBatch(
    client: AwsClientLike,
    queueUrl: string,
    entries: readonly AwsEntry[],
    signal: AbortSignal,
  ): Promise<AwsBatchAnswer> {
    const { SendMessageBatchCommand } = await loadSqs();
    return (await client.send(
      new SendMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: entries.map((entry, i) => ({
          Id: entryId(i),
          MessageBody: entry.body,
          MessageAttributes: entry.attributes,
          ...(entry.groupId === undefined ? {} : { MessageGroupId: entry.groupId }),
          ...(entry.deduplicationId === undefined ? {} : { MessageDeduplicationId: entry.deduplicationId }),
        })),
      }),
      { abortSignal: signal },
    )) as AwsBatchAnswer;
  }

  /**
   * `GetQueueUrl` of the queue (of a made-up name when the URL has `{topic}`: SQS answering
   * "no such queue" proves the endpoint and the credentials as well).
   */
  protected async probeCall(client: AwsClientLike, signal: AbortSignal | undefined): Promise<void> {
    const template = this.options.destination.nameTemplate;
    const templated = template.includes('{topic}');
    const name = templated ? awsNameFor(template, 'mailroom-probe') : template;
    try {
      await (templated ? this.lookUp(client, name, signal) : this.destinationOf(client, name, signal));
    } catch (err) {
      const kind = classifyAwsError(err);
      if (kind === 'missing') {
        if (templated) return;
        throw probeFailedError('sqs', this.where, err, name);
      }
      // A policy that refuses GetQueueUrl still proves the endpoint and credentials; the refusal,
      // if it is one of SendMessage too, shows on the messages.
      if (kind === 'permanent') return;
      throw probeFailedError('sqs', this.where, err);
    }
  }
}
