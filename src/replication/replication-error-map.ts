import { isReplicationError, ReplicationError, type ReplicationErrorCode } from './replication-error.js';

/** What the stream was doing when an error came, which decides what the error means. */
export type ReplicationStep =
  | 'connect'
  | 'replication_connect'
  | 'check'
  | 'create_publication'
  | 'create_slot'
  | 'start_replication'
  | 'stream';

/** Names for messages; never a password. */
export interface ReplicationContext {
  /** `host:port/database`. */
  target: string;
  /** The role connecting, when known. */
  role: string | undefined;
  database: string | undefined;
  schema: string;
  slot: string;
  publication: string;
}

const SOCKET_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'EPIPE',
  'EAI_AGAIN',
]);

function field(err: unknown, name: string): string | undefined {
  const v = (err as Record<string, unknown> | null | undefined)?.[name];
  return typeof v === 'string' ? v : undefined;
}

/** The role to name in advice: known, or a placeholder the reader fills in. */
function roleOf(ctx: ReplicationContext): string {
  return ctx.role ?? '<role>';
}

/** Advice for a role without the REPLICATION attribute. */
export function replicationPrivilegeAdvice(ctx: ReplicationContext): string {
  return (
    `role "${roleOf(ctx)}" lacks the REPLICATION attribute, which a logical replication connection and ` +
    `slot need: run \`ALTER ROLE ${roleOf(ctx)} REPLICATION;\` as a superuser (or connect as a role that has it)`
  );
}

/**
 * Wraps a driver or server error in a {@link ReplicationError} whose code and message say what
 * to change. Keeps the original as `cause`; an error that is already a ReplicationError passes
 * through.
 */
export function toReplicationError(
  err: unknown,
  step: ReplicationStep,
  ctx: ReplicationContext,
): ReplicationError {
  if (isReplicationError(err)) return err;
  const code = field(err, 'code');
  const text = field(err, 'message') ?? String(err);
  const details = { step, slot: ctx.slot, publication: ctx.publication, target: ctx.target, sqlstate: code };
  const make = (c: ReplicationErrorCode, message: string, extra: Record<string, unknown> = {}) =>
    new ReplicationError(c, message, { cause: err, details: { ...details, ...extra } });

  if (code === '28000' && /pg_hba\.conf/.test(text)) {
    const line =
      step === 'replication_connect'
        ? `a logical replication connection is matched by its database name, not by the \`replication\` ` +
          `keyword (that one is for physical replication): add a line such as \`host ${ctx.database ?? '<database>'} ` +
          `${roleOf(ctx)} <client-address>/32 scram-sha-256\` to pg_hba.conf, then \`SELECT pg_reload_conf();\``
        : `add a line for this database, role and client address to pg_hba.conf, then \`SELECT pg_reload_conf();\``;
    return make('connect', `PostgreSQL at ${ctx.target} refused the connection (${text}); ${line}`);
  }
  if (code === '42501') {
    if (step === 'replication_connect' || step === 'create_slot' || /replication|WAL sender/i.test(text)) {
      return make('privilege', `${replicationPrivilegeAdvice(ctx)} (server said: ${text})`);
    }
    if (step === 'create_publication') {
      return make(
        'privilege',
        `creating publication "${ctx.publication}" was refused (${text}): CREATE PUBLICATION needs CREATE on the ` +
          `database and ownership of ${ctx.schema}.outbox; run \`GRANT CREATE ON DATABASE ${ctx.database ?? '<database>'} ` +
          `TO ${roleOf(ctx)};\`, or have the table's owner create the publication ` +
          `(\`CREATE PUBLICATION ${ctx.publication} FOR TABLE ${ctx.schema}.outbox WITH (publish = 'insert');\`)`,
      );
    }
    return make(
      'privilege',
      `PostgreSQL refused ${step.replace('_', ' ')} for role "${roleOf(ctx)}": ${text}`,
    );
  }
  if (code === '55000' && /wal_level/.test(text)) {
    return make(
      'wal_level',
      `logical decoding is off on ${ctx.target} (${text}): run \`ALTER SYSTEM SET wal_level = logical;\` as a ` +
        `superuser and restart PostgreSQL (a reload is not enough)`,
    );
  }
  if (code === '55000' && /no longer get changes|invalidated/i.test(text)) {
    return make(
      'slot_invalidated',
      `replication slot "${ctx.slot}" was invalidated (${text}): the server removed WAL it still needed ` +
        `(max_slot_wal_keep_size). Messages committed since its last confirmed position may not be in the log: ` +
        `drop it (\`SELECT pg_drop_replication_slot('${ctx.slot}');\`), let the relay create it again, and ` +
        `deliver the gap from the outbox table`,
    );
  }
  if (code === '55006') {
    const pid = /PID (\d+)/.exec(text)?.[1];
    return make(
      'slot_in_use',
      `replication slot "${ctx.slot}" is in use by PID ${pid ?? '?'} (another relay streams from it): stop that ` +
        `relay or give this one another slot; pg_stat_replication shows who holds it`,
      pid === undefined ? {} : { activePid: Number(pid) },
    );
  }
  if (code === '42704' && /replication slot/.test(text)) {
    return make(
      'slot_missing',
      `replication slot "${ctx.slot}" does not exist (${text}); it was dropped behind the stream's back: ` +
        `transactions since its last confirmed position are not in the log, deliver them from the outbox table`,
    );
  }
  if (code === '42704' && /publication/.test(text)) {
    return make(
      'publication',
      `publication "${ctx.publication}" is missing in the slot's view of the catalog (${text}): it was dropped, ` +
        `or created after slot "${ctx.slot}"; create the publication first, then drop and recreate the slot`,
    );
  }
  if (code === '42P01' && step === 'create_publication') {
    return make(
      'publication',
      `the outbox table ${ctx.schema}.outbox does not exist (${text}): run \`mailroom migrate\` for schema ${ctx.schema}`,
    );
  }
  if (code === '53400' || (code === '53300' && /max_wal_senders|standby connections/i.test(text))) {
    return make(
      'limit',
      `${text}: raise max_replication_slots / max_wal_senders in postgresql.conf (restart needed), or drop ` +
        `unused slots (pg_replication_slots where active is false)`,
    );
  }
  if (step === 'stream') {
    return make(
      'connection_lost',
      `the replication connection to ${ctx.target} (slot "${ctx.slot}") broke: ${text}; start a new stream ` +
        `(it resumes from the last confirmed position)`,
    );
  }
  if (
    step === 'connect' ||
    step === 'replication_connect' ||
    (code !== undefined && SOCKET_CODES.has(code))
  ) {
    return make(
      'connect',
      `could not ${step === 'replication_connect' ? 'open a replication connection' : 'connect'} to PostgreSQL ` +
        `at ${ctx.target}: ${text}`,
    );
  }
  if (step === 'create_slot' && /timeout|canceling statement/i.test(text)) {
    return make(
      'setup',
      `creating replication slot "${ctx.slot}" did not finish (${text}): it waits until every transaction open ` +
        `at that moment, in any database of the server, has ended; end long-running transactions ` +
        `(pg_stat_activity where xact_start is old) or raise setupTimeoutMs`,
    );
  }
  return make('setup', `PostgreSQL at ${ctx.target} refused ${step.replace('_', ' ')}: ${text}`);
}
