import { isUuid } from '../core/uuid.js';
import { AdminRequestError } from './admin-request-error.js';

/** Most ids one replay or purge request may name (use a topic or `all` for more). */
export const MAX_IDS_PER_REQUEST = 1000;

/** A value as it may appear in an error message: quoted, and cut short. */
export function shown(value: unknown): string {
  const text = typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value));
  const cut = text.length > 80 ? `${text.slice(0, 80)}…` : text;
  return JSON.stringify(cut);
}

/**
 * The query parameters of a request, each at most once and each one of `allowed`: an unknown or
 * repeated parameter is a 400 that names it.
 */
export function queryParams(search: URLSearchParams, allowed: readonly string[]): Map<string, string> {
  const params = new Map<string, string>();
  for (const [name, value] of search) {
    if (!allowed.includes(name)) {
      throw new AdminRequestError(
        400,
        'unknown_parameter',
        allowed.length === 0
          ? `unknown query parameter ${shown(name)}: this route takes none`
          : `unknown query parameter ${shown(name)}; this route takes ${allowed.join(', ')}`,
      );
    }
    if (params.has(name)) {
      throw new AdminRequestError(
        400,
        'invalid_parameter',
        `query parameter ${shown(name)} is given twice; give it once`,
      );
    }
    params.set(name, value);
  }
  return params;
}

/** `limit` between 1 and `max`, or `fallback` when absent. */
export function limitParam(value: string | undefined, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^[0-9]{1,6}$/.test(value) || Number(value) < 1 || Number(value) > max) {
    throw new AdminRequestError(
      400,
      'invalid_limit',
      `limit ${shown(value)} is not a whole number from 1 to ${max}; give e.g. limit=${fallback}`,
    );
  }
  return Number(value);
}

/** A message id from a path or body: a UUID, or a 400 naming the value. */
export function messageId(value: unknown): string {
  if (!isUuid(value)) {
    throw new AdminRequestError(
      400,
      'invalid_id',
      `${shown(value)} is not a message id; ids are UUIDs such as 0190d7e2-8f3a-7b4c-9d2e-1f0a3b5c7d9e`,
    );
  }
  return value.toLowerCase();
}

/** What a replay or purge request asks for. */
export interface DeadLetterSelection {
  source: string | undefined;
  /** Exactly one of these. */
  ids?: string[];
  topic?: string;
  all?: true;
}

/**
 * The body of `POST /api/dead-letters/replay` and `/purge`: an object with exactly one of `ids`
 * (1 to {@link MAX_IDS_PER_REQUEST} UUIDs), `topic` or `all: true`, and an optional `source`.
 */
export function deadLetterSelection(body: unknown): DeadLetterSelection {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new AdminRequestError(
      400,
      'invalid_body',
      `the body is ${shown(body)}, not a JSON object; send {"ids":["<uuid>"]}, {"topic":"<topic>"} or {"all":true}`,
    );
  }
  const fields = body as Record<string, unknown>;
  for (const name of Object.keys(fields)) {
    if (!['ids', 'topic', 'all', 'source'].includes(name)) {
      throw new AdminRequestError(
        400,
        'unknown_field',
        `unknown field ${shown(name)}; the body takes ids, topic or all, and optionally source`,
      );
    }
  }
  const given = (['ids', 'topic', 'all'] as const).filter((k) => fields[k] !== undefined);
  if (given.length !== 1) {
    throw new AdminRequestError(
      400,
      'invalid_body',
      given.length === 0
        ? 'say which dead letters: {"ids":["<uuid>"]}, {"topic":"<topic>"} or {"all":true}'
        : `give only one of ids, topic and all (got ${given.join(' and ')})`,
    );
  }
  let source: string | undefined;
  if (fields.source !== undefined) {
    if (typeof fields.source !== 'string' || fields.source === '') {
      throw new AdminRequestError(400, 'invalid_body', `source ${shown(fields.source)} is not a source name`);
    }
    source = fields.source;
  }
  if (fields.ids !== undefined) {
    const ids = fields.ids;
    if (!Array.isArray(ids) || ids.length === 0 || ids.length > MAX_IDS_PER_REQUEST) {
      throw new AdminRequestError(
        400,
        'invalid_body',
        `ids must be a list of 1 to ${MAX_IDS_PER_REQUEST} message ids (got ${Array.isArray(ids) ? `${ids.length} ids` : shown(ids)}); for more, replay or purge by topic or {"all":true}`,
      );
    }
    return { source, ids: [...new Set(ids.map(messageId))] };
  }
  if (fields.topic !== undefined) {
    if (typeof fields.topic !== 'string' || fields.topic === '' || fields.topic.length > 255) {
      throw new AdminRequestError(
        400,
        'invalid_body',
        `topic ${shown(fields.topic)} is not a topic: give a non-empty string of at most 255 characters`,
      );
    }
    return { source, topic: fields.topic };
  }
  if (fields.all !== true) {
    throw new AdminRequestError(
      400,
      'invalid_body',
      `all must be true (got ${shown(fields.all)}); to name dead letters, send ids`,
    );
  }
  return { source, all: true };
}
