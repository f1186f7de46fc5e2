import type { IncomingMessage, ServerResponse } from 'node:http';
import { ConfigError } from '../core/errors/config-error.js';
import { isWebhookVerificationError } from '../core/errors/webhook-verification-error.js';
import { silentLogger, type Logger } from '../core/logger.js';
import { custom, func, hasMethods, integer, optionsSchema, string } from '../core/options-schema.js';
import { showValue } from '../core/show-value.js';
import type { JsonValue } from '../core/types.js';
import { secretField, type WebhookSecret } from '../callbacks/webhook-secret.js';
import { verifyWebhookWithKeys, type HeaderSource } from '../callbacks/webhook-signature.js';
import { branchRefProblem, isBarrierOrderError, phaseProblem, TccBarrier } from './barrier.js';
import { BRANCH_PHASES, isBranchRefused, type BranchCall, type BranchPhase } from './participant.js';

/**
 * The participant's side of the TCC/saga HTTP wire (docs/tcc-participants.md): reads a phase
 * call, checks its signature, and runs the phase's handler under the barrier.
 */

/** One phase's business effects, run in the barrier's transaction `tx`. */
export type TccPhaseHandler<Tx> = (tx: Tx, call: BranchCall) => Promise<JsonValue | void>;

/** Options of {@link createTccHandler} and {@link handleTccRequest}. */
export interface TccHandlerOptions<Tx = unknown> {
  /** The participant's barrier, on its own database. */
  barrier: TccBarrier<Tx>;
  /**
   * The branch name this endpoint serves; a call for another branch is answered 404. Leave it
   * out to serve any branch name.
   *
   * @example 'inventory'
   */
  branch?: string;
  /** Reserve: throw a `BranchRefusedError` to refuse (answered 409). */
  try?: TccPhaseHandler<Tx>;
  /** Make the reservation final. */
  confirm?: TccPhaseHandler<Tx>;
  /** Release the reservation. Not called for a branch whose try never ran. */
  cancel?: TccPhaseHandler<Tx>;
  /** A saga step; throw a `BranchRefusedError` to refuse (answered 409). */
  action?: TccPhaseHandler<Tx>;
  /** Undo a saga step. Not called for a step whose action never ran. */
  compensate?: TccPhaseHandler<Tx>;
  /**
   * The secret shared with the coordinator (its `httpSecret`, or `httpParticipant({ secret })`):
   * every request must carry a valid Standard Webhooks signature made with it (else 401). An
   * array accepts any of them, for a key rotation. Without it requests are not authenticated:
   * only for endpoints nobody else can reach.
   */
  secret?: WebhookSecret;
  /**
   * Largest difference between a request's `webhook-timestamp` and this server's clock, either
   * way, in seconds; outside it the request is refused (401) as a possible replay. @default 300
   */
  toleranceSec?: number;
  /** Largest request body accepted; a larger one is answered 413. @default 65536 (64 KiB) */
  maxBodyBytes?: number;
  /** Receives handler failures (answered 500 with a generic message). @default silent */
  logger?: Logger;
}

/** A request as any HTTP framework gives it. */
export interface TccRequest {
  method: string;
  headers: HeaderSource;
  /**
   * The raw body (bytes or string). A body a framework parsed already (`express.json()`) is
   * accepted only without a secret: the signature covers the raw bytes.
   */
  body: Buffer | Uint8Array | string | Record<string, unknown>;
  /** The phase the URL names (its last path segment), checked against the body's. */
  phaseFromPath?: string | undefined;
  /** Aborted when the client goes away; handed to the phase handler as `call.signal`. */
  signal?: AbortSignal | undefined;
}

/** The answer: status and JSON body. */
export interface TccResponse {
  status: number;
  body: { status?: string; result?: JsonValue; error?: string };
  /** Extra headers (`allow` on a 405). */
  headers?: Record<string, string>;
}

