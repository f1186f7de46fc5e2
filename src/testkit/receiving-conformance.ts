/**
 * The bar for the receiving side of a store: the inbox (`InboxPort`), acknowledged delivery
 * (`AckPort`) and callbacks (`CallbackPort`), as a `node:test` suite. A store that offers them
 * calls {@link runReceivingConformance} beside {@link runStoreConformance} with the same harness;
 * the suite drives the store's methods directly (claim, settle, sweep, apply), so what it checks
 * is the store's part of the contract, not the relay's.
 *
 * @module
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Inbox } from '../inbox/inbox.js';
import { Outbox } from '../core/outbox.js';
import type { AckPort, CallbackPort, InboxPort, OutboxStore } from '../core/ports.js';
import type { OutboxMessage, ReceivedMessage } from '../core/types.js';
import { uuidv7 } from '../core/uuid.js';
import type { StoreHarness } from './store-conformance.js';

type FullStore = OutboxStore & InboxPort & AckPort & CallbackPort;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function received(id: string, ackTo: string | null = null): ReceivedMessage {
  return {
    id,
    topic: 't',
    key: null,
    type: null,
    headers: {},
    contentType: 'application/json',
    body: Buffer.from('null'),
    payload: null,
    ackTo,
    attempt: 1,
    createdAt: null,
  };
}

/**
 * Registers the receiving-side conformance tests for one store under `describe(name)`.
 *
 * @example
 * ```ts
 * runReceivingConformance('PostgreSQL store', { create: async () => ({ store, transaction, close }) });
 * ```
 */
