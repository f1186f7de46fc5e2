export { MailroomError, isMailroomError, type MailroomErrorOptions } from './mailroom-error.js';
export { InvalidMessageError, isInvalidMessageError } from './invalid-message-error.js';
export { PayloadTooLargeError, isPayloadTooLargeError } from './payload-too-large-error.js';
export { ConfigError, isConfigError } from './config-error.js';
export { PermanentDeliveryError, isPermanentDeliveryError } from './permanent-delivery-error.js';
export { TransportError, isTransportError } from './transport-error.js';
export { StoreError, isStoreError } from './store-error.js';
export { RelayStateError, isRelayStateError } from './relay-state-error.js';
export { NotATransactionError, isNotATransactionError } from './not-a-transaction-error.js';
export {
  WebhookVerificationError,
  isWebhookVerificationError,
  type WebhookVerificationCode,
} from './webhook-verification-error.js';
export { WaitError, isWaitError } from './wait-error.js';
