/**
 * Mailroom's {@link Logger} over the loggers applications already use, with Mailroom's field
 * rules (errors as `{ name, code, message, cause }`, secrets masked: `logFields`) kept, since
 * neither pino's path-based `redact` nor winston masks credentials inside a string.
 *
 * No import of pino or winston: each adapter names the slice of the logger it calls.
 *
 * @module
 */
import { logFields, type LogFieldsOptions } from './log-fields.js';
import type { Logger } from './logger.js';
import { redactSecrets } from './redact.js';

/** The slice of a pino logger (or a pino child) the adapter calls: `(object, message)`. */
export interface PinoLike {
  debug(object: Record<string, unknown>, message: string): void;
  info(object: Record<string, unknown>, message: string): void;
  warn(object: Record<string, unknown>, message: string): void;
  error(object: Record<string, unknown>, message: string): void;
}

/**
 * A Mailroom logger writing through pino. pino's own level, destination, `base` fields and
 * transports apply; Mailroom's fields arrive already redacted and with errors as objects (so
 * pino's `err` serializer is not needed, and no stack is written unless `stack` is set).
 *
 * @example
 * import { pino } from 'pino';
 * const relay = new Relay({ store, transport, logger: pinoLogger(pino({ level: 'info' })) });
 */
export function pinoLogger(target: PinoLike, options: LogFieldsOptions = {}): Logger {
  const fields = (f: Record<string, unknown> | undefined) => (f ? logFields(f, options) : {});
  return {
    debug: (m, f) => target.debug(fields(f), redactSecrets(m)),
    info: (m, f) => target.info(fields(f), redactSecrets(m)),
    warn: (m, f) => target.warn(fields(f), redactSecrets(m)),
    error: (m, f) => target.error(fields(f), redactSecrets(m)),
  };
}

/**
 * `logger` with Mailroom's field rules applied before each call: for loggers that already take
 * `(message, fields)` (winston, a `console`-like object, your own), which fit {@link Logger} as
 * they are but would write secrets and `{}` for errors.
 *
 * @example
 * import winston from 'winston';
 * const logger = redactingLogger(winston.createLogger({ transports: [new winston.transports.Console()] }));
 */
export function redactingLogger(logger: Logger, options: LogFieldsOptions = {}): Logger {
  const fields = (f: Record<string, unknown> | undefined) => (f ? logFields(f, options) : undefined);
  return {
    debug: (m, f) => logger.debug(redactSecrets(m), fields(f)),
    info: (m, f) => logger.info(redactSecrets(m), fields(f)),
    warn: (m, f) => logger.warn(redactSecrets(m), fields(f)),
    error: (m, f) => logger.error(redactSecrets(m), fields(f)),
  };
}
