/**
 * Options of the SNS and SQS transports: the `sqs://` and `sns://` URLs, the defaults, and the
 * names of queues and topics made from message topics.
 *
 * URL forms (no query; everything else is an option):
 * - `sqs://[region]/[account-id/]queue-name` — `sqs://eu-west-1/orders.fifo`,
 *   `sqs:///mailroom-{topic}` (region from the SDK's chain), `sqs://us-east-1/123456789012/orders`
 *   (a queue of another account).
 * - `sns://[region]/account-id/topic-name` — `sns://eu-west-1/123456789012/orders.fifo`.
 *
 * @module
 */
import { ConfigError } from '../../core/errors/config-error.js';
import {
  custom,
  integer,
  MAX_TIMER_MS,
  optionsSchema,
  string,
  type ResolvedOptions,
} from '../../core/options-schema.js';
import { redactUrl } from '../../core/redact.js';
import type { AwsClientLike } from './aws-client.js';

/** What the URL names. */
export interface AwsDestination {
  service: 'sqs' | 'sns';
  /** From the URL's host; undefined: the SDK's chain (`AWS_REGION`, the profile…). */
  region: string | undefined;
  /** The owning account (SNS: always, for the ARN; SQS: a queue of another account). */
  account: string | undefined;
  /** The queue or topic name, with `{topic}` where the message topic goes. */
  nameTemplate: string;
  safeUrl: string;
}

/** Options shared by {@link SqsTransport} and {@link SnsTransport}. */
export interface AwsTransportOptions {
  /**
   * The queue (`sqs://[region]/[account-id/]name`) or topic (`sns://[region]/account-id/name`).
   * The name may contain `{topic}`, replaced by the message topic with dots turned into dashes
   * (`mailroom-{topic}` sends `order.created` to `mailroom-order-created`); a name ending in
   * `.fifo` is a FIFO queue or topic. Without a region the SDK's chain decides.
   *
   * @example 'sqs://eu-west-1/orders.fifo'
   * @example 'sns://eu-west-1/123456789012/mailroom-{topic}'
   */
  url: string;
  /**
   * Overrides the URL's region. @example 'eu-west-1'
   */
  region?: string;
  /**
   * Where the SDK sends requests (LocalStack, ElasticMQ, a VPC endpoint). Without it the SDK
   * reads `AWS_ENDPOINT_URL_SQS` / `AWS_ENDPOINT_URL_SNS`, then `AWS_ENDPOINT_URL`, then uses
   * AWS's regional endpoint. Ignored when a `client` is given.
   *
   * @example 'http://localhost:4566'
   */
  endpoint?: string;
  /**
   * A client to use instead of one the transport builds (an `SQSClient` / `SNSClient`, or anything
   * with the same `send`): for credentials, retries or HTTP settings the transport does not
   * expose, and for tests. The transport never destroys a client it was given.
   */
  client?: AwsClientLike;
  /**
   * Largest message, in bytes, counted as AWS counts it (the body as sent plus every attribute's
   * name, type and value); a bigger one is `permanent` without being sent. Batches are also kept
   * under it. SNS takes at most 256 KiB. An SQS queue takes up to its `MaximumMessageSize`, at
   * most 1 MiB (the SDK's documentation gives 1 MiB as the default for new queues; many existing
   * queues have 256 KiB): raise this to the queue's value for SQS.
   *
   * @default 262144 (256 KiB)
   */
  maxMessageBytes?: number;
  /**
   * FIFO only: the `MessageGroupId` of keyless messages. By default each keyless message is its
   * own group (its id), so keyless messages are not ordered among themselves (as everywhere in
   * Mailroom) and do not wait for each other; give a name to put them all in one group, in order.
   */
  keylessGroupId?: string;
  /**
   * How long one publish call may take. Messages without AWS's answer by then report
   * `unavailable`; they may still have been taken (FIFO drops the copy a retry sends within 5
   * minutes; standard queues deliver it twice, and consumers dedupe on `mailroom-id`).
   *
   * @default 30000
   */
  publishTimeoutMs?: number;
  /** How long `close()` waits for publish calls in flight. @default 10000 */
  closeTimeoutMs?: number;
}

export type SqsTransportOptions = AwsTransportOptions;
export type SnsTransportOptions = AwsTransportOptions;

/** The SDK's client: `send(command, { abortSignal })`. */
const isClient = (value: unknown): value is AwsClientLike =>
  typeof value === 'object' && value !== null && typeof (value as { send?: unknown }).send === 'function';

const GROUP_ID = /^[!-~]{1,128}$/;

function awsSchema(owner: string, maxBytes: number) {
  return optionsSchema<AwsTransportOptions>()(owner, {
    url: string({ expected: `a ${owner === 'SqsTransport' ? 'sqs' : 'sns'}:// URL string`, required: true }),
    region: string({ pattern: /^[a-z]{2}(-[a-z0-9]+)+-\d+$/, expected: "an AWS region such as 'eu-west-1'" }),
    endpoint: string({
      pattern: /^https?:\/\/[^\s]+$/i,
      expected: 'an http:// or https:// URL',
      secret: true,
    }),
    client: custom('an SDK client with send()', isClient),
    maxMessageBytes: integer({ min: 1024, max: maxBytes, default: 262_144 }),
    keylessGroupId: string({
      pattern: GROUP_ID,
      expected: '1 to 128 printable ASCII characters without spaces',
    }),
    publishTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 30_000 }),
    closeTimeoutMs: integer({ min: 0, max: MAX_TIMER_MS, default: 10_000 }),
  });
}

