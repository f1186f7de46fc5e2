import { MailroomError } from './mailroom-error.js';

/** A configuration value (option, flag, environment variable, config file key) is invalid. */
export class ConfigError extends MailroomError {
  override name = 'ConfigError';
  /** The option at fault, spelled as the user wrote it (`--batch-size`, `relay.batchSize`…). */
  readonly key: string;

  constructor(key: string, message: string, details: Record<string, unknown> = {}, cause?: unknown) {
    super('invalid_config', message, { details: { key, ...details }, cause });
    this.key = key;
  }
}

export function isConfigError(err: unknown): err is ConfigError {
  return err instanceof ConfigError || (err as { name?: unknown })?.name === 'ConfigError';
}
