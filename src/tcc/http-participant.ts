import { ConfigError } from '../core/errors/config-error.js';
import { custom, func, integer, optionsSchema, string } from '../core/options-schema.js';
import { redactUrl } from '../core/redact.js';
import { showValue } from '../core/show-value.js';
import type { JsonValue } from '../core/types.js';
import { uuidv7 } from '../core/uuid.js';
import { webhookKeys, type WebhookSecret } from '../callbacks/webhook-secret.js';
import { webhookSignature } from '../callbacks/webhook-signature.js';
import {
  BranchRefusedError,
  BranchUnknownError,
  type BranchCall,
  type BranchPhase,
  type ParticipantDescriptor,
  type SagaParticipant,
  type TccParticipant,
} from './participant.js';

/**
 * The coordinator's side of the TCC/saga HTTP wire (docs/tcc-participants.md, "The wire"):
 * each phase is a `POST <url>/<phase>` of `{ gid, branch, phase, input, attempt }`, signed with
 * Standard Webhooks headers when a secret is shared; the status says what happened.
 */

/** Options of {@link httpParticipant}. */
export interface HttpParticipantOptions {
  /**
   * The participant's endpoint. The phase is appended as a path segment (`…/tcc` → `…/tcc/try`),
   * or replaces `{phase}` where the URL has it (`…/tcc/{phase}/v1`). Stored with the branch, so
   * recovery (also `mailroom tcc recover`) reaches it after a crash: put no credentials in it.
   *
   * @example 'http://inventory.internal:8080/tcc'
   */
  url: string;
  /**
   * Deadline of each call, connecting and reading the answer included. A call past it is of
   * unknown outcome: a try (action) is cancelled (compensated), a confirm (cancel) retried.
   *
   * @default 10000
   */
  timeoutMs?: number;
  /**
   * The secret shared with the participant's handler (`createTccHandler({ secret })`): each
   * request is signed with it (Standard Webhooks). An array signs with each, for a key rotation.
   */
  secret?: WebhookSecret | undefined;
  /** More request headers (an `authorization` for a gateway…); never shown in errors. */
  headers?: Readonly<Record<string, string>>;
  /** @default globalThis.fetch */
  fetch?: typeof fetch;
}

/** A participant reached over HTTP: both a TCC participant and a saga step. */
export interface HttpParticipant
  extends
    TccParticipant<JsonValue | null, JsonValue | undefined>,
    SagaParticipant<JsonValue | null, JsonValue | undefined> {
  readonly descriptor: Extract<ParticipantDescriptor, { kind: 'http' }>;
}

/** Most characters of the participant's error text an error message repeats. */
const MAX_SAID = 300;

const httpParticipantSchema = optionsSchema<HttpParticipantOptions>()('httpParticipant', {
  url: string({
    pattern: /^https?:\/\//i,
    expected: 'an http:// or https:// URL',
    secret: true,
    required: true,
  }),
  timeoutMs: integer({ min: 100, max: 600_000, default: 10_000 }),
  // Checked (form, length) here; the keys are decoded below, the value never shown.
  secret: {
    expected: 'a webhook secret',
    resolve: (v: unknown): Buffer[] | undefined =>
      v === undefined ? undefined : webhookKeys(v, 'httpParticipant option secret', 'secret'),
  },
  headers: custom(
    'an object of header names to string values',
    (v): v is Readonly<Record<string, string>> =>
      typeof v === 'object' &&
      v !== null &&
      !Array.isArray(v) &&
      Object.values(v as Record<string, unknown>).every((x) => typeof x === 'string'),
  ),
  fetch: func<typeof fetch>('a fetch function'),
});

/** Headers the participant sets itself: a user header of the same name would break the wire. */
const OWN_HEADERS = new Set(['content-type', 'webhook-id', 'webhook-timestamp', 'webhook-signature']);

/** The URL one phase is POSTed to. */
export function phaseUrl(url: string, phase: BranchPhase): string {
  if (url.includes('{phase}')) return url.replaceAll('{phase}', phase);
  const u = new URL(url);
  u.pathname = `${u.pathname.replace(/\/+$/, '')}/${phase}`;
  return u.toString();
}

/**
 * A participant behind an HTTP endpoint (what `createTccHandler` serves), usable as a TCC
 * participant (`t.try(branch, p, input)`) and as a saga step (`s.step(branch, p, input)`).
 *
 * A try (action) resolves with the `result` the endpoint answered, throws a
 * {@link BranchRefusedError} when it answered 409 (or any 4xx but 408 and 429), and a
 * {@link BranchUnknownError} on 5xx, 408, 429, a timeout, a connection error or a malformed
 * answer. A confirm, cancel or compensate throws `BranchUnknownError` on anything but 2xx: the
 * coordinator retries it until it succeeds.
 *
 * @example
 * ```ts
 * const inventory = httpParticipant({ url: 'http://inventory.internal/tcc', secret: process.env.TCC_SECRET });
 * await coordinator.run(async (t) => {
 *   await t.try('inventory', inventory, { sku: 'A-1', qty: 2 });
 * });
 * ```
 */
