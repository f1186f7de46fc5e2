import type * as SnsSdk from '@aws-sdk/client-sns';

import { clientRegion, type AwsBatchAnswer, type AwsClientLike } from './aws-client.js';
import { classifyAwsError, probeFailedError, regionMissingError } from './aws-errors.js';
import { awsNameFor, resolveAwsOptions, type SnsTransportOptions } from './aws-options.js';
import { AwsTransport, entryId } from './aws-transport.js';
import type { AwsEntry } from './aws-wire.js';

/** The SDK's SNS module, loaded on first use. */
type SnsModule = typeof SnsSdk;
let snsModule: Promise<SnsModule> | undefined;
const loadSns = (): Promise<SnsModule> => (snsModule ??= import('@aws-sdk/client-sns'));

/** The ARN partition of a region: `aws`, `aws-cn`, `aws-us-gov`. */
export function partitionOf(region: string): string {
  if (region.startsWith('cn-')) return 'aws-cn';
  if (region.startsWith('us-gov-')) return 'aws-us-gov';
  return 'aws';
}

/**
 * Publishes outbox messages to Amazon SNS with `PublishBatch`: up to 10 messages per call, each
 * reported `ok` only when SNS listed it among the batch's `Successful` entries. A refused entry
 * is `permanent` when SNS says it is the sender's fault (`SenderFault`), else `retry`. On a FIFO
 * topic (`.fifo`) the key is the `MessageGroupId` and the id the `MessageDeduplicationId`.
 * Attributes, body and failure handling as {@link SqsTransport}; docs/transports/sns-sqs.md.
 *
 * The topic ARN is built from the URL (`sns://region/account/name`), so publishing needs only
 * `sns:Publish`.
 *
 * @example
 * ```ts
 * const transport = new SnsTransport({ url: 'sns://eu-west-1/123456789012/orders.fifo' });
 * await transport.start();
 * const relay = new Relay({ store, transport });
 * ```
 */
export class SnsTransport extends AwsTransport {
  readonly name = 'sns';

  constructor(options: SnsTransportOptions) {
    super(Object.freeze(resolveAwsOptions(options, 'sns')), 'sns');
  }

  protected async createClient(): Promise<AwsClientLike> {
    const { SNSClient } = await loadSns();
    const { region, endpoint } = { region: this.options.destination.region, endpoint: this.options.endpoint };
    return new SNSClient({
      ...(region === undefined ? {} : { region }),
      ...(endpoint === undefined ? {} : { endpoint }),
    });
  }

  /** The topic's ARN, from the region (the URL's, else the client's) and the URL's account. */
  protected async lookUp(client: AwsClientLike, name: string): Promise<string> {
    const region = this.options.destination.region ?? (await clientRegion(client));
    if (region === undefined) throw regionMissingError('sns', this.where);
    return `arn:${partitionOf(region)}:sns:${region}:${this.options.destination.account}:${name}`;
  }

  protected async sendBatch(
    client: AwsClientLike,
    topicArn: string,
    entries: readonly AwsEntry[],
    signal: AbortSignal,
  ): Promise<AwsBatchAnswer> {
    const { PublishBatchCommand } = await loadSns();
    return (await client.send(
      new PublishBatchCommand({
        TopicArn: topicArn,
        PublishBatchRequestEntries: entries.map((entry, i) => ({
          Id: entryId(i),
          Message: entry.body,
          MessageAttributes: entry.attributes,
          ...(entry.groupId === undefined ? {} : { MessageGroupId: entry.groupId }),
          ...(entry.deduplicationId === undefined ? {} : { MessageDeduplicationId: entry.deduplicationId }),
        })),
      }),
      { abortSignal: signal },
    )) as AwsBatchAnswer;
  }

  /**
   * `GetTopicAttributes` of the topic (of a made-up name when the URL has `{topic}`). A policy
   * that refuses it still proves the endpoint and the credentials.
   */
  protected async probeCall(client: AwsClientLike, signal: AbortSignal | undefined): Promise<void> {
    const { GetTopicAttributesCommand } = await loadSns();
    const template = this.options.destination.nameTemplate;
    const templated = template.includes('{topic}');
    const name = templated ? awsNameFor(template, 'mailroom-probe') : template;
    const arn = await this.lookUp(client, name);
    try {
      await client.send(
        new GetTopicAttributesCommand({ TopicArn: arn }),
        signal ? { abortSignal: signal } : {},
      );
    } catch (err) {
      const kind = classifyAwsError(err);
      if (kind === 'missing') {
        if (templated) return;
        throw probeFailedError('sns', this.where, err, arn);
      }
      if (kind === 'permanent') return;
      throw probeFailedError('sns', this.where, err);
    }
  }
}