const handlerSchema = optionsSchema<TccHandlerOptions>()('createTccHandler', {
  barrier: custom('a TccBarrier', (v): v is TccBarrier => v instanceof TccBarrier, { required: true }),
  branch: string({ expected: 'a branch name, 1 to 128 bytes' }),
  try: func<TccPhaseHandler<unknown>>('an async function (tx, call) => …'),
  confirm: func<TccPhaseHandler<unknown>>('an async function (tx, call) => …'),
  cancel: func<TccPhaseHandler<unknown>>('an async function (tx, call) => …'),
  action: func<TccPhaseHandler<unknown>>('an async function (tx, call) => …'),
  compensate: func<TccPhaseHandler<unknown>>('an async function (tx, call) => …'),
  secret: {
    expected: secretField().expected,
    resolve: (v, at, so): Buffer[] | undefined =>
      v === undefined ? undefined : secretField().resolve(v, at, so),
  },
  toleranceSec: integer({ min: 1, max: 86_400, default: 300 }),
  maxBodyBytes: integer({ min: 256, max: 16 * 1024 * 1024, default: 64 * 1024 }),
  logger: custom(
    'a Logger (debug, info, warn, error)',
    hasMethods<Logger>('debug', 'info', 'warn', 'error'),
    {
      default: silentLogger,
    },
  ),
});

type Resolved = ReturnType<typeof handlerSchema.resolve>;

/** What a client hears of an unexpected failure on this side: the cause goes to the logger only. */
const FAILED = 'the participant failed to run this phase; call it again';

/** Options resolved once per options object (the secret decoded once, not per request). */
const resolvedCache = new WeakMap<object, Resolved>();

function resolve(options: object): Resolved {
  let resolved = resolvedCache.get(options);
  if (resolved === undefined) {
    resolved = handlerSchema.resolve(options);
    const branchError =
      resolved.branch === undefined ? undefined : branchRefProblem('branch', resolved.branch);
    if (branchError !== undefined) {
      throw new ConfigError('branch', `createTccHandler option ${branchError}`, { value: resolved.branch });
    }
    const given = resolved;
    if (!BRANCH_PHASES.some((p) => given[p] !== undefined)) {
      throw new ConfigError(
        'try',
        'createTccHandler has no phase handler: give try, confirm and cancel (TCC), or action and ' +
          'compensate (a saga step)',
      );
    }
    resolvedCache.set(options, resolved);
  }
  return resolved;
}

function fail(status: number, error: string, headers?: Record<string, string>): TccResponse {
  return { status, body: { error }, ...(headers === undefined ? {} : { headers }) };
}

function asBytes(body: Buffer | Uint8Array | string): Uint8Array {
  return typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
}

/**
 * The framework-agnostic core of {@link createTccHandler}: answers one request. For frameworks
 * that read the body themselves (Express, Fastify, Hono…): give it the raw body when a secret is
 * set. Never throws for a bad request; a bad `options` throws a ConfigError.
 *
 * @example
 * ```ts
 * app.post('/tcc/:phase', express.raw({ type: 'application/json' }), async (req, res) => {
 *   const answer = await handleTccRequest(options, {
 *     method: req.method, headers: req.headers, body: req.body, phaseFromPath: req.params.phase,
 *   });
 *   res.status(answer.status).json(answer.body);
 * });
 * ```
 */
export async function handleTccRequest<Tx>(
  options: TccHandlerOptions<Tx>,
  request: TccRequest,
): Promise<TccResponse> {
  return answer(options, resolve(options), request);
}

