import { lsnFromBigInt, type Lsn } from './lsn.js';

/**
 * A decoder for the messages of PostgreSQL's built-in `pgoutput` plugin, protocol version 1
 * (https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html), limited to
 * what an outbox stream needs: Begin, Commit, Origin, Relation, Type, Insert, Truncate and logical
 * decoding Message. Update and Delete decode to `skipped` (the publication publishes inserts only;
 * they are never acted on). Column values arrive in text form (`proto_version '1'` sends no binary).
 */

/** Microseconds between the Unix epoch and PostgreSQL's epoch, 2000-01-01 00:00 UTC. */
const PG_EPOCH_MS = 946_684_800_000;

export interface BeginMessage {
  tag: 'begin';
  /** The LSN of the transaction's commit record. */
  finalLsn: Lsn;
  commitTime: Date;
  xid: number;
}

export interface CommitMessage {
  tag: 'commit';
  flags: number;
  /** The LSN of the commit record. */
  commitLsn: Lsn;
  /** The LSN just past the commit record: confirming it means "this transaction is done". */
  endLsn: Lsn;
  commitTime: Date;
}

export interface OriginMessage {
  tag: 'origin';
  originLsn: Lsn;
  name: string;
}

export interface RelationColumn {
  /** Bit 1: part of the replica identity key. */
  flags: number;
  name: string;
  typeOid: number;
  typeMod: number;
}

export interface RelationMessage {
  tag: 'relation';
  relationId: number;
  schema: string;
  name: string;
  replicaIdentity: string;
  columns: RelationColumn[];
}

export interface TypeMessage {
  tag: 'type';
  typeOid: number;
  schema: string;
  name: string;
}

/**
 * One column of a row: `null`, the bytes of its text form, or `undefined` for an unchanged
 * TOASTed value. The bytes are a view into the received chunk, valid only while the message is
 * handled: read the columns you need (`toString('utf8')`) and let the rest go, so that a large
 * payload column is never copied.
 */
export type TupleValue = Buffer | null | undefined;

export interface InsertMessage {
  tag: 'insert';
  relationId: number;
  values: TupleValue[];
}

export interface TruncateMessage {
  tag: 'truncate';
  options: number;
  relationIds: number[];
}

export interface LogicalMessage {
  tag: 'message';
  transactional: boolean;
  lsn: Lsn;
  prefix: string;
  content: Buffer;
}

/** A message the stream does not act on (Update, Delete): only its tag byte is read. */
export interface SkippedMessage {
  tag: 'skipped';
  kind: string;
}

export type PgoutputMessage =
  | BeginMessage
  | CommitMessage
  | OriginMessage
  | RelationMessage
  | TypeMessage
  | InsertMessage
  | TruncateMessage
  | LogicalMessage
  | SkippedMessage;

/** The bytes were not a pgoutput message this decoder knows. Carries the tag and offset. */
export class PgoutputDecodeError extends Error {
  override name = 'PgoutputDecodeError';
}

class Reader {
  private offset = 0;
  constructor(private readonly buf: Buffer) {}

  private need(n: number): void {
    if (this.offset + n > this.buf.length) {
      throw new PgoutputDecodeError(
        `pgoutput message of ${this.buf.length} bytes ends early: needed ${n} more at offset ${this.offset}`,
      );
    }
  }
  byte(): number {
    this.need(1);
    return this.buf.readUInt8(this.offset++);
  }
  int16(): number {
    this.need(2);
    const v = this.buf.readInt16BE(this.offset);
    this.offset += 2;
    return v;
  }
  int32(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.offset);
    this.offset += 4;
    return v;
  }
  uint32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.offset);
    this.offset += 4;
    return v;
  }
  uint64(): bigint {
    this.need(8);
    const v = this.buf.readBigUInt64BE(this.offset);
    this.offset += 8;
    return v;
  }
  int64(): bigint {
    this.need(8);
    const v = this.buf.readBigInt64BE(this.offset);
    this.offset += 8;
    return v;
  }
  lsn(): Lsn {
    return lsnFromBigInt(this.uint64());
  }
  /** A timestamp in microseconds since 2000-01-01, as a Date (millisecond precision). */
  time(): Date {
    return pgTimestampToDate(this.int64());
  }
  /** A NUL-terminated UTF-8 string. */
  cstring(): string {
    const end = this.buf.indexOf(0, this.offset);
    if (end < 0)
      throw new PgoutputDecodeError(`pgoutput string at offset ${this.offset} has no terminating NUL`);
    const s = this.buf.toString('utf8', this.offset, end);
    this.offset = end + 1;
    return s;
  }
  /** The next `n` bytes without copying them. */
  view(n: number): Buffer {
    this.need(n);
    const out = this.buf.subarray(this.offset, this.offset + n);
    this.offset += n;
    return out;
  }
  bytes(n: number): Buffer {
    this.need(n);
    // A copy: the chunk belongs to the socket's buffer, which the driver reuses.
    const out = Buffer.from(this.buf.subarray(this.offset, this.offset + n));
    this.offset += n;
    return out;
  }
}