export function httpParticipant(options: HttpParticipantOptions): HttpParticipant {
  const resolved = httpParticipantSchema.resolve(options);
  const { url, timeoutMs, secret: keys, headers = {} } = resolved;
  const shown = redactUrl(url);
  try {
    // Every phase's URL must parse, `{phase}` or not.
    new URL(phaseUrl(url, 'try'));
  } catch (err) {
    throw new ConfigError(
      'url',
      `httpParticipant option url is not a valid URL: ${showValue(shown)}`,
      {},
      err,
    );
  }
  for (const name of Object.keys(headers)) {
    if (OWN_HEADERS.has(name.toLowerCase())) {
      throw new ConfigError(
        `headers.${name}`,
        `httpParticipant option headers must not set ${name}: the participant sets it (the wire's ` +
          'content type and signature); leave it out',
      );
    }
  }
  const fetchFn = resolved.fetch ?? globalThis.fetch.bind(globalThis);

  async function call(phase: BranchPhase, c: BranchCall<JsonValue | null>): Promise<JsonValue | undefined> {
    const target = phaseUrl(url, phase);
    const where = `${phase} of branch ${showValue(c.branch)} (global transaction ${showValue(c.gid)}) at ${redactUrl(target)}`;
    const details = { gid: c.gid, branch: c.branch, phase, url: redactUrl(target) };
    const firstPhase = phase === 'try' || phase === 'action';
    const body = Buffer.from(
      JSON.stringify({ gid: c.gid, branch: c.branch, phase, input: c.input ?? null, attempt: c.attempt }),
      'utf8',
    );
    const requestHeaders: Record<string, string> = {
      'user-agent': 'mailroom',
      ...headers,
      'content-type': 'application/json',
    };
    if (keys !== undefined) {
      // A new id per request: the barrier, not the webhook-id, deduplicates calls; the id only
      // has to be unique and fit the header (gid and branch may not).
      const id = uuidv7();
      const timestamp = String(Math.floor(Date.now() / 1000));
      requestHeaders['webhook-id'] = id;
      requestHeaders['webhook-timestamp'] = timestamp;
      requestHeaders['webhook-signature'] = webhookSignature(keys, id, timestamp, body);
    }
    const deadline = AbortSignal.timeout(timeoutMs);
    const signal = c.signal === undefined ? deadline : AbortSignal.any([c.signal, deadline]);
    let status: number;
    let text: string;
    try {
      const response = await fetchFn(target, {
        method: 'POST',
        headers: requestHeaders,
        body,
        redirect: 'manual',
        signal,
      });
      status = response.status;
      text = await response.text();
    } catch (err) {
      const happened = deadline.aborted
        ? `got no answer within ${timeoutMs} ms`
        : c.signal?.aborted
          ? 'was aborted by the coordinator (its deadline passed, or it is closing)'
          : `failed: ${String((err as { cause?: unknown } | null)?.cause ?? err)}`;
      throw new BranchUnknownError(`${where} ${happened}; its outcome is unknown`, {
        cause: err,
        details,
      });
    }
    let answer: unknown;
    try {
      answer = text.trim() === '' ? {} : JSON.parse(text);
    } catch {
      answer = undefined;
    }
    if (status >= 200 && status < 300) {
      if (typeof answer !== 'object' || answer === null || Array.isArray(answer)) {
        throw new BranchUnknownError(
          `${where} answered ${status} with a body that is not a JSON object (${showValue(text.slice(0, 80))}); ` +
            'its outcome is unknown. The participant must answer {"result": …} or an empty body',
          { details: { ...details, status } },
        );
      }
      return (answer as { result?: JsonValue }).result;
    }
    const error = (answer as { error?: unknown } | undefined)?.error;
    const said = (typeof error === 'string' ? error : text).slice(0, MAX_SAID);
    const hint =
      status === 401 || status === 403
        ? ' (check the secret: the coordinator and the participant must share it)'
        : status === 404
          ? ' (check the url, and that the participant has a handler for this phase)'
          : '';
    const message = `${where} answered ${status}${said ? `: ${said}` : ''}${hint}`;
    const refused = status >= 400 && status < 500 && status !== 408 && status !== 429;
    if (refused && firstPhase) throw new BranchRefusedError(message, { details: { ...details, status } });
    throw new BranchUnknownError(
      `${message}; ${firstPhase ? 'its outcome is unknown' : 'the coordinator will retry it'}`,
      { details: { ...details, status } },
    );
  }

  return {
    descriptor: { kind: 'http', url, timeoutMs },
    try: (c) => call('try', c),
    confirm: (c) => call('confirm', c),
    cancel: (c) => call('cancel', c),
    action: (c) => call('action', c),
    compensate: (c) => call('compensate', c),
  };
}

/**
 * The participant a stored `{ kind: 'http', url, timeoutMs }` descriptor names: how recovery
 * calls HTTP branches of a transaction whose coordinator is gone.
 */
export function httpParticipantFromDescriptor(
  descriptor: ParticipantDescriptor,
  options: Omit<HttpParticipantOptions, 'url' | 'timeoutMs'> = {},
): HttpParticipant {
  if (typeof descriptor !== 'object' || descriptor === null || descriptor.kind !== 'http') {
    throw new ConfigError(
      'participant',
      `httpParticipantFromDescriptor needs a descriptor { kind: 'http', url, timeoutMs }, got ${showValue(
        (descriptor as { kind?: unknown } | null)?.kind ?? descriptor,
      )}`,
    );
  }
  return httpParticipant({
    ...options,
    url: descriptor.url,
    timeoutMs: descriptor.timeoutMs,
  });
}
