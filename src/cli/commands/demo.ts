import { randomInt } from 'node:crypto';
import { UsageError } from '../cli-error.js';
import type { Command } from '../command.js';
import { ackAuditPassed, auditPassed } from '../demo/demo-audit.js';
import { runDemo, type DemoProgress, type DemoReport } from '../demo/run-demo.js';
import { tccEventLine, tccProgressLine, tccReportLines } from '../demo/tcc/report-lines.js';
import { runTccDemo } from '../demo/tcc/run-tcc-demo.js';
import type { OptionSpec } from '../options.js';

const OPTIONS: OptionSpec[] = [
  {
    key: 'duration',
    flag: 'duration',
    env: 'MAILROOM_DEMO_DURATION',
    type: 'int',
    min: 1,
    max: 3600,
    default: 10,
    description: 'how long the order service places orders, in seconds',
  },
  {
    key: 'rate',
    flag: 'rate',
    env: 'MAILROOM_DEMO_RATE',
    type: 'int',
    min: 1,
    max: 2000,
    default: 50,
    description: 'orders per second the service tries to place',
  },
  {
    key: 'seed',
    flag: 'seed',
    env: 'MAILROOM_DEMO_SEED',
    type: 'int',
    min: 0,
    max: 4294967295,
    description: 'seed of the injected faults and orders, to replay a run (default: random, printed)',
  },
  {
    key: 'orders',
    flag: 'orders',
    env: 'MAILROOM_DEMO_ORDERS',
    type: 'int',
    min: 1,
    max: 10000,
    default: 200,
    description: 'demo tcc and demo saga: how many orders the order service places',
  },
];

/** The demos of `mailroom demo <name>`; none is the outbox demo. */
const SUBDEMOS = ['tcc', 'saga'] as const;

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1).padStart(5)}s`;
}

function ms(value: number): string {
  return value < 10 ? `${value.toFixed(1)} ms` : `${Math.round(value).toLocaleString('en-US')} ms`;
}

function progressLine(p: DemoProgress): string {
  const pending = Math.max(0, p.committed - p.delivered);
  return (
    `[${seconds(p.elapsedMs)}] ${p.phase === 'draining' ? 'draining' : 'orders  '} ` +
    `placed ${p.placed}  committed ${p.committed}  rolled back ${p.rolledBack}  ` +
    `delivered ${p.delivered}  pending ${pending}  5xx ${p.receiverErrors}  ` +
    `dups suppressed ${p.duplicatesSuppressed}  payments acked ${p.paymentsAcknowledged}/${p.paymentsRequested}  ` +
    `relay #${p.relay}`
  );
}

