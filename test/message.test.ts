import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeMessage, isUuid, uuidv7, type MessageInput } from '../src/core/index.js';
import { MAX_DELAY_MS } from '../src/core/message.js';
import { Outbox } from '../src/core/index.js';
import { createTestDb, inTransaction } from './helpers/postgres.js';

function rejects(input: unknown, pattern: RegExp, name = 'InvalidMessageError') {
  assert.throws(
    () => encodeMessage(input as MessageInput, { maxPayloadBytes: 1024 }),
    (err: Error & { code?: string }) => {
      assert.equal(err.name, name);
      assert.match(err.message, pattern);
      return true;
    },
  );
}

describe('message validation', () => {
  it('generates increasing UUIDv7 ids', () => {
    const ids = Array.from({ length: 5000 }, () => uuidv7());
    for (const id of ids) assert.ok(isUuid(id) && id[14] === '7', id);
    assert.deepEqual([...ids].sort(), ids, 'ids of one process sort in creation order');
    assert.equal(new Set(ids).size, ids.length);
  });

  it('encodes JSON and bytes with their content types', () => {
    const json = encodeMessage({ topic: 't', payload: { a: [1, 'x', null] } });
    assert.equal(json.payload.toString(), '{"a":[1,"x",null]}');
    assert.equal(json.contentType, 'application/json');
    const bytes = encodeMessage({ topic: 't', payload: new Uint8Array([1, 2]) });
    assert.deepEqual([...bytes.payload], [1, 2]);
    assert.equal(bytes.contentType, 'application/octet-stream');
    assert.equal(encodeMessage({ topic: 't', payload: null }).payload.toString(), 'null');
  });

  it('rejects bad topics', () => {
    rejects({ topic: '', payload: 1 }, /topic must not be empty/);
    rejects({ topic: 'x'.repeat(256), payload: 1 }, /256 bytes, over the limit of 255/);
    rejects({ topic: 'a\nb', payload: 1 }, /control character/);
    rejects({ topic: 'a\u0000b', payload: 1 }, /control character/);
    rejects({ topic: 42, payload: 1 }, /topic must be a string, got 42/);
    rejects({ payload: 1 }, /topic must be a string, got undefined/);
    rejects({ topic: 'bad\ud800', payload: 1 }, /unpaired surrogate/);
  });

  it('rejects oversized or NUL-containing keys', () => {
    rejects({ topic: 't', key: 'k'.repeat(1025), payload: 1 }, /key is 1025 bytes, over the limit of 1024/);
    rejects({ topic: 't', key: 'a\u0000', payload: 1 }, /NUL/);
    rejects({ topic: 't', key: 7, payload: 1 }, /key must be a string/);
    assert.equal(
      encodeMessage({ topic: 't', key: "'; DROP TABLE x; --", payload: 1 }).key,
      "'; DROP TABLE x; --",
    );
  });

  it('rejects headers that are not strings or carry line breaks', () => {
    rejects({ topic: 't', payload: 1, headers: { n: 1 } }, /header "n" must be a string, got 1/);
    rejects({ topic: 't', payload: 1, headers: { n: 'a\r\nb' } }, /CR or LF/);
    rejects({ topic: 't', payload: 1, headers: { 'a\nb': 'v' } }, /control character/);
    rejects({ topic: 't', payload: 1, headers: [] }, /headers must be an object/);
    rejects({ topic: 't', payload: 1, headers: { big: 'x'.repeat(70_000) } }, /headers total/);
  });

  it('rejects payloads JSON cannot hold and oversized payloads', () => {
    rejects({ topic: 't', payload: undefined }, /which JSON cannot hold/);
    rejects({ topic: 't', payload: { n: NaN } }, /contains NaN/);
    rejects({ topic: 't', payload: { n: Infinity } }, /contains Infinity/);
    rejects({ topic: 't', payload: { f: () => 1 } }, /a function/);
    rejects({ topic: 't', payload: { b: 1n } }, /cannot be serialised to JSON/);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    rejects({ topic: 't', payload: cyclic }, /cannot be serialised to JSON/);
    rejects(
      { topic: 't', payload: 'x'.repeat(2000) },
      /2002 bytes, over the limit of 1024/,
      'PayloadTooLargeError',
    );
  });

  it('rejects unknown fields, bad ids and bad delays', () => {
    rejects({ topic: 't', payload: 1, topik: 'x' }, /unknown message field "topik"/);
    rejects({ topic: 't', payload: 1, id: 'not-a-uuid' }, /id must be a UUID/);
    rejects({ topic: 't', payload: 1, delayMs: -1 }, /delayMs must be a non-negative/);
    rejects(null, /a message must be an object/);
  });

  it('rejects a delay over 365 days or not finite, naming the value and the limit', () => {
    assert.equal(MAX_DELAY_MS, 365 * 86_400_000);
    assert.equal(encodeMessage({ topic: 't', payload: 1, delayMs: MAX_DELAY_MS }).delayMs, MAX_DELAY_MS);
    rejects(
      { topic: 't', payload: 1, delayMs: MAX_DELAY_MS + 1 },
      /delayMs 31536000001 is over the limit of 31536000000 \(365 days\)/,
    );
    rejects(
      { topic: 't', payload: 1, delayMs: 1e20 },
      /delayMs 100000000000000000000 is over the limit of 31536000000/,
    );
    rejects(
      { topic: 't', payload: 1, delayMs: Infinity },
      /delayMs Infinity is over the limit of 31536000000/,
    );
    // An absolute time passed as a delay, the mistake the bound is there to catch.
    rejects(
      { topic: 't', payload: 1, delayMs: Date.now() + 60_000 },
      /is over the limit.*not an absolute time/,
    );
    rejects({ topic: 't', payload: 1, delayMs: -Infinity }, /delayMs must be a non-negative finite number/);
    rejects(
      { topic: 't', payload: 1, delayMs: '5' },
      /delayMs must be a non-negative finite number of milliseconds, got "5"/,
    );
  });

  it("turns a huge delay away before the database, so the caller's transaction goes on", async () => {
    const db = await createTestDb('msg');
    try {
      const outbox = new Outbox({ store: db.store });
      const kept = await inTransaction(db.pool, async (c) => {
        for (const delayMs of [1e20, Number.MAX_VALUE, Infinity]) {
          await assert.rejects(outbox.enqueue(c, { topic: 'late', payload: 1, delayMs }), {
            name: 'InvalidMessageError',
          });
        }
        // Before the bound, 1e20 reached PostgreSQL as a bigint out of range and aborted this
        // transaction: this statement then failed with "current transaction is aborted".
        return outbox.enqueue(c, { topic: 'on.time', payload: 2, delayMs: MAX_DELAY_MS });
      });
      const rows = await db.pool.query(
        `SELECT id::text AS id, round(extract(epoch FROM available_at - created_at)) AS s FROM "${db.schema}".outbox`,
      );
      assert.deepEqual(rows.rows, [{ id: kept, s: String(365 * 86_400) }]);
    } finally {
      await db.drop();
    }
  });

  it('writes nothing when one message of a batch is invalid', async () => {
    const db = await createTestDb('msg');
    try {
      const outbox = new Outbox({ store: db.store, maxPayloadBytes: 100 });
      await assert.rejects(
        inTransaction(db.pool, (c) =>
          outbox.enqueue(c, [
            { topic: 'ok', payload: 1 },
            { topic: 'ok', payload: 'x'.repeat(200) },
          ]),
        ),
        { name: 'PayloadTooLargeError' },
      );
      assert.equal(await db.count(), 0);
    } finally {
      await db.drop();
    }
  });
});