async function answer<Tx>(
  options: TccHandlerOptions<Tx>,
  resolved: Resolved,
  request: TccRequest,
): Promise<TccResponse> {
  const { secret: keys, toleranceSec, maxBodyBytes, logger } = resolved;
  const barrier = options.barrier;
  if (request.method.toUpperCase() !== 'POST') {
    return fail(405, `use POST, not ${request.method}`, { allow: 'POST' });
  }
  const raw = request.body;
  const isRaw = typeof raw === 'string' || raw instanceof Uint8Array;
  if (isRaw && Buffer.byteLength(raw) > maxBodyBytes) {
    return fail(413, `the body is ${Buffer.byteLength(raw)} bytes, over the limit of ${maxBodyBytes}`);
  }
  if (keys !== undefined) {
    if (!isRaw) {
      logger.error('tcc handler answered 500', {
        error:
          'the handler was given a parsed body, and a secret is set: the signature covers the raw ' +
          'bytes, so give it the raw body (express.raw(), a Fastify content-type parser with parseAs buffer)',
      });
      return fail(500, FAILED);
    }
    try {
      verifyWebhookWithKeys(keys, { headers: request.headers, body: raw, toleranceSec });
    } catch (err) {
      if (!isWebhookVerificationError(err)) throw err;
      return fail(
        401,
        `${err.message} (check the secret: the coordinator and this participant must share it)`,
      );
    }
  }
  let parsed: unknown = raw;
  if (isRaw) {
    try {
      parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(asBytes(raw)));
    } catch (err) {
      return fail(
        400,
        `the body is not JSON (${(err as Error).message}); send { gid, branch, phase, input, attempt }`,
      );
    }
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return fail(
      400,
      `the body must be a JSON object { gid, branch, phase, input, attempt }, got ${showValue(parsed)}`,
    );
  }
  const fields = parsed as Record<string, unknown>;
  for (const field of ['gid', 'branch'] as const) {
    const problem = branchRefProblem(field, fields[field]);
    if (problem !== undefined) return fail(400, `field ${problem}`);
  }
  const phaseError = phaseProblem(fields.phase);
  if (phaseError !== undefined) return fail(400, `field ${phaseError}`);
  const gid = fields.gid as string;
  const branch = fields.branch as string;
  const phase = fields.phase as BranchPhase;
  const attempt = fields.attempt ?? 1;
  if (typeof attempt !== 'number' || !Number.isInteger(attempt) || attempt < 1) {
    return fail(400, `field attempt must be an integer of at least 1, got ${showValue(attempt)}`);
  }
  if (request.phaseFromPath !== undefined && request.phaseFromPath !== phase) {
    return fail(
      400,
      `the URL names phase ${showValue(request.phaseFromPath)} and the body phase ${showValue(phase)}; they must be the same`,
    );
  }
  const handler = options[phase];
  if (handler === undefined) {
    return fail(404, `this participant has no ${phase} handler; it serves ${servedPhases(options)}`);
  }
  if (resolved.branch !== undefined && resolved.branch !== branch) {
    return fail(404, `this endpoint serves branch ${showValue(resolved.branch)}, not ${showValue(branch)}`);
  }
  const call: BranchCall = {
    gid,
    branch,
    phase,
    input: (fields.input ?? null) as JsonValue | null,
    attempt,
    signal: request.signal ?? new AbortController().signal,
  };
  try {
    const outcome = await barrier.run({ gid, branch }, phase, (tx) => handler(tx, call));
    if (outcome.status === 'done' && outcome.value !== undefined) {
      return { status: 200, body: { status: 'done', result: outcome.value } };
    }
    return { status: 200, body: { status: outcome.status } };
  } catch (err) {
    if (isBranchRefused(err)) return fail(409, (err as Error).message);
    if (isBarrierOrderError(err)) {
      // Written for the operator, holds nothing internal: worth showing on the coordinator's side.
      logger.error('tcc handler: phases out of order', { gid, branch, phase, error: err.message });
      return fail(500, err.message);
    }
    logger.error('tcc handler answered 500', { gid, branch, phase, attempt, error: String(err) });
    return fail(500, FAILED);
  }
}

function servedPhases(options: Partial<Record<BranchPhase, unknown>>): string {
  const served = BRANCH_PHASES.filter((p) => typeof options[p] === 'function');
  return served.length === 0 ? 'no phase' : served.join(', ');
}

/** A Node request handler: mount it in `http.createServer`, Express, or any Node HTTP server. */
export type TccHandler = (req: IncomingMessage, res: ServerResponse) => void;

class TooLarge extends Error {}

