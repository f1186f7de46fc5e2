import { lsnToBigInt, type Lsn } from './lsn.js';
import type { PgoutputMessage, RelationMessage } from './pgoutput-decoder.js';

/** One row inserted into the outbox table, as the log carries it. */
export interface OutboxInsert {
  /** The message id: the row's `id` column (a UUID). */
  id: string;
  /** The row's `seq` (a bigint, as decimal text). */
  seq: string;
  /** The row's `key`, or `null` for a keyless message. */
  key: string | null;
}

/** A logical decoding message (`pg_logical_emit_message`) with the stream's prefix. */
export interface OutboxLogMessage {
  /** Where the message's WAL record ends (what pgoutput reports for a message). */
  lsn: Lsn;
  prefix: string;
  content: Buffer;
  /** Written by a transaction (`true`), or immediately, outside any (`false`). */
  transactional: boolean;
}

/**
 * A committed transaction that inserted outbox rows or emitted prefixed messages, or a
 * non-transactional message on its own.
 *
 * Positions: `commitLsn` is where the commit record starts, `endLsn` where it ends. Confirming
 * `endLsn` tells the server this transaction and everything before it is done: after a restart
 * it streams only transactions that commit at or after the confirmed position. A
 * non-transactional message is its own pseudo-transaction: `xid` 0, no `beginLsn`, and
 * `commitLsn` = `endLsn` = its LSN (which PostgreSQL reports as the end of the message's record).
 */
export interface OutboxTransaction {
  /** The 32-bit transaction id (0 for a non-transactional message); see `xid8Of`. */
  xid: number;
  /** Where the transaction's first WAL record starts; absent for a non-transactional message. */
  beginLsn?: Lsn;
  commitLsn: Lsn;
  endLsn: Lsn;
  /** The commit time the server recorded (for a non-transactional message: when it was sent). */
  commitTime: Date;
  /** Outbox rows in insert order. */
  inserts: OutboxInsert[];
  /** Prefixed messages in the order they were written. */
  messages: OutboxLogMessage[];
}

/** How the assembler recognises the outbox table and the messages it keeps. */
export interface AssemblerTarget {
  schema: string;
  table: string;
  messagePrefix: string;
}

/** A relation as the stream knows it: outbox or not, and where the three columns are. */
interface KnownRelation {
  qualifiedName: string;
  outbox?: { id: number; seq: number; key: number };
}

interface OpenTransaction {
  xid: number;
  beginLsn: Lsn;
  finalLsn: Lsn;
  inserts: OutboxInsert[];
  messages: OutboxLogMessage[];
}

/** The server broke the order pgoutput promises (an Insert outside BEGIN…COMMIT and such). */
export class ProtocolViolation extends Error {
  override name = 'ProtocolViolation';
}

/** Something worth a log line that does not stop the stream. */
export interface AssemblerNotice {
  message: string;
  fields: Record<string, unknown>;
}

/**
 * Turns pgoutput messages into whole committed transactions. Rows are buffered per transaction
 * until its Commit, so nothing uncommitted is ever handed out (pgoutput without `streaming` sends
 * a transaction only once it committed, and never sends one that rolled back; the buffering is
 * the second line of that defence). Transactions without outbox rows or prefixed messages are
 * dropped, but their end is remembered as {@link lastEndLsn}.
 */
export class TransactionAssembler {
  private readonly relations = new Map<number, KnownRelation>();
  private open: OpenTransaction | undefined;
  /** The end of the last commit (or non-transactional message) seen, kept or dropped. */
  lastEndLsn: Lsn | undefined;

  constructor(
    private readonly target: AssemblerTarget,
    private readonly emit: (tx: OutboxTransaction) => void,
    private readonly notice: (n: AssemblerNotice) => void = () => undefined,
  ) {}

  /** True between a Begin and its Commit. */
  get inTransaction(): boolean {
    return this.open !== undefined;
  }

