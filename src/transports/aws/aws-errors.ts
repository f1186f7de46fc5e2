/**
 * Every error the SNS and SQS transports report, and the table that sorts AWS SDK errors into
 * outage (`unavailable`), message failure that will not pass (`permanent`), transient failure
 * (`retry`) and a queue or topic that does not exist (`missing`, reported as `retry`).
 *
 * @module
 */
import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { OutboxMessage } from '../../core/types.js';

/** What an error of a whole call means for its messages. */
export type AwsErrorClass = 'unavailable' | 'permanent' | 'retry' | 'missing';

/** Credentials AWS does not accept (or none found): nothing can be sent until someone fixes them. */
const CREDENTIAL_ERRORS: ReadonlySet<string> = new Set([
  'CredentialsProviderError',
  'InvalidClientTokenId',
  'UnrecognizedClientException',
  'SignatureDoesNotMatch',
  'IncompleteSignature',
  'InvalidSignatureException',
  'ExpiredToken',
  'ExpiredTokenException',
  'MissingAuthenticationToken',
  'InvalidAccessKeyId',
  'InvalidSecurity',
]);

/** The queue or topic is not there. */
const MISSING_ERRORS: ReadonlySet<string> = new Set([
  'QueueDoesNotExist',
  'AWS.SimpleQueueService.NonExistentQueue',
  'NotFound',
  'NotFoundException',
]);

/** Slow down and try again. KMS errors too: a key being enabled or rotated passes. */
const TRANSIENT_ERRORS: ReadonlySet<string> = new Set([
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'RequestThrottled',
  'RequestThrottledException',
  'TooManyRequestsException',
  'KMSThrottling',
  'KMSThrottlingException',
  'KMSDisabled',
  'KMSDisabledException',
  'KMSInvalidState',
  'KMSInvalidStateException',
  'KMSNotFound',
  'KMSNotFoundException',
  'KMSOptInRequired',
  'InternalError',
  'InternalFailure',
  'ServiceUnavailable',
  'ServiceUnavailableException',
]);

/** Not allowed to send to this queue or topic: a policy says no. */
const FORBIDDEN_ERRORS: ReadonlySet<string> = new Set([
  'AccessDenied',
  'AccessDeniedException',
  'AuthorizationError',
  'KMSAccessDenied',
  'KMSAccessDeniedException',
]);

interface SdkErrorShape {
  name?: unknown;
  Code?: unknown;
  code?: unknown;
  $metadata?: { httpStatusCode?: unknown };
}

/** The AWS error code of an SDK error (`name`, which the SDK sets from the service's code). */
export function awsErrorCode(err: unknown): string {
  const shape = err as SdkErrorShape | null;
  for (const value of [shape?.name, shape?.Code, shape?.code]) {
    if (typeof value === 'string' && value !== '' && value !== 'Error') return value;
  }
  return 'Error';
}

/** The HTTP status AWS answered with, or undefined when no answer came. */
export function awsStatus(err: unknown): number | undefined {
  const status = (err as SdkErrorShape | null)?.$metadata?.httpStatusCode;
  return typeof status === 'number' ? status : undefined;
}

/**
 * Sorts an error thrown by `client.send` for a whole call. No HTTP answer (connection refused,
 * DNS, a timeout, an abort), refused credentials and 502/503/504 are `unavailable`; a queue or
 * topic that does not exist is `missing`; throttling, KMS trouble and 500 `retry`; a policy
 * refusal and every other 4xx `permanent` (the caller then sends the batch's messages one by one,
 * so that only the message at fault is refused).
 */
export function classifyAwsError(err: unknown): AwsErrorClass {
  const code = awsErrorCode(err);
  if (CREDENTIAL_ERRORS.has(code)) return 'unavailable';
  if (MISSING_ERRORS.has(code)) return 'missing';
  if (TRANSIENT_ERRORS.has(code)) return 'retry';
  if (FORBIDDEN_ERRORS.has(code)) return 'permanent';
  const status = awsStatus(err);
  if (status === undefined) return 'unavailable';
  if (status === 408 || status === 502 || status === 503 || status === 504) return 'unavailable';
  if (status === 429 || status >= 500) return 'retry';
  if (status >= 400) return 'permanent';
  return 'retry';
}