export function runReceivingConformance(
  name: string,
  options: { create: () => Promise<StoreHarness> },
): void {
  describe(`${name}: receiving-side conformance`, () => {
    async function setup(t: { after: (fn: () => Promise<void>) => void }) {
      const h = await options.create();
      t.after(() => h.close());
      const store = h.store as FullStore;
      for (const method of [
        'transaction',
        'inboxRecordStatement',
        'status',
        'applyAck',
        'sweepAcks',
        'claimCallbacks',
      ] as const) {
        assert.equal(typeof store[method], 'function', `the store implements ${method}()`);
      }
      return { ...h, store, outbox: new Outbox({ store }) };
    }

    /** Claims everything due and settles it delivered; returns what was claimed. */
    async function deliverAll(store: FullStore): Promise<OutboxMessage[]> {
      const { leaseToken, messages } = await store.claim({ owner: 'c', limit: 100, leaseMs: 5000 });
      await store.settle({ leaseToken, delivered: messages, released: [], retry: [], dead: [] });
      return messages;
    }

    it('records a message once per consumer in the handler transaction, and not after a rollback', async (t) => {
      const { store } = await setup(t);
      const inbox = new Inbox({ store, consumer: 'conf' });
      const id = uuidv7();
      await assert.rejects(
        inbox.handle(received(id), async () => {
          throw new Error('rolled back');
        }),
      );
      assert.equal((await inbox.handle(received(id), async () => 1)).status, 'processed');
      assert.equal((await inbox.handle(received(id), async () => 1)).status, 'duplicate');
      assert.equal(
        (await new Inbox({ store, consumer: 'other' }).handle(received(id), async () => 1)).status,
        'processed',
      );
      assert.equal(await store.pruneInbox('conf', 3_600_000, 100), 0, 'a fresh record is not pruned');
    });

    it('keeps a delivered message with ack awaiting, acknowledges it once, and frees its key at delivery', async (t) => {
      const { store, outbox, transaction } = await setup(t);
      const [id] = await transaction((tx) =>
        outbox.enqueue(tx, [
          { topic: 'a', key: 'k', payload: 1, ack: { timeoutMs: 60_000 } },
          { topic: 'a', key: 'k', payload: 2 },
        ]),
      );
      assert.deepEqual(
        (await store.status([id as string])).map((s) => s.state),
        ['pending'],
      );
      const first = await deliverAll(store);
      assert.equal(first.length, 1);
      assert.equal(first[0]?.headers['mailroom-ack-to'], 'mailroom.ack');
      assert.equal((await store.status([id as string]))[0]?.state, 'awaiting-ack');
      const second = await deliverAll(store);
      assert.equal(second.length, 1, 'an awaiting message does not hold its key');
      assert.equal(
        await store.applyAck({ id: id as string, consumer: 'r', result: { ok: true } }),
        'acknowledged',
      );
      assert.equal(await store.applyAck({ id: id as string, consumer: 'r' }), 'duplicate');
      const [status] = await store.status([id as string]);
      assert.equal(status?.state, 'acknowledged');
      assert.equal(status?.consumer, 'r');
      assert.deepEqual(status?.result, { ok: true });
      assert.equal((await store.ackCounts()).acknowledged, 1);
    });

    it('resends with the same id, then expires with a cancellation; a late ack stays late', async (t) => {
      const { store, outbox, transaction } = await setup(t);
      const id = await transaction((tx) =>
        outbox.enqueue(tx, {
          topic: 'r',
          key: 'k',
          payload: 1,
          ack: { timeoutMs: 1000, maxResends: 1, onExpire: 'r.cancelled' },
        }),
      );
      await deliverAll(store);
      assert.deepEqual(await store.sweepAcks(10), { resent: 0, expired: 0 }, 'nothing before the deadline');
      await sleep(1100);
      assert.deepEqual(await store.sweepAcks(10), { resent: 1, expired: 0 });
      const again = await deliverAll(store);
      assert.deepEqual(
        again.map((m) => m.id),
        [id],
        'resent with the same id',
      );
      assert.equal((await store.status([id]))[0]?.resends, 1);
      await sleep(1100);
      assert.deepEqual(await store.sweepAcks(10), { resent: 0, expired: 1 });
      const [status] = await store.status([id]);
      assert.equal(status?.state, 'expired');
      const cancellation = await deliverAll(store);
      assert.equal(cancellation.length, 1);
      assert.equal(cancellation[0]?.topic, 'r.cancelled');
      assert.equal(cancellation[0]?.type, 'mailroom.expired');
      assert.equal(JSON.parse(cancellation[0]?.payload.toString() ?? '{}').id, id);
      assert.equal(await store.applyAck({ id, consumer: 'late' }), 'late');
      assert.equal((await store.status([id]))[0]?.state, 'expired');
      assert.equal(await store.sweepAcks(10).then((r) => r.resent + r.expired), 0);
    });

    it('keeps an acknowledgement that comes before the settle', async (t) => {
      const { store, outbox, transaction } = await setup(t);
      const id = await transaction((tx) =>
        outbox.enqueue(tx, { topic: 'e', payload: 1, ack: { timeoutMs: 1000 } }),
      );
      const { leaseToken, messages } = await store.claim({ owner: 'c', limit: 10, leaseMs: 5000 });
      assert.equal(await store.applyAck({ id, consumer: 'fast' }), 'early');
      await store.settle({ leaseToken, delivered: messages, released: [], retry: [], dead: [] });
      await sleep(1100);
      assert.deepEqual(await store.sweepAcks(10), { resent: 0, expired: 0 });
      assert.equal((await store.status([id]))[0]?.state, 'acknowledged');
    });

    it('queues callbacks and settles them delivered, retried and dead', async (t) => {
      const { store, outbox, transaction } = await setup(t);
      const url = 'https://example.test/hook';
      const [ok, doomed] = await transaction((tx) =>
        outbox.enqueue(tx, [
          { topic: 'cb', payload: 1, callback: { url } },
          { topic: 'cb', payload: 2, callback: { url } },
        ]),
      );
      const { leaseToken, messages } = await store.claim({ owner: 'c', limit: 10, leaseMs: 5000 });
      await store.settle({
        leaseToken,
        delivered: messages.filter((m) => m.id === ok),
        released: [],
        retry: [],
        dead: messages.filter((m) => m.id === doomed).map((message) => ({ message, error: 'refused' })),
      });
      assert.equal((await store.status([doomed as string]))[0]?.state, 'dead');
      const claimed = await store.claimCallbacks({ owner: 'd', limit: 10, leaseMs: 5000 });
      const events = claimed.callbacks
        .map((c) => `${c.messageId === ok ? 'ok' : 'doomed'}:${c.event}`)
        .sort();
      assert.deepEqual(events, ['doomed:dead', 'ok:delivered']);
      assert.ok(claimed.callbacks.every((c) => c.url === url && c.attempts === 1));
      assert.equal(
        (await store.claimCallbacks({ owner: 'd', limit: 10, leaseMs: 5000 })).callbacks.length,
        0,
      );
      const [first, second] = claimed.callbacks;
      await store.settleCallbacks({
        leaseToken: claimed.leaseToken,
        delivered: [first?.id as string],
        retry: [{ id: second?.id as string, delayMs: 0, error: 'HTTP 503' }],
        dead: [],
      });
      const retried = await store.claimCallbacks({ owner: 'd', limit: 10, leaseMs: 5000 });
      assert.deepEqual(
        retried.callbacks.map((c) => [c.id, c.attempts]),
        [[second?.id, 2]],
      );
      await store.settleCallbacks({
        leaseToken: retried.leaseToken,
        delivered: [],
        retry: [],
        dead: [{ id: second?.id as string, error: 'gave up' }],
      });
      const counts = await store.ackCounts();
      assert.equal(counts.callbacksPending, 0);
      assert.equal(counts.callbacksDead, 1);
    });
  });
}
