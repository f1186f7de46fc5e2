/**
 * The admin HTTP server: health and readiness probes, Prometheus metrics, a JSON API over the
 * outbox (status, history, topics, relays, dead letters, acknowledgements) and a dashboard.
 * See docs/admin.md.
 *
 * @module
 */
export {
  AdminServer,
  isLoopbackHost,
  type AdminServerOptions,
  type AdminServerAddress,
  type AdminSource,
  type DashboardAsset,
  type MetricsRegistry,
} from './admin-server.js';
export { AdminRequestError, isAdminRequestError } from './admin-request-error.js';
export type { AdminRelay } from './relay-view.js';
export { MAX_IDS_PER_REQUEST } from './validate.js';
export type * from './api-types.js';