/** The raw body, within `max` bytes; also one a raw body parser (`express.raw`) already read. */
async function readBody(req: IncomingMessage, max: number): Promise<TccRequest['body']> {
  const given = (req as IncomingMessage & { body?: unknown }).body;
  if (Buffer.isBuffer(given) || typeof given === 'string') return given;
  if (typeof given === 'object' && given !== null && req.readableEnded)
    return given as Record<string, unknown>;
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > max) throw new TooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) throw new TooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

function send(res: ServerResponse, answer: TccResponse): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = JSON.stringify(answer.body);
  res.writeHead(answer.status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(text)),
    'cache-control': 'no-store',
    ...answer.headers,
  });
  res.end(text);
}

/** The last path segment when it names a phase: `/tcc/try?x=1` → `try`. */
function phaseOfPath(url: string | undefined): string | undefined {
  const path = (url ?? '').split('?')[0] ?? '';
  const last = path.replace(/\/+$/, '').split('/').pop() ?? '';
  return (BRANCH_PHASES as readonly string[]).includes(last) ? last : undefined;
}

/**
 * An HTTP endpoint for a TCC participant or saga step, for `httpParticipant` on the coordinator's
 * side: a Node request handler, mounted at any path (`…/tcc`, the phase being the last path
 * segment: `/tcc/try`, `/tcc/confirm`…).
 *
 * Each request runs the phase's handler under the barrier, in one transaction of the barrier's
 * store: a repeated call is answered without running it again, a cancel whose try never ran is a
 * no-op, a try after its cancel is refused. Answers 200 `{ status, result? }` (`done`,
 * `duplicate`, `null-compensation`), 409 `{ error }` for a refusal, 400 a malformed call (the
 * message names the field), 401 a bad or missing signature when a secret is set, 404 a phase
 * with no handler, 405 not a POST, 413 a body over `maxBodyBytes`, 500 a handler failure (the
 * error goes to the logger, not the client).
 *
 * @example
 * ```ts
 * const barrier = new TccBarrier({ store });
 * const handler = createTccHandler({
 *   barrier,
 *   secret: process.env.TCC_SECRET,
 *   try: async (tx, call) => { … reserve, or throw new BranchRefusedError('out of stock') },
 *   confirm: async (tx, call) => { … },
 *   cancel: async (tx, call) => { … },
 * });
 * http.createServer(handler).listen(8080); // the coordinator uses httpParticipant({ url: 'http://host:8080/tcc' })
 * ```
 */
export function createTccHandler<Tx>(options: TccHandlerOptions<Tx>): TccHandler {
  const resolved = resolve(options);
  const { logger, maxBodyBytes } = resolved;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'POST') {
      return send(res, fail(405, `use POST, not ${req.method ?? 'no method'}`, { allow: 'POST' }));
    }
    let body: TccRequest['body'];
    try {
      body = await readBody(req, maxBodyBytes);
    } catch (err) {
      if (!(err instanceof TooLarge)) throw err;
      // The rest of the body is not read: the connection cannot be reused.
      return send(
        res,
        fail(413, `the body is over the limit of ${maxBodyBytes} bytes`, { connection: 'close' }),
      );
    }
    const gone = new AbortController();
    const onClose = () => {
      if (!res.writableFinished) gone.abort(new Error('the client closed the connection'));
    };
    res.on('close', onClose);
    try {
      const answered = await answer(options, resolved, {
        method: req.method,
        headers: req.headers,
        body,
        phaseFromPath: phaseOfPath(req.url),
        signal: gone.signal,
      });
      send(res, answered);
    } finally {
      res.off('close', onClose);
    }
  }

  return (req, res) => {
    handle(req, res)
      .catch((err: unknown) => {
        logger.error('tcc handler answered 500', { error: String(err) });
        send(res, fail(500, FAILED));
      })
      .finally(() => {
        // Whatever of the body is left unread is thrown away, so the response can go out.
        if (!req.readableEnded) req.resume();
      });
  };
}
