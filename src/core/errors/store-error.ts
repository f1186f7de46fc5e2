import { MailroomError } from './mailroom-error.js';

/**
 * A database problem the store recognised: schema not migrated (`schema_missing`), database
 * unreachable (`unreachable`), a newer schema than this version knows (`schema_too_new`).
 */
export class StoreError extends MailroomError {
  override name = 'StoreError';

  constructor(
    code: string,
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(code, message, options);
  }
}

export function isStoreError(err: unknown): err is StoreError {
  return err instanceof StoreError || (err as { name?: unknown })?.name === 'StoreError';
}