/** PostgreSQL's timestamp (microseconds since 2000-01-01 UTC) as a Date. */
export function pgTimestampToDate(micros: bigint): Date {
  return new Date(PG_EPOCH_MS + Number(micros / 1000n));
}

/** A Date as PostgreSQL's timestamp, microseconds since 2000-01-01 UTC. */
export function dateToPgTimestamp(date: Date): bigint {
  return BigInt(date.getTime() - PG_EPOCH_MS) * 1000n;
}

function tuple(r: Reader): TupleValue[] {
  const count = r.int16();
  const values: TupleValue[] = [];
  for (let i = 0; i < count; i++) {
    const kind = String.fromCharCode(r.byte());
    switch (kind) {
      case 'n':
        values.push(null);
        break;
      case 'u':
        values.push(undefined);
        break;
      case 't':
        values.push(r.view(r.int32()));
        break;
      default:
        throw new PgoutputDecodeError(
          `pgoutput tuple column ${i} has kind ${JSON.stringify(kind)}, not n, u or t`,
        );
    }
  }
  return values;
}

/**
 * Decodes one pgoutput message (the payload of one XLogData). Throws a
 * {@link PgoutputDecodeError} for bytes that are not a known message.
 */
export function decodePgoutput(buf: Buffer): PgoutputMessage {
  const r = new Reader(buf);
  const tag = String.fromCharCode(r.byte());
  switch (tag) {
    case 'B':
      return { tag: 'begin', finalLsn: r.lsn(), commitTime: r.time(), xid: r.uint32() };
    case 'C':
      return { tag: 'commit', flags: r.byte(), commitLsn: r.lsn(), endLsn: r.lsn(), commitTime: r.time() };
    case 'O':
      return { tag: 'origin', originLsn: r.lsn(), name: r.cstring() };
    case 'R': {
      const relationId = r.uint32();
      const schema = r.cstring();
      const name = r.cstring();
      const replicaIdentity = String.fromCharCode(r.byte());
      const count = r.int16();
      const columns: RelationColumn[] = [];
      for (let i = 0; i < count; i++) {
        columns.push({ flags: r.byte(), name: r.cstring(), typeOid: r.uint32(), typeMod: r.int32() });
      }
      return { tag: 'relation', relationId, schema, name, replicaIdentity, columns };
    }
    case 'Y':
      return { tag: 'type', typeOid: r.uint32(), schema: r.cstring(), name: r.cstring() };
    case 'I': {
      const relationId = r.uint32();
      const marker = String.fromCharCode(r.byte());
      if (marker !== 'N') {
        throw new PgoutputDecodeError(
          `pgoutput Insert has tuple marker ${JSON.stringify(marker)}, expected N`,
        );
      }
      return { tag: 'insert', relationId, values: tuple(r) };
    }
    case 'T': {
      const count = r.int32();
      const options = r.byte();
      const relationIds: number[] = [];
      for (let i = 0; i < count; i++) relationIds.push(r.uint32());
      return { tag: 'truncate', options, relationIds };
    }
    case 'M': {
      const flags = r.byte();
      const lsn = r.lsn();
      const prefix = r.cstring();
      const content = r.bytes(r.int32());
      return { tag: 'message', transactional: (flags & 1) === 1, lsn, prefix, content };
    }
    case 'U':
    case 'D':
      return { tag: 'skipped', kind: tag };
    default:
      throw new PgoutputDecodeError(
        `unknown pgoutput message tag ${JSON.stringify(tag)} (byte 0x${buf[0]?.toString(16) ?? '??'})`,
      );
  }
}
