import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createTccHandler, handleTccRequest, type TccHandlerOptions } from '../../../tcc/http-handler.js';
import type { BranchPhase } from '../../../tcc/participant.js';

/** What the server does with one request before the participant's handler sees it. */
export type RequestFault = 'run' | 'hold' | 'slow';

/** The call fields the fault plan looks at. */
export interface CallFields {
  gid: string;
  branch: string;
  phase: BranchPhase;
}

/** What a participant's endpoint saw and answered. */
export interface ParticipantStats {
  requests: number;
  /** 200 `done`: the phase ran. */
  done: number;
  /** 200 `duplicate`: the barrier found the phase already run and did nothing. */
  duplicates: number;
  /** 200 `null-compensation`: a cancel (compensate) whose try (action) never ran here. */
  nullCompensations: number;
  /** 409 on a try (action): insufficient funds, sold out. */
  refused: number;
  /** 5xx answers. */
  failed: number;
  /** Answers held back past the coordinator's call timeout (the phase ran). */
  slowAnswers: number;
  /** Try (action) requests held back until their cancel (compensate) had run. */
  held: number;
  /** Held requests delivered late and refused by the barrier (409), as they must be. */
  lateRefused: number;
  /** Held requests delivered late that ran anyway: a broken participant. */
  lateAccepted: number;
}

interface Held {
  call: CallFields;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

const FIRST_PHASES: readonly BranchPhase[] = ['try', 'action'];
const UNDO_PHASES: readonly BranchPhase[] = ['cancel', 'compensate'];
const MAX_BODY = 64 * 1024;

/**
 * A participant's HTTP endpoint on 127.0.0.1 (an ephemeral port): the `createTccHandler`
 * handler behind a layer that plays the network's tricks on chosen requests — an answer that
 * comes after the caller gave up, a try request that is held back and delivered after its
 * cancel — and counts what the handler answered.
 */
export class ParticipantServer<Tx> {
  readonly stats: ParticipantStats = {
    requests: 0,
    done: 0,
    duplicates: 0,
    nullCompensations: 0,
    refused: 0,
    failed: 0,
    slowAnswers: 0,
    held: 0,
    lateRefused: 0,
    lateAccepted: 0,
  };
  readonly #name: string;
  readonly #options: TccHandlerOptions<Tx>;
  readonly #handler: (req: IncomingMessage, res: ServerResponse) => void;
  readonly #fault: (call: CallFields) => RequestFault;
  readonly #slowMs: number;
  readonly #event: (line: string) => void;
  readonly #held = new Map<string, Held>();
  readonly #late = new Set<Promise<void>>();
  /** Branches whose cancel (compensate) was answered 200: a request held for one is late. */
  readonly #undone = new Set<string>();
  #server: Server | undefined;

  constructor(input: {
    /** `inventory`, `payment`: for the event lines. */
    name: string;
    options: TccHandlerOptions<Tx>;
    fault: (call: CallFields) => RequestFault;
    /** How long a slow answer is held back: longer than the coordinator's call timeout. */
    slowMs: number;
    event: (line: string) => void;
  }) {
    this.#name = input.name;
    this.#options = input.options;
    this.#handler = createTccHandler(input.options);
    this.#fault = input.fault;
    this.#slowMs = input.slowMs;
    this.#event = input.event;
  }

