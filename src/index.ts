/**
 * Mailroom: transactional outbox and relay. The root entry point holds the core (message
 * model, `Outbox`, `Relay`, ports, errors); stores and transports live at subpaths
 * (`mailroom/postgres`, `mailroom/rabbitmq`, `mailroom/memory`, …) so you load only the
 * drivers you use.
 *
 * @module
 */
export * from './core/index.js';
export * from './inbox/index.js';
export * from './consumer/index.js';
export type { TracingOptions, TracerProviderLike } from './tracing/tracing-options.js';
