/**
 * Loads `@opentelemetry/api`, an optional peer dependency, once and on first use. Everything in
 * Mailroom that traces asks {@link otelApi} and does nothing when it answers `undefined`.
 *
 * Loaded with `require` rather than `await import()`: a top-level `await` would make every module
 * that imports this one (the Outbox among them) an async module, which `require(esm)` of Mailroom
 * refuses (`ERR_REQUIRE_ASYNC_MODULE`), and a lazy `import()` would put a promise on the first
 * `enqueue`. Node resolves the package to its CommonJS build for `import` and `require` alike
 * (its `exports` has no `import` condition), and the API keeps its registrations on
 * `globalThis[Symbol.for('opentelemetry.js.api.1')]` in any case, so the copy loaded here sees the
 * SDK the application registered.
 *
 * @module
 */
import { createRequire } from 'node:module';

import type * as OtelApi from '@opentelemetry/api';

/** The parts of `@opentelemetry/api` Mailroom uses. */
export type OtelApiModule = Pick<
  typeof OtelApi,
  'context' | 'propagation' | 'trace' | 'SpanKind' | 'SpanStatusCode' | 'ROOT_CONTEXT' | 'createContextKey'
>;

/** `undefined` until first asked; `null` when the package is not installed. */
let loaded: OtelApiModule | null | undefined;

/**
 * The OpenTelemetry API, or `undefined` when `@opentelemetry/api` is not installed (or cannot be
 * loaded). Loaded once per process.
 */
export function otelApi(): OtelApiModule | undefined {
  if (loaded === undefined) loaded = loadOtelApi(createRequire(import.meta.url));
  return loaded ?? undefined;
}

/**
 * Loads the API with `load` (a `require`); `null` when that fails. Exported for the test that
 * proves Mailroom works without the package.
 */
export function loadOtelApi(load: (id: string) => unknown): OtelApiModule | null {
  try {
    const api = load('@opentelemetry/api') as Partial<OtelApiModule> | null;
    // A package of that name that is not the API (a stub, a wrong major version): do without.
    if (
      api === null ||
      typeof api !== 'object' ||
      typeof api.trace?.getTracer !== 'function' ||
      typeof api.propagation?.inject !== 'function' ||
      typeof api.context?.with !== 'function'
    ) {
      return null;
    }
    return api as OtelApiModule;
  } catch {
    return null;
  }
}

/**
 * Replaces the loaded API: `null` acts as if the package were not installed, `undefined` loads it
 * again on next use. For tests only.
 *
 * @internal
 */
export function setOtelApiForTests(api: OtelApiModule | null | undefined): void {
  loaded = api;
}
