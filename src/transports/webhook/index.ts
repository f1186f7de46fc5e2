/**
 * The HTTP webhook transport (`mailroom/webhook`): outbox messages POSTed to an http(s) endpoint,
 * signed per Standard Webhooks; the receiver that verifies and decodes them, and `WebhookConsumer`,
 * the endpoint in the shape of every Mailroom consumer (handler + inbox).
 * docs/transports/webhook.md.
 *
 * @module
 */
export { WebhookTransport } from './webhook-transport.js';
export { parseRetryAfter, batchWebhookId, classifyResult } from './webhook-outcome.js';
export {
  resolveWebhookOptions,
  parseUrlTemplate,
  resolvePath,
  PLACEHOLDERS,
  type WebhookTransportOptions,
  type ResolvedWebhookTransportOptions,
  type WebhookEndpoint,
} from './webhook-options.js';
export {
  messageHeaders,
  batchEntry,
  ID_HEADER,
  TOPIC_HEADER,
  KEY_HEADER,
  TYPE_HEADER,
  ATTEMPT_HEADER,
  CREATED_AT_HEADER,
  HEADER_NAMES_HEADER,
  ENCODED_HEADERS_HEADER,
  BATCH_HEADER,
  type BatchEntry,
} from './webhook-wire.js';
export { decodeWebhookRequest } from './webhook-decode.js';
export {
  createWebhookReceiver,
  verifyWebhookRequest,
  type WebhookReceiver,
  type WebhookReceiverOptions,
  type WebhookMessageHandler,
  type WebhookRequestInfo,
  type VerifyWebhookRequestOptions,
  type VerifiedWebhookRequest,
} from './receiver.js';
export {
  WebhookConsumer,
  type WebhookConsumerAddress,
  type WebhookRequestListener,
} from './webhook-consumer.js';
export {
  resolveWebhookConsumerOptions,
  type WebhookConsumerOptions,
  type WebhookConsumerBaseOptions,
  type WebhookListenOptions,
  type ResolvedWebhookConsumerOptions,
  type ConsumerContext,
  type ConsumerHandler,
  type ConsumerInbox,
} from './webhook-consumer-options.js';
export type { WebhookConsumerEvents } from './webhook-consumer-events.js';
export { WebhookStatusError, isWebhookStatusError } from './webhook-status-error.js';
export { generateWebhookSecret, type WebhookSecret } from '../../callbacks/webhook-secret.js';