const sqsSchema = awsSchema('SqsTransport', 1_048_576);
const snsSchema = awsSchema('SnsTransport', 262_144);

/** Options after defaults and validation. */
export interface ResolvedAwsTransportOptions extends Omit<
  ResolvedOptions<typeof sqsSchema.fields>,
  'url' | 'endpoint'
> {
  destination: AwsDestination;
  endpoint: string | undefined;
}

const REGION = /^[a-z]{2}(-[a-z0-9]+)+-\d+$/;
const ACCOUNT = /^\d{12}$/;

/** Why a queue or topic name (after `{topic}` was replaced) is not legal, or undefined. */
export function awsNameProblem(service: 'sqs' | 'sns', name: string): string | undefined {
  const max = service === 'sqs' ? 80 : 256;
  const base = name.endsWith('.fifo') ? name.slice(0, -'.fifo'.length) : name;
  if (base === '') return 'is empty';
  if (name.length > max)
    return `is ${name.length} characters long; ${service.toUpperCase()} allows at most ${max} (.fifo included)`;
  const bad = /[^A-Za-z0-9_-]/.exec(base);
  if (bad) {
    return `contains ${JSON.stringify(bad[0])}; ${service.toUpperCase()} names take only A-Z a-z 0-9 _ - (and a .fifo suffix)`;
  }
  return undefined;
}

/** The queue or topic name for a message topic: `{topic}` replaced, dots turned into dashes. */
export function awsNameFor(template: string, topic: string): string {
  return template.replace('{topic}', topic.replaceAll('.', '-'));
}

/** Reads an `sqs://` or `sns://` URL. `owner` names the class in messages. */
export function resolveAwsUrl(value: string, service: 'sqs' | 'sns', owner: string): AwsDestination {
  const safeUrl = redactUrl(value);
  const form =
    service === 'sqs' ? 'sqs://[region]/[account-id/]queue-name' : 'sns://[region]/account-id/topic-name';
  const fail = (why: string): never => {
    throw new ConfigError('url', `${owner} url ${JSON.stringify(safeUrl)} ${why}`, { value: safeUrl });
  };
  const match = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)(\/[^?#]*)?(\?[^#]*)?(#.*)?$/i.exec(value);
  if (!match) fail(`is not a URL; expected ${form}`);
  const [, scheme = '', host = '', path = '', query, fragment] = match as RegExpExecArray;
  if (scheme.toLowerCase() !== service) fail(`has scheme ${JSON.stringify(scheme)}; expected ${form}`);
  if (query !== undefined || fragment !== undefined) {
    fail('has a query or fragment; give region, endpoint and the rest as options');
  }
  if (host.includes('@'))
    fail(
      'has credentials; AWS credentials come from the SDK chain (environment, profile, role), never the URL',
    );
  if (host !== '' && !REGION.test(host)) {
    fail(`has host ${JSON.stringify(host)}, which is not an AWS region (e.g. eu-west-1); expected ${form}`);
  }
  let segments: string[];
  try {
    segments = path.split('/').slice(1).map(decodeURIComponent);
  } catch {
    return fail('has a path that is not valid percent-encoding');
  }
  let account: string | undefined;
  let nameTemplate: string;
  if (segments.length === 2) [account = '', nameTemplate = ''] = segments;
  else if (segments.length === 1 && service === 'sqs') nameTemplate = segments[0] ?? '';
  else return fail(`has path ${JSON.stringify(path)}; expected ${form}`);
  if (account !== undefined && !ACCOUNT.test(account)) {
    fail(`has account ${JSON.stringify(account)}; an AWS account id is 12 digits`);
  }
  if (nameTemplate.split('{topic}').length > 2) fail("has '{topic}' more than once in the name");
  const problem = awsNameProblem(service, nameTemplate.replace('{topic}', 'x'));
  if (problem !== undefined)
    fail(
      `has ${service === 'sqs' ? 'queue' : 'topic'} name ${JSON.stringify(nameTemplate)}, which ${problem}`,
    );
  return { service, region: host === '' ? undefined : host, account, nameTemplate, safeUrl };
}

/** Applies defaults and validates; throws a {@link ConfigError} naming the option at fault. */
export function resolveAwsOptions(
  options: AwsTransportOptions,
  service: 'sqs' | 'sns',
): ResolvedAwsTransportOptions {
  const owner = service === 'sqs' ? 'SqsTransport' : 'SnsTransport';
  const { url, endpoint, ...resolved } = (service === 'sqs' ? sqsSchema : snsSchema).resolve(options);
  const destination = resolveAwsUrl(url, service, owner);
  if (resolved.region !== undefined) destination.region = resolved.region;
  return { ...resolved, destination, endpoint };
}
