import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ackAuditPassed, auditAcks, auditDemo, auditPassed, percentile } from '../src/cli/demo/demo-audit.js';
import { runCli } from './helpers/cli.js';

// Runs the built command (npm run build first): PGlite in memory, no server needed.
describe('mailroom demo', () => {
  it('runs with faults injected and ends with an audit of nothing lost and nothing phantom', async () => {
    const r = await runCli(['demo', '--duration', '3', '--rate', '40', '--seed', '42'], {}, 120_000);
    assert.equal(r.code, 0, `exit code 0\n${r.stdout}\n${r.stderr}`);
    assert.equal(r.stderr, '', 'nothing on stderr');
    assert.doesNotMatch(r.stdout, /\n\s+at /, 'no stack trace');
    assert.match(r.stdout, /^\s+lost\s+0\s/m);
    assert.match(r.stdout, /^\s+phantom\s+0\s/m);
    assert.match(r.stdout, /^\s+out of order\s+0\s/m);
    const committed = Number(/^\s+committed\s+(\d+)/m.exec(r.stdout)?.[1]);
    const delivered = Number(/^\s+delivered\s+(\d+)/m.exec(r.stdout)?.[1]);
    assert.ok(committed > 0, 'orders were committed');
    assert.equal(delivered, committed);
    assert.match(r.stdout, /^\s+rolled back\s+[1-9]/m, 'some orders rolled back');
    assert.match(r.stdout, /^\s+duplicates suppressed\s+\d+/m);
    assert.match(r.stdout, /commit→delivery\s+p50 [\d.,]+ ms\s+p99 [\d.,]+ ms/);
    assert.match(r.stdout, /fault: relay #1 crashed/);
    assert.match(r.stdout, /relay #2 started/);
    assert.match(r.stdout, /fault: the receiver is down/);
    // Acknowledged delivery: the request never answered is resent, expires and cancels its order.
    assert.match(r.stdout, /ack: 1 payment request\(s\) not acknowledged in time, resent with the same id/);
    assert.match(r.stdout, /cancellation enqueued to demo\.cancelled/);
    assert.match(r.stdout, /the order service got the cancellation and cancelled order/);
    const requested = Number(/^\s+requests committed\s+(\d+)/m.exec(r.stdout)?.[1]);
    const acknowledged = Number(/^\s+acknowledged\s+(\d+)/m.exec(r.stdout)?.[1]);
    assert.ok(requested >= 1, 'payment requests were committed');
    assert.equal(acknowledged, requested - 1, 'all but the withheld one acknowledged');
    assert.match(r.stdout, /^\s+payment rows\s+(\d+)\s+one per acknowledged request/m);
    assert.match(r.stdout, /^\s+expired\s+1\s/m);
    assert.match(r.stdout, /^\s+cancellations applied\s+1\s/m);
    assert.match(r.stdout, /^\s+not as planned\s+0\s/m);
    assert.match(r.stdout, /^\s+wrong cancellations\s+0\s/m);
    // Not a terminal: one progress line per second, no carriage returns.
    assert.doesNotMatch(r.stdout, /\r/);
    assert.match(r.stdout, /\[\s+1\.0s\] orders\s+placed \d+/);
    assert.match(r.stdout, /^OK: /m);
  });

  it('rejects a bad flag value with exit code 2 and a one-line error', async () => {
    const r = await runCli(['demo', '--rate', '-1']);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    assert.match(r.stderr, /^mailroom demo: flag --rate must be a whole number from 1 to 2000, got "-1"/);
  });

  it('lists the demo in the help and explains its flags', async () => {
    const r = await runCli(['demo', '--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /--duration <n>/);
    assert.match(r.stdout, /--rate <n>/);
    assert.match(r.stdout, /MAILROOM_DEMO_RATE/);
    const main = await runCli(['--help']);
    assert.match(main.stdout, /\n {2}demo /);
  });

  it('has an audit that catches a lost, a phantom and an out-of-order message', () => {
    const orders = [
      { orderId: 'o1', messageId: 'm1', customer: 'c1', committedAt: 10 },
      { orderId: 'o2', messageId: 'm2', customer: 'c1', committedAt: 20 },
      { orderId: 'o3', messageId: 'm3', customer: 'c2', committedAt: 30 },
      { orderId: 'o4', messageId: 'm4', customer: 'c2' }, // rolled back
    ];
    const clean = auditDemo({
      orders,
      receipts: new Map([
        ['m1', { key: 'c1', at: 15 }],
        ['m2', { key: 'c1', at: 25 }],
        ['m3', { key: 'c2', at: 40 }],
      ]),
      duplicatesSuppressed: 1,
      orderRows: 3,
    });
    assert.deepEqual(
      [clean.committed, clean.rolledBack, clean.delivered, clean.lost, clean.phantom, clean.outOfOrder],
      [3, 1, 3, 0, 0, 0],
    );
    assert.deepEqual(clean.latency, { p50: 5, p99: 10, max: 10 });
    assert.ok(auditPassed(clean));

    const bad = auditDemo({
      orders,
      receipts: new Map([
        ['m2', { key: 'c1', at: 25 }],
        ['m1', { key: 'c1', at: 26 }], // after m2, though committed before it
        ['m4', { key: 'c2', at: 50 }], // a rolled-back order's message
      ]),
      duplicatesSuppressed: 0,
      orderRows: 3,
    });
    assert.equal(bad.lost, 1, 'm3 never arrived');
    assert.equal(bad.phantom, 1, 'm4 was rolled back');
    assert.equal(bad.outOfOrder, 1);
    assert.equal(bad.delivered, 2);
    assert.equal(auditPassed(bad), false);
    assert.equal(auditPassed({ ...clean, orderRows: 4 }), false, 'an order row without its message');
    assert.equal(percentile([1, 2, 3, 4], 50), 2);
  });

  it('the acknowledgement audit fails a request not in its planned end state, a double payment or a wrong cancellation', () => {
    const requests = [
      { id: 'p1', orderId: 'o1', committed: true, withheld: false },
      { id: 'p2', orderId: 'o2', committed: true, withheld: true },
      { id: 'p3', orderId: 'o3', committed: false, withheld: false },
    ];
    const good = {
      requests,
      states: new Map([
        ['p1', { state: 'acknowledged' }],
        ['p2', { state: 'expired', resends: 1 }],
      ]),
      processed: new Set(['p1']),
      cancellations: new Map([['p2', 'o2']]),
      cancelledOrders: ['o2'],
      paymentRows: 1,
    };
    const clean = auditAcks(good);
    assert.deepEqual(
      [
        clean.requested,
        clean.acknowledged,
        clean.expired,
        clean.resent,
        clean.notAsPlanned,
        clean.wrongCancellations,
      ],
      [2, 1, 1, 1, 0, 0],
    );
    assert.equal(ackAuditPassed(clean), true);
    const stuck = auditAcks({ ...good, states: new Map([...good.states, ['p1', { state: 'awaiting' }]]) });
    assert.equal(stuck.notAsPlanned, 1);
    assert.equal(ackAuditPassed(stuck), false);
    assert.equal(ackAuditPassed(auditAcks({ ...good, paymentRows: 2 })), false, 'paid twice');
    assert.equal(ackAuditPassed(auditAcks({ ...good, processed: new Set(['p1', 'p3']) })), false, 'phantom');
    assert.equal(
      ackAuditPassed(auditAcks({ ...good, cancelledOrders: ['o2', 'o1'] })),
      false,
      'an order cancelled that was acknowledged',
    );
    assert.equal(
      ackAuditPassed(auditAcks({ ...good, cancellations: new Map(), cancelledOrders: [] })),
      false,
      'the expired request did not cancel its order',
    );
  });
});
