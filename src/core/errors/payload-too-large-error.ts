import { MailroomError } from './mailroom-error.js';

/** The encoded payload is larger than the configured `maxPayloadBytes`; nothing was written. */
export class PayloadTooLargeError extends MailroomError {
  override name = 'PayloadTooLargeError';
  readonly size: number;
  readonly limit: number;

  constructor(size: number, limit: number, messageId: string) {
    super(
      'payload_too_large',
      `payload of message ${messageId} is ${size} bytes, over the limit of ${limit} bytes; ` +
        `store large data elsewhere and send a reference, or raise maxPayloadBytes`,
      { details: { size, limit, messageId } },
    );
    this.size = size;
    this.limit = limit;
  }
}

export function isPayloadTooLargeError(err: unknown): err is PayloadTooLargeError {
  return err instanceof PayloadTooLargeError || (err as { name?: unknown })?.name === 'PayloadTooLargeError';
}
