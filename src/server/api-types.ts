/**
 * The JSON the admin server's API answers with (docs/admin.md). Shared by the server and the
 * dashboard: dates are ISO-8601 strings, counts are numbers, absent values are `null`.
 */
import type { AckCounts } from '../core/ports.js';

/** Every error response: `{ error: { code, message } }` with a 4xx or 5xx status. */
export interface ApiErrorResponse {
  error: {
    /** Stable, snake_case: `invalid_json`, `unknown_source`, `not_found`, `unauthorized`… */
    code: string;
    /** What was wrong, which value, and what to do. */
    message: string;
  };
}

/** `GET /healthz`: the process is alive (never touches the database). */
export interface HealthResponse {
  status: 'ok';
}

/** Where the transport stands: `none` when the server runs without a relay or transport. */
export type TransportState = 'up' | 'unavailable' | 'none';

/** `GET /readyz`: 200 when every check is ok, 503 otherwise. */
export interface ReadinessResponse {
  ready: boolean;
  checks: {
    database: { ok: boolean; error?: string };
    transport: { ok: boolean; state: TransportState; since?: string; error?: string };
  };
}

/** {@link import('../core/ports.js').OutboxStats} as JSON. */
export interface ApiOutboxStats {
  backlog: number;
  inFlight: number;
  scheduled: number;
  oldestAgeMs: number | null;
  deadLetters: number;
  topics: Array<{ topic: string; backlog: number; deadLetters: number }>;
  approximate?: boolean;
  estimated?: string[];
  topicsTruncated?: boolean;
}

/** One source (database and schema) in {@link StatusResponse}. */
export interface SourceStatus {
  name: string;
  /** Null when the store did not answer; `error` says why. */
  stats: ApiOutboxStats | null;
  /** Null when the store has no acknowledged delivery (or did not answer). */
  acks: AckCounts | null;
  error: string | null;
}

/** `GET /api/status`. */
export interface StatusResponse {
  version: string;
  time: string;
  /** The relay's owner name; null in `mailroom admin` (no relay in this process). */
  owner: string | null;
  wakeup: 'notify' | 'poll' | 'replication' | null;
  transport: { name: string; state: TransportState; since: string | null; error: string | null };
  /** True when a token is configured, so the POST endpoints are enabled. */
  mutations: boolean;
  sources: SourceStatus[];
}

/** One sample of one source in {@link HistoryResponse}. */
export interface HistoryPoint {
  t: string;
  source: string;
  backlog: number;
  inFlight: number;
  scheduled: number;
  deadLetters: number;
  oldestAgeMs: number | null;
  /** Messages delivered since the previous point of this source. */
  delivered: number;
  retried: number;
  dead: number;
  /** Commit → broker confirm of the messages delivered in the interval; null when none. */
  latencyP50Ms: number | null;
  latencyP95Ms: number | null;
}

/** `GET /api/history`: the samples the server keeps in memory, oldest first. */
export interface HistoryResponse {
  intervalMs: number;
  points: HistoryPoint[];
}

/** `GET /api/topics`. */
export interface TopicsResponse {
  topics: Array<{ topic: string; backlog: number; deadLetters: number }>;
  /** True when the store listed only the busiest topics. */
  truncated: boolean;
}

/** One relay in {@link RelaysResponse}. */
export interface RelayRow {
  owner: string;
  host: string | null;
  pid: number | null;
  version: string | null;
  wakeup: string | null;
  state: string;
  startedAt: string | null;
  heartbeatAt: string | null;
  alive: boolean;
  inFlight: number;
}

/** `GET /api/relays`. */
export interface RelaysResponse {
  relays: RelayRow[];
}

/** One dead letter in {@link DeadLettersResponse}. */
export interface DeadLetterRow {
  id: string;
  topic: string;
  key: string | null;
  type: string | null;
  attempts: number;
  error: string;
  deadAt: string;
  createdAt: string;
  contentType: string;
  /** Payload size in bytes. */
  size: number;
  /** The first 200 characters of the payload as text (binary bytes replaced). */
  preview: string;
}

/** `GET /api/dead-letters`: up to `limit` dead letters, oldest first, and how many match. */
export interface DeadLettersResponse {
  items: DeadLetterRow[];
  count: number;
}

/** `GET /api/dead-letters/<id>`. */
export interface DeadLetterDetail extends DeadLetterRow {
  headers: Record<string, string>;
  /** `json`: the parsed payload; `utf8`: text; `base64`: bytes that are not UTF-8 text. */
  payload: { encoding: 'json' | 'utf8' | 'base64'; value: unknown };
}

/** Body of `POST /api/dead-letters/replay` and `/purge`: exactly one of `ids`, `topic`, `all`. */
export type DeadLetterActionRequest = ({ ids: string[] } | { topic: string } | { all: true }) & {
  source?: string;
};

/** `POST /api/dead-letters/replay`. */
export interface ReplayResponse {
  /** How many dead letters went back into the outbox. */
  replayed: number;
  /** Their ids: all of them, or the first 1000 of a bigger replay (by topic or all). */
  ids: string[];
}

/** `POST /api/dead-letters/purge`. */
export interface PurgeResponse {
  /** How many dead letters were deleted. */
  purged: number;
  /** Their ids: all of them, or the first 1000 of a bigger purge (by topic or all). */
  ids: string[];
}

/** One message sent with `ack` in {@link AcksResponse}. */
export interface AckRow {
  id: string;
  topic: string | null;
  state: 'awaiting-ack' | 'resending' | 'acknowledged' | 'expired';
  /** Resends so far. */
  attempts: number;
  deadline: string | null;
  sentAt: string | null;
  ackedAt: string | null;
  consumer: string | null;
}

/** `GET /api/acks`. */
export interface AcksResponse {
  items: AckRow[];
}