/** The outcome class of one refused entry of a batch answer. */
export function classifyFailedEntry(entry: {
  SenderFault?: boolean | undefined;
  Code?: string | undefined;
}): 'permanent' | 'retry' {
  if (entry.Code !== undefined && (TRANSIENT_ERRORS.has(entry.Code) || MISSING_ERRORS.has(entry.Code)))
    return 'retry';
  return entry.SenderFault === true ? 'permanent' : 'retry';
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function messageDetails(message: OutboxMessage): Record<string, unknown> {
  return { messageId: message.id, topic: message.topic };
}

/** What the service is called in messages. */
export function serviceName(service: 'sqs' | 'sns'): string {
  return service === 'sqs' ? 'SQS' : 'SNS';
}

/** The error of one message of a call that failed whole. */
export function callFailedError(
  service: 'sqs' | 'sns',
  where: string,
  message: OutboxMessage,
  destination: string,
  err: unknown,
  kind: AwsErrorClass,
): Error {
  const code = awsErrorCode(err);
  const status = awsStatus(err);
  const details = { ...messageDetails(message), destination, awsError: code, ...(status ? { status } : {}) };
  const svc = serviceName(service);
  if (kind === 'permanent') {
    const hint = FORBIDDEN_ERRORS.has(code)
      ? `; allow ${service === 'sqs' ? 'sqs:SendMessage' : 'sns:Publish'} on it for the relay's role, then replay the dead letter`
      : '';
    return new PermanentDeliveryError(
      `${svc} refused message ${message.id} for ${destination}: ${code}: ${describe(err)}${hint}`,
      { cause: err, details },
    );
  }
  if (kind === 'missing') {
    return new TransportError(
      'destination_missing',
      `${svc} ${service === 'sqs' ? 'queue' : 'topic'} ${destination} does not exist (message ${message.id}, ` +
        `topic ${message.topic}); create it, or fix the name in ${where}`,
      { cause: err, details },
    );
  }
  if (kind === 'unavailable') {
    const hint = CREDENTIAL_ERRORS.has(code)
      ? '; check the credentials the SDK found (AWS_PROFILE, AWS_ACCESS_KEY_ID, the role)'
      : status === undefined
        ? '; check the network, the region and AWS_ENDPOINT_URL'
        : '';
    return new TransportError(
      'unavailable',
      `${svc} (${where}) did not take message ${message.id}: ${code}: ${describe(err)}${hint}`,
      { cause: err, details },
    );
  }
  return new TransportError(
    'send_failed',
    `${svc} did not take message ${message.id} for ${destination}: ${code}: ${describe(err)}`,
    {
      cause: err,
      details,
    },
  );
}

/** The error of one refused entry of a batch answer. */
export function entryFailedError(
  service: 'sqs' | 'sns',
  message: OutboxMessage,
  destination: string,
  entry: { Code?: string | undefined; Message?: string | undefined; SenderFault?: boolean | undefined },
  kind: 'permanent' | 'retry',
): Error {
  const text =
    `${serviceName(service)} refused message ${message.id} for ${destination}: ` +
    `${entry.Code ?? 'no code'}: ${entry.Message ?? 'no message'}${entry.SenderFault ? ' (sender fault)' : ''}`;
  const details = {
    ...messageDetails(message),
    destination,
    awsError: entry.Code,
    senderFault: entry.SenderFault,
  };
  return kind === 'permanent'
    ? new PermanentDeliveryError(text, { details })
    : new TransportError('send_failed', text, { details });
}

/** The batch answer did not mention an entry. */
export function noAnswerError(
  service: 'sqs' | 'sns',
  message: OutboxMessage,
  destination: string,
): TransportError {
  return new TransportError(
    'no_answer',
    `${serviceName(service)} answered the batch to ${destination} without a word on message ${message.id}`,
    { details: { ...messageDetails(message), destination } },
  );
}

/** A field cannot be a message attribute. */
export function attributeNotCarriedError(
  message: OutboxMessage,
  name: string,
  value: string,
): PermanentDeliveryError {
  const why =
    value === ''
      ? 'is empty, which AWS refuses'
      : 'contains characters AWS refuses (control characters, lone surrogates)';
  return new PermanentDeliveryError(
    `message ${message.id} cannot go to SNS/SQS: its ${name} ${why} in a message attribute`,
    { details: { ...messageDetails(message), attribute: name } },
  );
}

/** The message (body and attributes) is over `maxMessageBytes`. */
export function messageTooLargeError(
  message: OutboxMessage,
  size: number,
  limit: number,
  base64: boolean,
): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `message ${message.id} (topic ${message.topic}) is ${size} bytes as SNS/SQS count it` +
      `${base64 ? ' (a binary payload travels as base64, a third larger)' : ''}, over maxMessageBytes of ${limit}; ` +
      'store large data elsewhere (S3) and send a reference',
    { details: { ...messageDetails(message), size, limit } },
  );
}

