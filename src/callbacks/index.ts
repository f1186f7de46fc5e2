/**
 * Callbacks and HTTP acknowledgements (`mailroom/callbacks`): Standard Webhooks signing and
 * verification, the dispatcher that POSTs message outcomes to callback URLs, and the HTTP
 * endpoint (and its client) through which receivers that do not run Mailroom acknowledge
 * messages. See docs/callbacks.md.
 */
export { generateWebhookSecret, MIN_SECRET_BYTES, type WebhookSecret } from './webhook-secret.js';
export {
  signWebhook,
  verifyWebhook,
  WEBHOOK_ID_HEADER,
  WEBHOOK_TIMESTAMP_HEADER,
  WEBHOOK_SIGNATURE_HEADER,
  type SignWebhookOptions,
  type VerifyWebhookOptions,
  type VerifiedWebhook,
  type WebhookHeaders,
  type WebhookBody,
  type HeaderSource,
} from './webhook-signature.js';
export { CallbackDispatcher, type CallbackDispatcherEvents } from './callback-dispatcher.js';
export {
  callbackDispatcherOptionsSchema,
  resolveCallbackDispatcherOptions,
  type CallbackDispatcherOptions,
  type CallbackRetryOptions,
  type ResolvedCallbackDispatcherOptions,
} from './callback-dispatcher-options.js';
export { callbackPayload, type CallbackPayload } from './callback-post.js';
export { createAckHandler, type AckHandler, type AckHandlerOptions, type HttpAckBody } from './http-ack.js';
export { sendHttpAck, type SendHttpAckOptions } from './http-ack-client.js';
export {
  WebhookVerificationError,
  isWebhookVerificationError,
  type WebhookVerificationCode,
} from '../core/errors/webhook-verification-error.js';
