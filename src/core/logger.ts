/**
 * Structured logger: the four methods Mailroom calls. Pass your own (pino, winston, console:
 * docs/logging.md shows the adapters) or the CLI's; the library default is {@link silentLogger}.
 *
 * `fields` use the names of `LogFields` (src/core/log-fields.ts): `component`, `event` (a
 * stable id of the state change), `topic`, `messageId`, `error` (an Error or its message),
 * `durationMs`, … Values may be errors, numbers, strings, plain objects; a logger that writes
 * them masks secrets (`logFields` does it). Lines at `info` and above report changes of state,
 * never one line per message.
 */
export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

/** A logger that drops everything: the library default, so it never writes to your stdout. */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};

/**
 * A logger that adds `bindings` to every line of `logger` (a line's own fields win), e.g.
 * `withLogFields(logger, { component: 'relay', source: 'orders' })`.
 */
export function withLogFields(logger: Logger, bindings: Record<string, unknown>): Logger {
  const add = (fields: Record<string, unknown> | undefined) =>
    fields ? { ...bindings, ...fields } : bindings;
  return {
    debug: (m, f) => logger.debug(m, add(f)),
    info: (m, f) => logger.info(m, add(f)),
    warn: (m, f) => logger.warn(m, add(f)),
    error: (m, f) => logger.error(m, add(f)),
  };
}
