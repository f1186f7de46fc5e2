import { MailroomError } from './mailroom-error.js';

/**
 * Delivery of this message can never succeed (the broker rejects it, the route does not exist,
 * the endpoint answered 4xx…). The relay dead-letters the message at once instead of retrying.
 * Transports return it as a `permanent` outcome; user code may throw it from hooks.
 */
export class PermanentDeliveryError extends MailroomError {
  override name = 'PermanentDeliveryError';

  constructor(message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super('delivery_permanent', message, options);
  }
}

export function isPermanentDeliveryError(err: unknown): err is PermanentDeliveryError {
  return (
    err instanceof PermanentDeliveryError || (err as { name?: unknown })?.name === 'PermanentDeliveryError'
  );
}
