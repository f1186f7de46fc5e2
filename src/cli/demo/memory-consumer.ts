import { toReceivedMessage } from '../../core/received-message.js';
import type { ReceivedMessage } from '../../core/types.js';
import type { MemoryTransport } from '../../transports/memory/memory-transport.js';

/** Handles one message of a topic; throwing has the message handed over again. */
export type DemoHandler = (message: ReceivedMessage) => Promise<void>;

/** Tries of one message before it is given up (and reported): a handler's error is a bug here. */
const MAX_TRIES = 5;
const RETRY_DELAY_MS = 100;
/** How long one wait for new messages lasts before the loop checks whether it was stopped. */
const WAIT_MS = 100;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * The services' side of the demo's in-process broker: hands every message the broker took, in
 * the order it took them and copies included, to the handler of its topic, one at a time, as
 * a queue consumer does. Messages of a topic without a handler are skipped.
 */
export class MemoryConsumer {
  readonly #broker: MemoryTransport;
  readonly #handlers: ReadonlyMap<string, DemoHandler>;
  readonly #onFailure: (message: ReceivedMessage, error: unknown) => void;
  #next = 0;
  #busy = false;
  #stopped = false;
  #loop: Promise<void> | undefined;

  constructor(options: {
    broker: MemoryTransport;
    handlers: ReadonlyMap<string, DemoHandler>;
    /** A message whose handler failed every try. */
    onFailure: (message: ReceivedMessage, error: unknown) => void;
  }) {
    this.#broker = options.broker;
    this.#handlers = options.handlers;
    this.#onFailure = options.onFailure;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /** True when every message the broker took so far was handled. */
  get idle(): boolean {
    return !this.#busy && this.#next >= this.#broker.messages.length;
  }

  /** Stops after the message being handled. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#loop;
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      const taken = await this.#broker.waitFor(this.#next + 1, WAIT_MS).catch(() => undefined);
      if (!taken) continue;
      this.#busy = true;
      try {
        while (this.#next < taken.length && !this.#stopped) {
          await this.#handle(taken[this.#next] as (typeof taken)[number]);
          this.#next++;
        }
      } finally {
        this.#busy = false;
      }
    }
  }

  async #handle(raw: Parameters<typeof toReceivedMessage>[0]): Promise<void> {
    const handler = this.#handlers.get(raw.topic);
    if (!handler) return;
    const message = toReceivedMessage(raw);
    for (let tryNumber = 1; ; tryNumber++) {
      try {
        await handler(message);
        return;
      } catch (err) {
        if (tryNumber >= MAX_TRIES || this.#stopped) {
          this.#onFailure(message, err);
          return;
        }
        await sleep(RETRY_DELAY_MS);
      }
    }
  }
}
