import { cents } from './participants.js';
import type { TccDemoProgress, TccDemoReport } from './run-tcc-demo.js';

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1).padStart(5)}s`;
}

/** The line printed about every second while orders are placed. */
export function tccProgressLine(p: TccDemoProgress): string {
  return (
    `[${seconds(p.elapsedMs)}] placed ${p.placed}  confirmed ${p.confirmed}  cancelled ${p.cancelled}  ` +
    `left to recovery ${p.leftToRecovery}  coordinator #${p.coordinator}`
  );
}

/** An event line: `[  1.2s] …`. */
export function tccEventLine(elapsedMs: number, line: string): string {
  return `[${seconds(elapsedMs)}] ${line}`;
}

const row = (label: string, value: string | number, note = '') =>
  `  ${label.padEnd(28)}${String(value).padStart(7)}${note ? `   ${note}` : ''}`;

const cells = (widths: number[], values: Array<string | number>) =>
  `  ${values.map((v, i) => (i === 0 ? String(v).padEnd(widths[i] ?? 0) : String(v).padStart(widths[i] ?? 0))).join('  ')}`;

/** The audit and fault tables at the end of `mailroom demo tcc` / `demo saga`. */
export function tccReportLines(r: TccDemoReport): string[] {
  const a = r.audit;
  const tcc = r.mode === 'tcc';
  const confirm = tcc ? 'confirm' : 'succeed';
  const cancel = tcc ? 'cancel' : 'compensate';
  const lines = [
    '',
    `audit (${tcc ? 'TCC' : 'saga'})`,
    row('orders', a.orders),
    row(
      'confirmed',
      a.confirmed,
      `order status written with the decision to ${confirm}, "order confirmed" enqueued with it`,
    ),
    row(
      'cancelled',
      a.cancelled,
      `refused ${a.cancelReasons.refused}, outcome unknown ${a.cancelReasons.unknown}, ` +
        `timed out ${a.cancelReasons.timeout}${a.cancelReasons.other ? `, other ${a.cancelReasons.other}` : ''}`,
    ),
    row('pending', a.pending, 'never decided (must be 0)'),
    row(
      'unfinished',
      a.unfinished,
      `global transactions not ${tcc ? 'confirmed or cancelled' : 'succeeded or compensated'} (must be 0)`,
    ),
    row('decided by recovery', a.byRecovery, 'their coordinator was killed, or their run timed out'),
    row('not decided once', a.decidedWrong, 'orders with no or several decisions (must be 0)'),
    row('order ≠ transaction', a.mismatched, 'order status against its global transaction (must be 0)'),
    row(
      '"order confirmed" messages',
      a.messages,
      'in the outbox: one per confirmed order, none for a cancelled one',
    ),
    '',
  ];
  const w = [12, 8, 8, 9, 8, 10, 5];
  lines.push(cells(w, ['inventory', 'initial', 'stock', 'reserved', 'sold', 'confirmed', '']));
  for (const s of a.skus) {
    lines.push(
      cells(w, [s.sku, s.initial, s.stock, s.reserved, s.sold, s.confirmedQty, s.ok ? 'ok' : 'WRONG']),
    );
  }
  lines.push('');
  const v = [12, 10, 10, 9, 10, 10, 5];
  lines.push(cells(v, ['payment', 'initial', 'balance', 'frozen', 'debited', 'confirmed', '']));
  for (const acct of a.accounts) {
    lines.push(
      cells(v, [
        acct.id,
        cents(acct.initial),
        cents(acct.balance),
        cents(acct.frozen),
        cents(acct.debited),
        cents(acct.confirmedAmount),
        acct.ok ? 'ok' : 'WRONG',
      ]),
    );
  }
  const inv = r.inventory;
  const pay = r.payment;
  const first = tcc ? 'a try' : 'an action';
  const firsts = tcc ? 'tries' : 'actions';
  const undo = tcc ? 'cancel' : 'compensation';
  lines.push(
    '',
    'faults injected',
    row('payment refusals', pay.refused, `insufficient funds: 409, the global transaction ${cancel}s`),
    row('inventory refusals', inv.refused, `sold out: 409, the global transaction ${cancel}s`),
    row(
      'slow answers',
      inv.slowAnswers + pay.slowAnswers,
      `the phase ran, its answer came ${r.settings.slowMs} ms late (call timeout ${r.settings.callTimeoutMs} ms): ` +
        (tcc ? 'a try is cancelled, a confirm retried' : 'the step is compensated'),
    ),
    row(
      `late ${firsts}`,
      inv.held + pay.held,
      `held until their ${undo} ran, then delivered: refused ${inv.lateRefused + pay.lateRefused}, ` +
        `ran ${inv.lateAccepted + pay.lateAccepted} (must be 0)`,
    ),
    row(
      'duplicate calls',
      r.duplicatesSent,
      `sent twice by the coordinator's side; answered "duplicate" by a barrier: ${inv.duplicates + pay.duplicates} ` +
        '(these copies, retries after a slow answer, calls repeated by recovery)',
    ),
    row(
      'null compensations',
      inv.nullCompensations + pay.nullCompensations,
      `${undo}s of ${first} that never ran there (refused, held back, or not sent): nothing to undo`,
    ),
  );
  if (r.crash) {
    lines.push(
      row(
        'coordinator killed',
        1,
        `${tcc ? 'between the confirms' : 'between the steps'} of ${r.crash.order}, ${r.crash.inFlight} order(s) in progress; ` +
          `${r.crash.order} ended ${r.crash.finalState} (order ${r.crash.orderStatus}) by #2's recovery`,
      ),
    );
  } else {
    lines.push(row('coordinator killed', 0, 'no order on coordinator #1 reached the point of the kill'));
  }
  lines.push('');
  if (a.passed) {
    lines.push(
      `OK: stock and money add up, nothing left ${tcc ? 'reserved or frozen' : 'half done'}, every order decided once and ` +
        `agreeing with its global transaction, one message per confirmed order (seed ${r.seed}, ${(r.elapsedMs / 1000).toFixed(1)} s)`,
    );
  } else {
    lines.push(
      `FAILED: the audit found ${a.problems.length} inconsistenc${a.problems.length === 1 ? 'y' : 'ies'} (seed ${r.seed}):`,
    );
    for (const p of a.problems) lines.push(`  - ${p}`);
  }
  return lines;
}