  /** Listens on an ephemeral port; returns the participant's URL (`…/tcc`). */
  async start(): Promise<string> {
    const server = createServer((req, res) => {
      this.#handle(req, res).catch(() => {
        if (!res.headersSent) res.writeHead(500).end();
      });
    });
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}/tcc`;
  }

  /** Try (action) requests still held: their cancel (compensate) has not come yet. */
  get heldNow(): number {
    return this.#held.size;
  }

  /** `gid/branch` of the requests held now. */
  get heldKeys(): string[] {
    return [...this.#held.values()].map((h) => `${h.call.gid}/${h.call.branch}`);
  }

  /**
   * Delivers every request still held, as if the network finally let it through: used at the
   * end, so that nothing a held request could do escapes the audit.
   */
  async flushHeld(): Promise<void> {
    for (const key of [...this.#held.keys()]) this.#deliverLate(key);
    await Promise.all([...this.#late]);
  }

  async close(): Promise<void> {
    await this.flushHeld();
    const server = this.#server;
    if (!server) return;
    this.#server = undefined;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req);
    // The handler takes a body read already (as after express.raw()).
    (req as IncomingMessage & { body?: Buffer }).body = body;
    const call = callOf(body);
    this.stats.requests++;
    const fault = call === undefined ? 'run' : this.#fault(call);
    if (call !== undefined && fault === 'hold' && FIRST_PHASES.includes(call.phase)) {
      // No answer: the caller times out, decides the outcome is unknown and cancels.
      const key = keyOf(call);
      this.#held.set(key, { call, headers: req.headers, body });
      this.stats.held++;
      this.#event(
        `fault: ${this.#name} holds back the ${call.phase} of ${call.gid}; it will be delivered after its ${call.phase === 'try' ? 'cancel' : 'compensation'}`,
      );
      // On a busy event loop the cancel, sent later, can be read first: then this is late already.
      if (this.#undone.has(key)) this.#deliverLate(key);
      return;
    }
    const slow = fault === 'slow';
    if (slow) this.stats.slowAnswers++;
    const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse;
    // The handler answers with one res.end(text) once its transaction committed: counted here,
    // and held back past the caller's timeout for a slow answer.
    res.end = ((...args: unknown[]) => {
      this.#count(call, res.statusCode, args[0]);
      if (call !== undefined && res.statusCode === 200 && UNDO_PHASES.includes(call.phase)) {
        this.#undone.add(keyOf(call));
        this.#deliverLate(keyOf(call));
      }
      if (!slow) return end(...args);
      setTimeout(() => {
        if (!res.destroyed) end(...args);
      }, this.#slowMs);
      return res;
    }) as typeof res.end;
    this.#handler(req, res);
  }

  #count(call: CallFields | undefined, status: number, chunk: unknown): void {
    if (status >= 500) {
      this.stats.failed++;
      return;
    }
    if (status === 409 && call !== undefined && FIRST_PHASES.includes(call.phase)) {
      this.stats.refused++;
      return;
    }
    if (status !== 200) return;
    let answer: { status?: unknown } = {};
    try {
      answer = JSON.parse(String(chunk)) as { status?: unknown };
    } catch {
      // Not the handler's JSON: nothing to count.
    }
    if (answer.status === 'duplicate') this.stats.duplicates++;
    else if (answer.status === 'null-compensation') this.stats.nullCompensations++;
    else this.stats.done++;
  }

  /** The held request, delivered now: its cancel (compensate) has run, so the barrier must refuse it. */
  #deliverLate(key: string): void {
    const held = this.#held.get(key);
    if (!held) return;
    this.#held.delete(key);
    const { call } = held;
    const late = handleTccRequest(this.#options, {
      method: 'POST',
      headers: held.headers,
      body: held.body,
      phaseFromPath: call.phase,
    }).then(
      (answer) => {
        if (answer.status === 409) {
          this.stats.lateRefused++;
          this.#event(
            `${this.#name}: the held ${call.phase} of ${call.gid} arrived after its ${call.phase === 'try' ? 'cancel' : 'compensation'} and was refused (409) by the barrier: nothing ${call.phase === 'try' ? 'reserved' : 'done'}`,
          );
        } else {
          this.stats.lateAccepted++;
          this.#event(
            `${this.#name}: the held ${call.phase} of ${call.gid} arrived after its ${call.phase === 'try' ? 'cancel' : 'compensation'} and was answered ${answer.status} ${answer.body.status ?? answer.body.error ?? ''}: NOT refused`,
          );
        }
      },
      (err: unknown) => {
        this.stats.lateAccepted++;
        this.#event(`${this.#name}: the held ${call.phase} of ${call.gid} failed: ${String(err)}`);
      },
    );
    const tracked = late.finally(() => this.#late.delete(tracked));
    this.#late.add(tracked);
  }
}

function keyOf(call: CallFields): string {
  return `${call.gid}\u0000${call.branch}`;
}

function callOf(body: Buffer): CallFields | undefined {
  try {
    const v = JSON.parse(body.toString('utf8')) as Partial<CallFields>;
    if (typeof v.gid === 'string' && typeof v.branch === 'string' && typeof v.phase === 'string') {
      return { gid: v.gid, branch: v.branch, phase: v.phase };
    }
  } catch {
    // The handler answers 400 for it.
  }
  return undefined;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) break;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
