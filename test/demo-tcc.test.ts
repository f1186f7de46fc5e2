import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { auditTccDemo, type TccDemoSnapshot } from '../src/cli/demo/tcc/audit.js';
import { tccReportLines } from '../src/cli/demo/tcc/report-lines.js';
import { runTccDemo } from '../src/cli/demo/tcc/run-tcc-demo.js';
import { runCli } from './helpers/cli.js';

/** The number on an audit line: `  label      12   note`. */
function figure(stdout: string, label: string): number {
  const escaped = label.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const m = new RegExp(`^\\s+${escaped}\\s+(\\d+)`, 'm').exec(stdout);
  assert.ok(m, `no line "${label}" in\n${stdout}`);
  return Number(m[1]);
}

/** What both demos must show, whatever their mode. */
function assertCleanAudit(stdout: string, stderr: string, code: number | null): void {
  assert.equal(code, 0, `exit code 0\n${stdout}\n${stderr}`);
  assert.equal(stderr, '', 'nothing on stderr');
  assert.doesNotMatch(stdout, /\n\s+at /, 'no stack trace');
  assert.doesNotMatch(stdout, /WRONG|FAILED/);
  assert.equal(figure(stdout, 'orders'), 100);
  for (const zero of ['pending', 'unfinished', 'not decided once', 'order ≠ transaction']) {
    assert.equal(figure(stdout, zero), 0, zero);
  }
  const confirmed = figure(stdout, 'confirmed');
  const cancelled = figure(stdout, 'cancelled');
  assert.ok(confirmed > 0 && cancelled > 0, 'some orders confirmed, some cancelled');
  assert.equal(confirmed + cancelled, 100);
  assert.equal(figure(stdout, '"order confirmed" messages'), confirmed, 'one message per confirmed order');
  // Every SKU and account row checked and ok: 6 SKUs, 12 accounts.
  assert.equal(stdout.match(/ ok$/gm)?.length, 18);
  // The faults were injected.
  assert.ok(figure(stdout, 'payment refusals') > 0, 'insufficient funds refused');
  assert.ok(figure(stdout, 'slow answers') > 0, 'answers after the call timeout');
  assert.ok(figure(stdout, 'duplicate calls') > 0, 'calls sent twice');
  assert.ok(figure(stdout, 'null compensations') > 0);
  const late = /^\s+late (?:tries|actions)\s+(\d+)\s+.*refused (\d+), ran (\d+)/m.exec(stdout);
  assert.ok(late, stdout);
  assert.ok(Number(late[1]) > 0, 'requests held back until after their cancel');
  assert.equal(late[2], late[1], 'every late request refused by the barrier');
  assert.equal(late[3], '0');
  assert.equal(figure(stdout, 'coordinator killed'), 1);
  assert.match(stdout, /coordinator #2 started/);
  assert.match(stdout, /^OK: /m);
}

describe('mailroom demo tcc / demo saga', () => {
  // Runs the built command (npm run build first): three PGlite databases in memory, no server.
  it('demo tcc: faults injected, a coordinator killed between confirms, and an audit that adds up', async () => {
    const r = await runCli(['demo', 'tcc', '--orders', '100', '--seed', '42'], {}, 90_000);
    assertCleanAudit(r.stdout, r.stderr, r.code);
    assert.match(r.stdout, /^mailroom demo tcc: 100 orders, seed 42;/m);
    assert.match(r.stdout, /fault: coordinator #1 killed between order-\d+'s confirms/);
    // Recovery confirmed the order whose coordinator died after its first confirm.
    assert.match(
      r.stdout,
      /coordinator killed\s+1\s+between the confirms of order-\d+.* ended confirmed \(order confirmed\)/,
    );
    assert.match(r.stdout, /the held try of order-\d+ arrived after its cancel and was refused \(409\)/);
  });

  it('demo saga: the same services as saga steps, and the same audit', async () => {
    const r = await runCli(['demo', 'saga', '--orders', '100', '--seed', '42'], {}, 90_000);
    assertCleanAudit(r.stdout, r.stderr, r.code);
    assert.match(r.stdout, /^audit \(saga\)$/m);
    assert.match(r.stdout, /fault: coordinator #1 killed after order-\d+'s first step/);
    // A saga whose coordinator died is compensated at its timeout, never resumed.
    assert.match(
      r.stdout,
      /coordinator killed\s+1\s+between the steps of order-\d+.* ended compensated \(order cancelled\)/,
    );
  });

  it('rejects flags of the other demo and an unknown demo, with exit code 2', async () => {
    const rate = await runCli(['demo', 'tcc', '--rate', '5']);
    assert.equal(rate.code, 2);
    assert.match(rate.stderr, /^mailroom demo: --rate is a flag of the outbox demo/);
    const orders = await runCli(['demo', '--orders', '5']);
    assert.equal(orders.code, 2);
    assert.match(orders.stderr, /^mailroom demo: --orders is a flag of mailroom demo tcc and demo saga/);
    const unknown = await runCli(['demo', 'xa']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown demo "xa"/);
    const help = await runCli(['demo', '--help']);
    assert.match(help.stdout, /mailroom demo tcc\|saga \[--orders <n>\]/);
    assert.match(help.stdout, /MAILROOM_DEMO_ORDERS/);
  });

  it('the audit fails when a participant runs without its barrier', async () => {
    const lines: string[] = [];
    const report = await runTccDemo({
      mode: 'tcc',
      orders: 60,
      seed: 42,
      onEvent: (_ms, line) => lines.push(line),
      bypassInventoryBarrier: true,
    });
    assert.equal(report.audit.passed, false, lines.join('\n'));
    // The coordinator killed after inventory's confirm: recovery confirms it again, and with no
    // barrier the units move from reserved to sold twice.
    assert.ok(report.crash, 'the coordinator was killed');
    const wrong = report.audit.skus.filter((s) => !s.ok);
    assert.ok(wrong.length > 0, 'an inventory row is wrong');
    assert.ok(
      wrong.some((s) => s.reserved !== 0 || s.sold !== s.confirmedQty),
      'reserved left non-zero, or sold more than the confirmed orders bought',
    );
    assert.ok(report.audit.problems.some((p) => p.startsWith('inventory ')));
    // The payment service kept its barrier: its books add up.
    assert.ok(report.audit.accounts.every((a) => a.ok));
    const printed = tccReportLines(report).join('\n');
    assert.match(printed, /WRONG/);
    assert.match(printed, /^FAILED: the audit found \d+ inconsistenc/m);
  });

  it('the audit names stuck transactions, undecided orders, frozen money and wrong messages', () => {
    const o1 = {
      id: 'o1',
      sku: 'apple',
      qty: 2,
      account: 'a1',
      amount: 200,
      status: 'confirmed',
      decisions: 1,
      byRecovery: false,
    } as const;
    const o2 = {
      id: 'o2',
      sku: 'apple',
      qty: 1,
      account: 'a1',
      amount: 100,
      status: 'cancelled',
      decisions: 1,
      byRecovery: true,
    } as const;
    const t1 = { gid: 'o1', state: 'confirmed', reason: null };
    const t2 = { gid: 'o2', state: 'cancelled', reason: 'payment refused: insufficient funds' };
    const good: TccDemoSnapshot = {
      mode: 'tcc',
      initialStock: new Map([['apple', 10]]),
      initialBalances: new Map([['a1', 1000]]),
      stock: [{ sku: 'apple', stock: 8, reserved: 0, sold: 2 }],
      accounts: [{ id: 'a1', balance: 800, frozen: 0, debited: 200 }],
      orders: [o1, o2],
      transactions: [t1, t2],
      messages: ['o1'],
    };
    const clean = auditTccDemo(good);
    assert.deepEqual(clean.problems, []);
    assert.equal(clean.passed, true);
    assert.deepEqual([clean.confirmed, clean.cancelled, clean.byRecovery], [1, 1, 1]);
    assert.equal(clean.cancelReasons.refused, 1);

    const fail = (patch: Partial<TccDemoSnapshot>, expect: RegExp) => {
      const a = auditTccDemo({ ...good, ...patch });
      assert.equal(a.passed, false, `should fail: ${String(expect)}`);
      assert.ok(
        a.problems.some((p) => expect.test(p)),
        `${String(expect)} in ${JSON.stringify(a.problems)}`,
      );
    };
    fail(
      { transactions: [t1, { gid: 'o2', state: 'cancelling', reason: null }] },
      /stuck: o2 \(cancelling\)/,
    );
    fail({ orders: [o1, { ...o2, status: 'pending', decisions: 0 }] }, /never decided: o2/);
    fail({ orders: [{ ...o1, decisions: 2 }, o2] }, /other than one decision: o1×2/);
    fail({ accounts: [{ id: 'a1', balance: 700, frozen: 100, debited: 200 }] }, /^payment a1: .*frozen 100/);
    fail({ stock: [{ sku: 'apple', stock: 7, reserved: 1, sold: 2 }] }, /^inventory apple: .*reserved 1/);
    fail({ stock: [{ sku: 'apple', stock: 7, reserved: 0, sold: 3 }] }, /^inventory apple: .*sold 3/);
    fail({ messages: [] }, /without their message: o1/);
    fail({ messages: ['o1', 'o2'] }, /message\(s\) for an order not confirmed, or repeated/);
    fail({ messages: ['o1', 'o1'] }, /message\(s\) for an order not confirmed, or repeated/);
    fail(
      { transactions: [{ gid: 'o1', state: 'cancelled', reason: null }, t2] },
      /disagree with their global transaction: o1 confirmed\/cancelled/,
    );
  });
});