function auditLines(r: DemoReport, seed: number, durationS: number, rate: number): string[] {
  const a = r.audit;
  const achieved = a.placed / durationS;
  // PGlite runs every transaction on one connection in this process: on a slow machine the
  // service falls behind a high --rate, which is worth saying rather than hiding.
  const placedNote = achieved < rate * 0.9 ? `${Math.round(achieved)}/s of the ${rate}/s asked for` : '';
  const row = (label: string, value: string | number, note = '') =>
    `  ${label.padEnd(24)}${String(value).padStart(8)}${note ? `   ${note}` : ''}`;
  const k = r.acks;
  const passed = auditPassed(a) && ackAuditPassed(k);
  return [
    '',
    'audit',
    row('orders placed', a.placed, placedNote),
    row('committed', a.committed, 'order row and message in one transaction'),
    row('rolled back', a.rolledBack, 'payment declined after the message was written'),
    row('order rows', a.orderRows, a.orderRows === a.committed ? 'one per committed order' : 'MISMATCH'),
    row('delivered', a.delivered, 'distinct message ids the receiver processed'),
    row('lost', a.lost, 'committed but never delivered (must be 0)'),
    row('phantom', a.phantom, 'delivered but never committed (must be 0)'),
    row('duplicates suppressed', a.duplicatesSuppressed, 'same id again, dropped by the receiver'),
    row('out of order', a.outOfOrder, "a customer's messages against commit order (must be 0)"),
    row('taken over', r.takenOver, "relay #1's unsettled messages delivered by relay #2"),
    row('receiver 5xx', r.receiverErrors, 'retried by the relay'),
    row('dead letters', r.deadLetters),
    a.latency
      ? `  ${'commit→delivery'.padEnd(24)}p50 ${ms(a.latency.p50)}   p99 ${ms(a.latency.p99)}   max ${ms(a.latency.max)}`
      : `  ${'commit→delivery'.padEnd(24)}no deliveries`,
    '',
    'acknowledged delivery (payment.requested, sent with ack)',
    row('requests committed', k.requested, 'each must end acknowledged, or expired if never answered'),
    row('acknowledged', k.acknowledged, 'the payment service answered from its inbox transaction'),
    row(
      'payment rows',
      k.paymentRows,
      k.paymentRows === k.acknowledged ? 'one per acknowledged request' : 'MISMATCH',
    ),
    row('resent', k.resent, 'same id, after no acknowledgement in time'),
    row('expired', k.expired, 'the request the payment service never answers'),
    row('cancellations applied', k.cancellations, 'each cancels its order once, through the inbox'),
    row('not as planned', k.notAsPlanned, 'must be 0'),
    row('wrong cancellations', k.wrongCancellations, 'must be 0'),
    '',
    passed
      ? `OK: every committed order was delivered, no rolled-back order was, every payment request was acknowledged or expired and cancelled as planned (seed ${seed})`
      : `FAILED: the audit found lost, phantom or out-of-order messages, or a payment request not as planned (seed ${seed}); please report it`,
  ];
}

