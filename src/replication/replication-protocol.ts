import { dateToPgTimestamp, pgTimestampToDate } from './pgoutput-decoder.js';

/**
 * The streaming replication sub-protocol carried in CopyData messages once START_REPLICATION
 * has switched the connection to copy-both mode
 * (https://www.postgresql.org/docs/current/protocol-replication.html): from the server XLogData
 * (`w`) and Primary keepalive (`k`); from the client the Standby status update (`r`).
 * Positions are kept as `bigint` byte positions here; see lsn.ts for the text form.
 */

export interface XLogData {
  kind: 'xlogdata';
  /** Where this message's WAL starts (for a Commit: the end of the commit record). */
  dataStart: bigint;
  /** The end of WAL on the server when it was sent. */
  walEnd: bigint;
  sentAt: Date;
  /** The output plugin's message (pgoutput bytes). */
  data: Buffer;
}

export interface PrimaryKeepalive {
  kind: 'keepalive';
  /** The server's position: everything before it has been sent (or skipped) to this client. */
  walEnd: bigint;
  sentAt: Date;
  /** The server asks for a status update now, or it will time the connection out. */
  replyRequested: boolean;
}

export type ServerCopyMessage = XLogData | PrimaryKeepalive;

/** Reads one CopyData payload from the server. Returns `null` for a kind it does not know. */
export function parseServerCopyData(chunk: Buffer): ServerCopyMessage | null {
  const kind = chunk[0];
  if (kind === 0x77 /* w */ && chunk.length >= 25) {
    return {
      kind: 'xlogdata',
      dataStart: chunk.readBigUInt64BE(1),
      walEnd: chunk.readBigUInt64BE(9),
      sentAt: pgTimestampToDate(chunk.readBigInt64BE(17)),
      data: chunk.subarray(25),
    };
  }
  if (kind === 0x6b /* k */ && chunk.length >= 18) {
    return {
      kind: 'keepalive',
      walEnd: chunk.readBigUInt64BE(1),
      sentAt: pgTimestampToDate(chunk.readBigInt64BE(9)),
      replyRequested: chunk[17] === 1,
    };
  }
  return null;
}

/** The positions a standby status update reports. */
export interface StandbyStatus {
  /** Received and written: may be ahead of `flush`, the server only shows it in pg_stat_replication. */
  write: bigint;
  /**
   * Durably processed. For a logical slot the server stores this as `confirmed_flush_lsn`, and
   * after a restart skips every transaction that committed before it: it must never exceed what
   * the consumer confirmed.
   */
  flush: bigint;
  /** Applied; reported equal to `flush`. */
  apply: bigint;
  /** Ask the server to answer with a keepalive (used to tell a silent server from a dead one). */
  replyRequested: boolean;
  now?: Date;
}

/** The 34-byte Standby status update (`r`) CopyData payload. */
export function encodeStandbyStatus(status: StandbyStatus): Buffer {
  const buf = Buffer.alloc(34);
  buf.write('r', 0, 'latin1');
  buf.writeBigUInt64BE(status.write, 1);
  buf.writeBigUInt64BE(status.flush, 9);
  buf.writeBigUInt64BE(status.apply, 17);
  buf.writeBigInt64BE(dateToPgTimestamp(status.now ?? new Date()), 25);
  buf.writeUInt8(status.replyRequested ? 1 : 0, 33);
  return buf;
}
