/**
 * Logger throughput: `npx tsx bench/logger.ts [lines] [rounds] [sink]` (200000, 3, devnull) writes
 * `lines` info lines with the fields of a typical relay line (every tenth with an error that has
 * a cause) to /dev/null (sink `devnull`, one write(2) per line as stderr to a file or pipe does),
 * or to a function that drops them (sink `noop`: the cost of formatting alone), through:
 *
 *   legacy        the CLI logger before issue 19 (JSON.stringify of the fields as given)
 *   mailroom      createCliLogger: stable fields, errors as objects, secrets masked
 *   pino-sync     pino 10 to a synchronous destination (one write per line, like ours)
 *   pino-async    pino 10 to an asynchronous destination (4 KiB buffer, flushed at the end)
 *   pino-redact   pino-sync with `redact` paths for the same secret names and its error serializer
 *   pino+fields   pino-sync through `pinoLogger` (src/core/logger-adapters.ts): Mailroom's field
 *                 rules (errors, masking), pino's formatting and output
 *
 * Rounds alternate the loggers so that a busy machine slows all of them alike; each round prints
 * lines/s, and the summary the median per logger and its ratio to `mailroom`. Figures go to
 * docs/logging.md; tests never assert on them.
 */
import { once } from 'node:events';
import { closeSync, openSync, writeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { pino, type Logger as PinoLogger } from 'pino';
import { createCliLogger } from '../src/cli/cli-logger.js';
import type { Logger } from '../src/core/logger.js';
import { pinoLogger } from '../src/core/logger-adapters.js';

const LINES = Number(process.argv[2] ?? 200_000);
const ROUNDS = Number(process.argv[3] ?? 3);
const SINK = process.argv[4] ?? 'devnull';
if (SINK !== 'devnull' && SINK !== 'noop') throw new Error(`sink ${SINK}: devnull or noop`);
const NULL = '/dev/null';

/** A write function to the sink, and how to close it. */
function sink(): { write: (s: string) => void; close: () => void } {
  if (SINK === 'noop') return { write: () => undefined, close: () => undefined };
  const fd = openSync(NULL, 'w');
  return { write: (s) => void writeSync(fd, s), close: () => closeSync(fd) };
}

/** A pino destination to the sink: synchronous, as ours. */
function pinoSink() {
  if (SINK === 'noop') return { write: () => true, end: () => undefined };
  return pino.destination({ dest: NULL, sync: true });
}

/** The CLI logger as it was before issue 19, kept here as the baseline. */
function legacyCliLogger(write: (line: string) => void): Logger {
  const line = (level: string, message: string, fields: Record<string, unknown> = {}) =>
    write(`${JSON.stringify({ time: new Date().toISOString(), level, msg: message, ...fields })}\n`);
  return {
    debug: (m, f) => line('debug', m, f),
    info: (m, f) => line('info', m, f),
    warn: (m, f) => line('warn', m, f),
    error: (m, f) => line('error', m, f),
  };
}

/** Our Logger over a pino instance (the adapter docs/logging.md shows). */
function pinoAdapter(p: PinoLogger): Logger {
  return {
    debug: (m, f) => p.debug(f ?? {}, m),
    info: (m, f) => p.info(f ?? {}, m),
    warn: (m, f) => p.warn(f ?? {}, m),
    error: (m, f) => p.error(f ?? {}, m),
  };
}

const cause = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5672'), { code: 'ECONNREFUSED' });
const failure = Object.assign(new Error('publish to amqp://guest:s3cret@127.0.0.1:5672/ failed', { cause }), {
  code: 'transport_unavailable',
});

function fieldsOf(i: number): Record<string, unknown> {
  const fields: Record<string, unknown> = {
    component: 'relay',
    event: 'relay_progress',
    owner: 'relay-7f9c:4242:a1b2c3',
    source: 'orders',
    topic: 'orders.created',
    delivered: 1000 + (i % 97),
    retried: i % 3,
    dead: 0,
    backlog: 52_000 - (i % 1000),
    oldestAgeMs: 1234,
    durationMs: 12.5,
  };
  if (i % 10 === 0) fields.error = failure;
  return fields;
}

interface Contender {
  name: string;
  /** Measures an asynchronous file destination: meaningless without a file. */
  devnullOnly?: boolean;
  make(): Promise<{ logger: Logger; finish(): Promise<void> }>;
}

const contenders: Contender[] = ([] as Contender[])
  .concat([
    {
      name: 'legacy',
      async make() {
        const out = sink();
        return { logger: legacyCliLogger(out.write), finish: async () => out.close() };
      },
    },
    {
      name: 'mailroom',
      async make() {
        const out = sink();
        return { logger: createCliLogger({ json: true, stream: out }), finish: async () => out.close() };
      },
    },
    {
      name: 'pino-sync',
      async make() {
        const dest = pinoSink();
        return {
          logger: pinoAdapter(pino({ base: null }, dest)),
          finish: async () => void dest.end(),
        };
      },
    },
    {
      name: 'pino-async',
      devnullOnly: true,
      async make() {
        const dest = pino.destination({ dest: NULL, sync: false, minLength: 4096 });
        await once(dest, 'ready');
        return {
          logger: pinoAdapter(pino({ base: null }, dest)),
          // Counted until everything is written: the buffer is part of the cost.
          finish: async () => {
            const closed = once(dest, 'close');
            dest.end();
            await closed;
          },
        };
      },
    },
    {
      name: 'pino-redact',
      async make() {
        const dest = pinoSink();
        const p = pino(
          {
            base: null,
            timestamp: pino.stdTimeFunctions.isoTime,
            serializers: { error: pino.stdSerializers.err },
            redact: [
              'password',
              'token',
              'secret',
              'authorization',
              'apiKey',
              'cookie',
              '*.password',
              '*.token',
            ],
          },
          dest,
        );
        return { logger: pinoAdapter(p), finish: async () => void dest.end() };
      },
    },
    {
      name: 'pino+fields',
      async make() {
        const dest = pinoSink();
        const p = pino({ base: null, timestamp: pino.stdTimeFunctions.isoTime }, dest);
        return { logger: pinoLogger(p), finish: async () => void dest.end() };
      },
    },
  ])
  .filter((c) => SINK === 'devnull' || !c.devnullOnly);

async function run(c: Contender): Promise<number> {
  const { logger, finish } = await c.make();
  // Fields built ahead: the cost measured is the logger's, not the caller's.
  const fields = Array.from({ length: 100 }, (_, i) => fieldsOf(i));
  const started = performance.now();
  for (let i = 0; i < LINES; i++) logger.info('relay progress', fields[i % 100]);
  await finish();
  return LINES / ((performance.now() - started) / 1000);
}

const results = new Map<string, number[]>(contenders.map((c) => [c.name, []]));
// One untimed warm-up each, so the JIT has seen every path before the first timed round.
for (const c of contenders) {
  const { logger, finish } = await c.make();
  for (let i = 0; i < 20_000; i++) logger.info('warm-up', fieldsOf(i));
  await finish();
}
for (let round = 1; round <= ROUNDS; round++) {
  // Each round in another order: none is always first after a collection or always last.
  const order = round % 2 === 0 ? [...contenders].reverse() : contenders;
  const line: string[] = [];
  for (const c of order) {
    const rate = await run(c);
    results.get(c.name)?.push(rate);
    line.push(`${c.name} ${Math.round(rate).toLocaleString('en')}`);
  }
  console.log(
    `round ${round} (${LINES.toLocaleString('en')} lines to ${SINK}, lines/s): ${line.join(' | ')}`,
  );
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
};
const ours = median(results.get('mailroom') ?? [1]);
console.log('\nlogger        median lines/s   ÷ mailroom');
for (const [name, rates] of results) {
  const m = median(rates);
  console.log(
    `${name.padEnd(13)} ${Math.round(m).toLocaleString('en').padStart(14)}   ${(m / ours).toFixed(2)}`,
  );
}