export const demoCommand: Command = {
  name: 'demo',
  summary:
    'watch the outbox survive faults: orders on an embedded PostgreSQL, a relay, an HTTP receiver (demo tcc, demo saga: distributed transactions)',
  usage:
    'mailroom demo [--duration <seconds>] [--rate <orders/s>] [--seed <n>]\n' +
    '       mailroom demo tcc|saga [--orders <n>] [--seed <n>]',
  options: OPTIONS,
  positionals: 1,
  details: [
    'Runs entirely in this process, with no server to install: an order service writes each',
    'order and its message in one transaction on PGlite (PostgreSQL in WebAssembly, in memory);',
    'a relay delivers the messages to an HTTP receiver on 127.0.0.1. Meanwhile the receiver',
    'fails some requests and goes down for a while, the relay crashes between delivering and',
    'settling and a new one takes over, and some orders roll back. Some orders also ask a payment',
    'service with messages sent with ack; it never answers one, which is resent, expires and',
    'cancels its order. The audit at the end must show nothing lost, nothing phantom and every',
    'payment request acknowledged or expired as planned; the exit code is 1 otherwise.',
    '',
    'Needs the optional package @electric-sql/pglite (installed in a clone of the repository;',
    'elsewhere: npm install @electric-sql/pglite). Same as `npm start` in the repository.',
    '',
    '`mailroom demo tcc` (`demo saga`): distributed transactions without a coordinator server.',
    'An order service runs a TccCoordinator (SagaCoordinator) on its own PGlite database; an',
    'inventory and a payment service, each with its own PGlite database and a TccBarrier, answer',
    'over HTTP on 127.0.0.1. Faults: refusals (insufficient funds, sold out), answers after the',
    'call timeout, tries held back until after their cancel, every call sent twice, and the',
    "coordinator killed between an order's confirms (steps) with a new one recovering. The",
    'audit checks stock and money add up, nothing is left reserved or frozen, every order is',
    'decided once, and each confirmed order has one message; the exit code is 1 otherwise.',
  ].join('\n'),
  async run({ config, flags, positionals, out }) {
    const sub = positionals[0];
    if (sub !== undefined) {
      if (!(SUBDEMOS as readonly string[]).includes(sub)) {
        throw new UsageError(
          `unknown demo ${JSON.stringify(sub.slice(0, 40))}; mailroom demo runs the outbox demo, ` +
            `mailroom demo ${SUBDEMOS.join(' or mailroom demo ')} the distributed transaction ones`,
        );
      }
      for (const flag of ['duration', 'rate']) {
        if (flags.has(flag)) {
          throw new UsageError(
            `--${flag} is a flag of the outbox demo; mailroom demo ${sub} takes --orders and --seed`,
          );
        }
      }
      return runTransactionDemo(sub as (typeof SUBDEMOS)[number], config, out);
    }
    if (flags.has('orders')) {
      throw new UsageError(
        '--orders is a flag of mailroom demo tcc and demo saga; the outbox demo takes --duration and --rate',
      );
    }
    const durationMs = Number(config.duration) * 1000;
    const rate = Number(config.rate);
    const seed = config.seed === undefined ? randomInt(0, 2 ** 31) : Number(config.seed);
    const tty = process.stdout.isTTY === true;
    let progressShown = false;
    const clearProgress = () => {
      if (tty && progressShown) process.stdout.write('\r\x1b[2K');
      progressShown = false;
    };

    out(
      `mailroom demo: ${Number(config.duration)} s at ${rate} orders/s, seed ${seed}; ` +
        'starting PostgreSQL in WebAssembly (PGlite, in memory)…',
    );
    const report = await runDemo({
      durationMs,
      rate,
      seed,
      progressEveryMs: tty ? 200 : 1000,
      onEvent: (elapsedMs, line) => {
        clearProgress();
        out(`[${seconds(elapsedMs)}] ${line}`);
      },
      onProgress: (p) => {
        if (tty) {
          process.stdout.write(`\r\x1b[2K${progressLine(p)}`);
          progressShown = true;
        } else {
          out(progressLine(p));
        }
      },
    });
    clearProgress();
    if (tty) out(progressLine({ ...lastProgress(report), relay: 2 }));
    for (const line of auditLines(report, seed, Number(config.duration), rate)) out(line);
    return auditPassed(report.audit) && ackAuditPassed(report.acks) && !report.drainTimedOut ? 0 : 1;
  },
};

/** `mailroom demo tcc` and `mailroom demo saga`. */
async function runTransactionDemo(
  mode: 'tcc' | 'saga',
  config: Record<string, string | number | boolean | undefined>,
  out: (line: string) => void,
): Promise<number> {
  const orders = Number(config.orders);
  const seed = config.seed === undefined ? randomInt(0, 2 ** 31) : Number(config.seed);
  out(
    `mailroom demo ${mode}: ${orders} orders, seed ${seed}; starting an order, an inventory and a payment ` +
      'service, each on its own PostgreSQL in WebAssembly (PGlite, in memory)…',
  );
  const report = await runTccDemo({
    mode,
    orders,
    seed,
    onEvent: (elapsedMs, line) => out(tccEventLine(elapsedMs, line)),
    onProgress: (p) => out(tccProgressLine(p)),
  });
  for (const line of tccReportLines(report)) out(line);
  return report.audit.passed ? 0 : 1;
}

/** The final counters, for the line that stays on a terminal after the live one is cleared. */
function lastProgress(r: DemoReport): DemoProgress {
  return {
    elapsedMs: r.elapsedMs,
    phase: 'draining',
    placed: r.audit.placed,
    committed: r.audit.committed,
    rolledBack: r.audit.rolledBack,
    delivered: r.audit.delivered,
    duplicatesSuppressed: r.audit.duplicatesSuppressed,
    receiverErrors: r.receiverErrors,
    relay: 2,
    paymentsRequested: r.acks.requested,
    paymentsAcknowledged: r.acks.acknowledged,
  };
}
