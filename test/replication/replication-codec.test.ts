import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  compareLsn,
  isLsn,
  lsnFromBigInt,
  lsnToBigInt,
  maxLsn,
  normalizeLsn,
  OutboxLogStream,
  xid8Of,
  type OutboxTransaction,
} from '../../src/replication/index.js';
import { decodePgoutput, dateToPgTimestamp } from '../../src/replication/pgoutput-decoder.js';
import { toReplicationError, type ReplicationContext } from '../../src/replication/replication-error-map.js';
import { encodeStandbyStatus, parseServerCopyData } from '../../src/replication/replication-protocol.js';
import { ProtocolViolation, TransactionAssembler } from '../../src/replication/transaction-assembler.js';
import { isConfigError } from '../../src/index.js';

/** Builders for pgoutput messages, written from the protocol documentation. */
function int8(n: number) {
  return Buffer.from([n]);
}
function int16(n: number) {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
}
function int32(n: number) {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}
function int64(n: bigint) {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return b;
}
function cstr(s: string) {
  return Buffer.concat([Buffer.from(s, 'utf8'), int8(0)]);
}
const tag = (c: string) => Buffer.from(c, 'latin1');
const when = new Date('2026-01-02T03:04:05.678Z');

const begin = (finalLsn: bigint, xid: number) =>
  Buffer.concat([tag('B'), int64(finalLsn), int64(dateToPgTimestamp(when)), int32(xid)]);
const commit = (commitLsn: bigint, endLsn: bigint) =>
  Buffer.concat([tag('C'), int8(0), int64(commitLsn), int64(endLsn), int64(dateToPgTimestamp(when))]);
const relation = (id: number, schema: string, name: string, columns: string[]) =>
  Buffer.concat([
    tag('R'),
    int32(id),
    cstr(schema),
    cstr(name),
    tag('d'),
    int16(columns.length),
    ...columns.map((c) => Buffer.concat([int8(0), cstr(c), int32(25), int32(0xffffffff)])),
  ]);
const insert = (id: number, values: Array<string | null>) =>
  Buffer.concat([
    tag('I'),
    int32(id),
    tag('N'),
    int16(values.length),
    ...values.map((v) =>
      v === null ? tag('n') : Buffer.concat([tag('t'), int32(Buffer.byteLength(v)), Buffer.from(v)]),
    ),
  ]);
const message = (transactional: boolean, lsn: bigint, prefix: string, content: string) =>
  Buffer.concat([
    tag('M'),
    int8(transactional ? 1 : 0),
    int64(lsn),
    cstr(prefix),
    int32(Buffer.byteLength(content)),
    Buffer.from(content),
  ]);

describe('LSN helpers', () => {
  it('reads and writes PostgreSQL’s X/Y form as 64-bit positions', () => {
    assert.equal(lsnToBigInt('0/0'), 0n);
    assert.equal(lsnToBigInt('1/0'), 1n << 32n);
    assert.equal(lsnToBigInt('16/B374D848'), (0x16n << 32n) | 0xb374d848n);
    assert.equal(lsnFromBigInt((0x16n << 32n) | 0xb374d848n), '16/B374D848');
    assert.equal(lsnFromBigInt(0xffffffffn + 1n), '1/0');
    assert.equal(normalizeLsn('0/000000ab'), '0/AB');
    assert.ok(isLsn('FFFFFFFF/FFFFFFFF'));
    for (const bad of ['', '0', '0/', '/0', '1/2/3', 'G/0', '123456789/0', 7])
      assert.equal(isLsn(bad), false);
    assert.throws(() => lsnToBigInt('nope'), /not an LSN/);
    assert.throws(() => lsnFromBigInt(-1n), RangeError);
  });

  it('compares numerically, not as text', () => {
    assert.ok(compareLsn('0/FF', '0/100') < 0, '0/FF < 0/100 although "F" > "1"');
    assert.ok(compareLsn('1/0', '0/FFFFFFFF') > 0);
    assert.equal(compareLsn('0/a', '0/A'), 0);
    assert.equal(maxLsn('0/10', '0/9'), '0/10');
  });
});

describe('xid8Of', () => {
  it('finds the full id in the reference’s epoch, or the one before across a wraparound', () => {
    assert.equal(xid8Of(1000, 5000n), 1000n);
    assert.equal(xid8Of(1000, (3n << 32n) + 5000n), (3n << 32n) + 1000n);
    // The transaction began just before the xid counter wrapped; the reference is after it.
    assert.equal(xid8Of(0xfffffff0, (3n << 32n) + 10n), (2n << 32n) + 0xfffffff0n);
    assert.equal(
      xid8Of(7, '12884901895'),
      12884901895n,
      'the reference itself (pg_current_xact_id() inside it)',
    );
  });

  it('refuses values that are not ids', () => {
    assert.throws(() => xid8Of(-1, 10n), RangeError);
    assert.throws(() => xid8Of(2 ** 32, 10n), RangeError);
    assert.throws(() => xid8Of(1.5, 10n), RangeError);
    assert.throws(() => xid8Of(20, 10n), RangeError, 'no full id at or below 10 ends in 20');
    assert.throws(() => xid8Of(1, '12x'), TypeError);
  });
});