  /**
   * Takes one decoded message. `dataStart` is the XLogData's WAL position (for a Begin: the
   * transaction's first record) and `sentAt` the server's send time.
   */
  handle(msg: PgoutputMessage, dataStart: Lsn, sentAt: Date): void {
    switch (msg.tag) {
      case 'begin':
        if (this.open) {
          throw new ProtocolViolation(
            `Begin of xid ${msg.xid} arrived while xid ${this.open.xid} was still open (no Commit)`,
          );
        }
        this.open = { xid: msg.xid, beginLsn: dataStart, finalLsn: msg.finalLsn, inserts: [], messages: [] };
        return;
      case 'relation':
        this.relations.set(msg.relationId, this.describe(msg));
        return;
      case 'insert': {
        const relation = this.relations.get(msg.relationId);
        if (!relation) {
          throw new ProtocolViolation(`Insert into relation ${msg.relationId} before its Relation message`);
        }
        if (!relation.outbox) return; // only the outbox is published; anything else is not ours
        if (!this.open)
          throw new ProtocolViolation(`Insert into ${relation.qualifiedName} outside a transaction`);
        const { id, seq, key } = relation.outbox;
        // Only these three columns are read; the payload's bytes are never copied.
        const idValue = msg.values[id];
        const seqValue = msg.values[seq];
        const keyValue = msg.values[key];
        if (!idValue || !seqValue) {
          throw new ProtocolViolation(`Insert into ${relation.qualifiedName} without a value for id or seq`);
        }
        this.open.inserts.push({
          id: idValue.toString('utf8'),
          seq: seqValue.toString('utf8'),
          key: keyValue ? keyValue.toString('utf8') : null,
        });
        return;
      }
      case 'message': {
        if (msg.prefix !== this.target.messagePrefix) return;
        const kept: OutboxLogMessage = {
          lsn: msg.lsn,
          prefix: msg.prefix,
          content: msg.content,
          transactional: msg.transactional,
        };
        if (msg.transactional) {
          if (!this.open)
            throw new ProtocolViolation(`transactional message at ${msg.lsn} outside a transaction`);
          this.open.messages.push(kept);
          return;
        }
        // Decoded the moment its record is read, not at a commit: it stands alone. The LSN
        // PostgreSQL gives a message is the END of its WAL record, which is where the next record
        // starts; that is exactly the position to confirm. One byte more would make a restarted
        // slot skip a record starting there, such as the COMMIT of an outbox transaction (a
        // restart skips every commit record that starts before the confirmed position).
        this.lastEndLsn = msg.lsn;
        this.emit({
          xid: 0,
          commitLsn: msg.lsn,
          endLsn: msg.lsn,
          commitTime: sentAt,
          inserts: [],
          messages: [kept],
        });
        return;
      }
      case 'commit': {
        const open = this.open;
        if (!open) throw new ProtocolViolation(`Commit at ${msg.commitLsn} without a Begin`);
        if (lsnToBigInt(open.finalLsn) !== lsnToBigInt(msg.commitLsn)) {
          throw new ProtocolViolation(
            `Commit at ${msg.commitLsn} does not match the Begin of xid ${open.xid} (final LSN ${open.finalLsn})`,
          );
        }
        this.open = undefined;
        this.lastEndLsn = msg.endLsn;
        if (open.inserts.length === 0 && open.messages.length === 0) return;
        this.emit({
          xid: open.xid,
          beginLsn: open.beginLsn,
          commitLsn: msg.commitLsn,
          endLsn: msg.endLsn,
          commitTime: msg.commitTime,
          inserts: open.inserts,
          messages: open.messages,
        });
        return;
      }
      case 'truncate': {
        const names = msg.relationIds.map((r) => this.relations.get(r)?.qualifiedName ?? String(r));
        this.notice({
          message: 'a TRUNCATE of a published table was streamed; it removes no message from the stream',
          fields: { relations: names },
        });
        return;
      }
      case 'origin':
      case 'type':
      case 'skipped':
        return;
    }
  }

  private describe(msg: RelationMessage): KnownRelation {
    const qualifiedName = `${msg.schema}.${msg.name}`;
    if (msg.schema !== this.target.schema || msg.name !== this.target.table) return { qualifiedName };
    const index = (name: string) => {
      const i = msg.columns.findIndex((c) => c.name === name);
      if (i < 0) {
        throw new ProtocolViolation(
          `the outbox table ${qualifiedName} as streamed has no column ${name} (columns: ` +
            `${msg.columns.map((c) => c.name).join(', ')}); a publication column list must include id, seq and key`,
        );
      }
      return i;
    };
    return { qualifiedName, outbox: { id: index('id'), seq: index('seq'), key: index('key') } };
  }
}