/** The message's queue or topic name is not legal. */
export function invalidNameError(
  service: 'sqs' | 'sns',
  message: OutboxMessage,
  name: string,
  problem: string,
): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `message ${message.id} cannot go to ${serviceName(service)}: ${service === 'sqs' ? 'queue' : 'topic'} name ` +
      `${JSON.stringify(name)} (from topic ${JSON.stringify(message.topic)}) ${problem}`,
    { details: { ...messageDetails(message), name } },
  );
}

/** Publish after `close()`. */
export function closedError(service: 'sqs' | 'sns', where: string): TransportError {
  return new TransportError(
    'closed',
    `the ${serviceName(service)} transport for ${where} is closed; call start() to open it again`,
    {
      details: { url: where },
    },
  );
}

/** The caller's signal aborted, or `publishTimeoutMs` passed, before AWS answered. */
export function publishTimeoutError(
  service: 'sqs' | 'sns',
  where: string,
  message: OutboxMessage,
  reason: 'aborted' | 'timeout',
  timeoutMs: number,
): TransportError {
  const svc = serviceName(service);
  return new TransportError(
    'publish_timeout',
    reason === 'aborted'
      ? `publish of message ${message.id} to ${svc} (${where}) was aborted before ${svc} answered; it may still be taken`
      : `${svc} (${where}) did not answer for message ${message.id} within publishTimeoutMs (${timeoutMs} ms); it may still be taken`,
    { details: { ...messageDetails(message), url: where } },
  );
}

/** `probe()` or `start()` found the service unusable. */
export function probeFailedError(
  service: 'sqs' | 'sns',
  where: string,
  err: unknown,
  missing?: string,
): TransportError {
  const svc = serviceName(service);
  if (missing !== undefined) {
    return new TransportError(
      'destination_missing',
      `${svc} ${service === 'sqs' ? 'queue' : 'topic'} ${missing} does not exist (${where}); create it or fix the URL`,
      { cause: err, details: { url: where, destination: missing } },
    );
  }
  const code = awsErrorCode(err);
  return new TransportError(
    code === 'probe_aborted' ? 'probe_aborted' : 'unreachable',
    `${svc} (${where}) cannot be used: ${code}: ${describe(err)}` +
      (CREDENTIAL_ERRORS.has(code)
        ? '; check the credentials the SDK found (AWS_PROFILE, AWS_ACCESS_KEY_ID, the role)'
        : '; check the region, the network and AWS_ENDPOINT_URL'),
    { cause: err, details: { url: where, awsError: code } },
  );
}

/** No region in the URL, the options or the SDK's chain. */
export function regionMissingError(service: 'sqs' | 'sns', where: string): TransportError {
  return new TransportError(
    'region_missing',
    `${serviceName(service)} transport for ${where} has no region: put it in the URL ` +
      `(${service}://eu-west-1/…), the region option, or AWS_REGION`,
    { details: { url: where } },
  );
}