describe('replication protocol framing', () => {
  it('encodes a standby status update with flush and apply apart from write', () => {
    const buf = encodeStandbyStatus({
      write: 300n,
      flush: 200n,
      apply: 200n,
      replyRequested: true,
      now: when,
    });
    assert.equal(buf.length, 34);
    assert.equal(buf.toString('latin1', 0, 1), 'r');
    assert.equal(buf.readBigUInt64BE(1), 300n);
    assert.equal(buf.readBigUInt64BE(9), 200n);
    assert.equal(buf.readBigUInt64BE(17), 200n);
    assert.equal(buf.readBigInt64BE(25), dateToPgTimestamp(when));
    assert.equal(buf[33], 1);
  });

  it('parses XLogData and keepalives', () => {
    const k = Buffer.concat([tag('k'), int64(0x1_0000_0010n), int64(dateToPgTimestamp(when)), int8(1)]);
    assert.deepEqual(parseServerCopyData(k), {
      kind: 'keepalive',
      walEnd: 0x1_0000_0010n,
      sentAt: when,
      replyRequested: true,
    });
    const payload = begin(50n, 7);
    const w = Buffer.concat([tag('w'), int64(40n), int64(60n), int64(dateToPgTimestamp(when)), payload]);
    const parsed = parseServerCopyData(w);
    assert.equal(parsed?.kind, 'xlogdata');
    assert.ok(parsed?.kind === 'xlogdata' && parsed.data.equals(payload) && parsed.dataStart === 40n);
    assert.equal(parseServerCopyData(Buffer.from('zz')), null);
  });
});

describe('pgoutput decoder and transaction assembler', () => {
  const target = { schema: 'mr', table: 'outbox', messagePrefix: 'mailroom' };

  function feed(messages: Buffer[]) {
    const out: OutboxTransaction[] = [];
    const assembler = new TransactionAssembler(target, (tx) => out.push(tx));
    for (const m of messages) assembler.handle(decodePgoutput(m), '0/10', when);
    return { out, assembler };
  }

  it('decodes Begin, Relation, Insert, Message and Commit into one transaction, columns found by name', () => {
    const { out } = feed([
      begin(0x200n, 42),
      relation(16384, 'mr', 'outbox', ['seq', 'id', 'topic', 'key', 'payload']),
      insert(16384, ['1', 'a0000000-0000-7000-8000-000000000001', 't', 'k', '\\x00']),
      insert(16384, ['2', 'a0000000-0000-7000-8000-000000000002', 't', null, '\\x00']),
      message(true, 0x1f0n, 'mailroom', 'hello'),
      message(true, 0x1f8n, 'other', 'ignored'),
      commit(0x200n, 0x230n),
    ]);
    assert.equal(out.length, 1);
    const tx = out[0];
    assert.ok(tx);
    assert.equal(tx.xid, 42);
    assert.equal(tx.beginLsn, '0/10');
    assert.equal(tx.commitLsn, '0/200');
    assert.equal(tx.endLsn, '0/230');
    assert.deepEqual(tx.commitTime, when);
    assert.deepEqual(tx.inserts, [
      { id: 'a0000000-0000-7000-8000-000000000001', seq: '1', key: 'k' },
      { id: 'a0000000-0000-7000-8000-000000000002', seq: '2', key: null },
    ]);
    assert.deepEqual(
      tx.messages.map((m) => [m.lsn, m.prefix, m.content.toString(), m.transactional]),
      [['0/1F0', 'mailroom', 'hello', true]],
    );
  });

  it('drops transactions with nothing for the outbox but remembers where they ended', () => {
    const { out, assembler } = feed([
      begin(0x300n, 43),
      relation(99, 'public', 'orders', ['id']),
      insert(99, ['1']),
      commit(0x300n, 0x330n),
    ]);
    assert.equal(out.length, 0);
    assert.equal(assembler.lastEndLsn, '0/330');
    assert.equal(assembler.inTransaction, false);
  });

  it('yields a non-transactional message on its own, its LSN (the end of its record) as end', () => {
    const { out } = feed([message(false, 0x500n, 'mailroom', 'now')]);
    assert.equal(out.length, 1);
    assert.equal(out[0]?.xid, 0);
    assert.equal(out[0]?.commitLsn, '0/500');
    assert.equal(out[0]?.endLsn, '0/500');
    assert.equal('beginLsn' in (out[0] ?? {}), false);
  });

  it('refuses what pgoutput never sends: an Insert outside a transaction, a Commit that does not match its Begin', () => {
    assert.throws(
      () => feed([relation(1, 'mr', 'outbox', ['seq', 'id', 'key']), insert(1, ['1', 'x', null])]),
      ProtocolViolation,
    );
    assert.throws(() => feed([begin(0x200n, 1), commit(0x210n, 0x240n)]), /does not match/);
    assert.throws(() => feed([begin(0x200n, 1), begin(0x300n, 2)]), /still open/);
    assert.throws(() => feed([begin(0x200n, 1), insert(5, ['1'])]), /before its Relation/);
    assert.throws(() => feed([relation(1, 'mr', 'outbox', ['seq', 'topic'])]), /no column id/);
    assert.throws(() => decodePgoutput(Buffer.from('Z')), /unknown pgoutput message tag/);
    assert.throws(() => decodePgoutput(begin(1n, 1).subarray(0, 10)), /ends early/);
  });
});

describe('replication errors say what to change', () => {
  const ctx: ReplicationContext = {
    target: 'db:5432/app',
    role: 'relay',
    database: 'app',
    schema: 'mailroom',
    slot: 'mailroom_relay',
    publication: 'mailroom_outbox',
  };
  const pgError = (code: string, message: string) => Object.assign(new Error(message), { code });

  it('maps the server’s refusals to codes with the fix in the message', () => {
    const wal = toReplicationError(
      pgError('55000', 'logical decoding requires wal_level >= logical'),
      'create_slot',
      ctx,
    );
    assert.equal(wal.code, 'wal_level');
    assert.match(wal.message, /ALTER SYSTEM SET wal_level = logical/);
    assert.match(wal.message, /restart/);

    const hba = toReplicationError(
      pgError(
        '28000',
        'no pg_hba.conf entry for replication connection from host "10.0.0.5", user "relay", no encryption',
      ),
      'replication_connect',
      ctx,
    );
    assert.equal(hba.code, 'connect');
    assert.match(hba.message, /host app relay/);
    assert.match(hba.message, /not by the `replication`/);

    const priv = toReplicationError(
      pgError('42501', 'must be superuser or replication role to start walsender'),
      'replication_connect',
      ctx,
    );
    assert.equal(priv.code, 'privilege');
    assert.match(priv.message, /ALTER ROLE relay REPLICATION/);

    const busy = toReplicationError(
      pgError('55006', 'replication slot "mailroom_relay" is active for PID 4242'),
      'start_replication',
      ctx,
    );
    assert.equal(busy.code, 'slot_in_use');
    assert.equal(busy.details.activePid, 4242);

    const gone = toReplicationError(
      pgError('42704', 'replication slot "mailroom_relay" does not exist'),
      'stream',
      ctx,
    );
    assert.equal(gone.code, 'slot_missing');

    const lost = toReplicationError(
      pgError('55000', 'can no longer get changes from replication slot "x"'),
      'start_replication',
      ctx,
    );
    assert.equal(lost.code, 'slot_invalidated');

    const limit = toReplicationError(
      pgError('53400', 'all replication slots are in use'),
      'create_slot',
      ctx,
    );
    assert.equal(limit.code, 'limit');
    assert.match(limit.message, /max_replication_slots/);

    const cut = toReplicationError(
      pgError('57P01', 'terminating connection due to administrator command'),
      'stream',
      ctx,
    );
    assert.equal(cut.code, 'connection_lost');
    assert.equal(cut.cause instanceof Error, true, 'keeps the original as cause');
  });
});

describe('OutboxLogStream options', () => {
  it('checks names and connection settings before connecting anywhere', () => {
    const base = { connectionString: 'postgres://u:secret@h/db', schema: 'mailroom' };
    const s = new OutboxLogStream(base);
    assert.equal(s.slot, 'mailroom_relay');
    assert.equal(s.publication, 'mailroom_outbox');
    const bad = (options: object, key: RegExp) =>
      assert.throws(
        () => new OutboxLogStream(options as never),
        (err: unknown) => isConfigError(err) && key.test(err.message),
      );
    bad({ ...base, slot: 'Bad-Name' }, /slot must be a name of 1 to 63 characters/);
    bad({ ...base, publication: 'x;drop' }, /publication/);
    bad({ schema: 'mailroom' }, /exactly one of connectionString/);
    bad({ ...base, connection: { host: 'h' } }, /exactly one of connectionString/);
    bad({ ...base, schema: 'Mailroom' }, /defaults to "Mailroom_relay"/);
    bad({ ...base, statusIntervalMs: 60_000, timeoutMs: 30_000 }, /statusIntervalMs/);
    bad({ ...base, schema: 'pg_catalog' }, /system schema/);
    bad({ ...base, connectionString: 42 }, /connectionString/);
  });

  it('refuses confirm() of a position it never handed out, and next() before start()', async () => {
    const s = new OutboxLogStream({ connectionString: 'postgres://h/db', schema: 'mailroom' });
    assert.throws(() => s.confirm('0/10'), { code: 'confirm_ahead' });
    assert.throws(() => s.confirm('not-an-lsn'), TypeError);
    await assert.rejects(s.next(), { code: 'not_started' });
    await s.stop();
    assert.equal(await s.next(), null);
  });
});
