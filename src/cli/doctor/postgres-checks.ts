import type { PgClientSlice } from '../../replication/pg-replication-client.js';
import { latestVersion } from '../../stores/postgres/migrate.js';
import { postgresSql } from '../../stores/postgres/postgres-sql.js';
import { notifyChannel } from '../../stores/postgres/schema-name.js';
import { quoteIdent, quoteLiteral } from '../../stores/sql-identifier.js';
import { formatDuration } from '../duration.js';
import { formatBytes, listSlotHealth } from '../slot-health.js';
import { truncate } from '../table.js';
import { check, errorText, skip, worst, type CheckStatus, type DoctorCheck } from './check.js';

/** Thresholds of the PostgreSQL checks (flags of `mailroom doctor`). */
export interface PostgresThresholds {
  /** A transaction (or prepared transaction) open longer than this holds back vacuum: warn. */
  longTransactionMs: number;
  /** The oldest message due this long and not claimed while relays are alive: warn. */
  staleMessageMs: number;
  /** A slot keeping more WAL than this: warn. */
  slotWarnBytes: number;
}

/** Schema version that added the relay presence table. */
const PRESENCE_VERSION = 13;
/** Rows at the head of the outbox that the blocked-key search looks at, at most. */
const BLOCKED_WINDOW = 10_000;
/** Most leased rows read to count leases per owner. */
const LEASE_LIMIT = 100_000;

/** The outbox table's vacuum settings as migration 7 sets them (sql/postgres/000007_outbox_autovacuum.sql). */
export const OUTBOX_RELOPTIONS: Readonly<Record<string, string>> = {
  autovacuum_vacuum_scale_factor: '0',
  autovacuum_vacuum_threshold: '10000',
  autovacuum_vacuum_insert_scale_factor: '0',
  autovacuum_vacuum_insert_threshold: '50000',
  autovacuum_analyze_scale_factor: '0',
  autovacuum_analyze_threshold: '10000',
  autovacuum_vacuum_cost_delay: '0',
};

type Row = Record<string, unknown>;

const iso = (v: unknown): string => (v instanceof Date ? v.toISOString() : String(v));
const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v));
const age = (ms: unknown): string => formatDuration(Math.max(0, num(ms)));

/** What the shared state of the checks learned (the bindings check reads the topics). */
export interface PostgresFindings {
  checks: DoctorCheck[];
  /** The schema is at the version this Mailroom needs (the outbox checks ran). */
  migrated: boolean;
}

/**
 * Runs the PostgreSQL checks of `mailroom doctor` on one connection: schema, relays, oldest
 * message, blocked keys, xmin horizon, replication slots, bloat, autovacuum, NOTIFY queue.
 * A check whose statement fails reports `fail` with the error; the others still run.
 */
export async function postgresChecks(
  client: PgClientSlice,
  schema: string,
  thresholds: PostgresThresholds,
): Promise<PostgresFindings> {
  const s = quoteIdent(schema);
  const q = async (sql: string, params?: unknown[]): Promise<Row[]> => (await client.query(sql, params)).rows;
  const guarded = async (id: DoctorCheck['id'], run: () => Promise<DoctorCheck>): Promise<DoctorCheck> => {
    try {
      return await run();
    } catch (err) {
      return check(id as never, 'fail', `could not check: ${errorText(err)}`);
    }
  };
  const checks: DoctorCheck[] = [];

  // Schema version.
  let version = 0;
  const schemaCheck = await guarded('schema', async () => {
    const known = latestVersion();
    const [exists] = await q('SELECT to_regclass($1) IS NOT NULL AS ok', [`${s}.migrations`]);
    if (exists?.ok !== true) {
      return check('schema', 'fail', `schema "${schema}" is not migrated (no ${schema}.migrations table)`, {
        fix: [`run mailroom migrate --schema ${schema} (or await store.migrate())`],
      });
    }
    const [row] = await q(`SELECT coalesce(max(version), 0)::int AS v FROM ${s}.migrations`);
    version = num(row?.v);
    if (version < known) {
      return check(
        'schema',
        'fail',
        `schema "${schema}" is at version ${version}, this Mailroom needs ${known}`,
        {
          fix: [`run mailroom migrate --schema ${schema} (mailroom migrate --dry-run shows the SQL first)`],
        },
      );
    }
    if (version > known) {
      return check(
        'schema',
        'fail',
        `schema "${schema}" is at version ${version}, newer than this Mailroom knows (${known})`,
        { fix: ['upgrade mailroom to the version the relays run'] },
      );
    }
    return check('schema', 'ok', `schema "${schema}" is at version ${version}, the latest`);
  });
  checks.push(schemaCheck);
  const hasOutbox = version >= 1;
  if (!hasOutbox) {
    for (const id of ['relays', 'oldest-message', 'blocked-keys'] as const) {
      checks.push(skip(id, `schema "${schema}" is not migrated`));
    }
  }

  // Relays (presence rows) and the leases of the outbox.
  let aliveRelays = new Set<string>();
  let presence = false;
  if (hasOutbox) {
    checks.push(
      await guarded('relays', async () => {
        const [head] = await q(`SELECT 1 AS one FROM ${s}.outbox ORDER BY seq LIMIT 1`);
        const waiting = head !== undefined;
        const leases = await q(
          `SELECT x.lease_owner AS owner, count(*)::bigint AS n, min(x.lease_until) AS first_until FROM (
  SELECT o.lease_owner, o.lease_until FROM ${s}.outbox o
  WHERE o.lease_token IS NOT NULL AND o.lease_until > now() LIMIT $1) x GROUP BY x.lease_owner ORDER BY 1`,
          [LEASE_LIMIT],
        );
        if (version < PRESENCE_VERSION) {
          return check(
            'relays',
            'skip',
            `schema version ${version} keeps no relay presence (version ${PRESENCE_VERSION} adds it)`,
            {
              detail: leases.map((l) => `leases held by ${String(l.owner)}: ${num(l.n)} message(s)`),
              fix: [`run mailroom migrate --schema ${schema}`],
            },
          );
        }
        presence = true;
        const sql = postgresSql(schema, notifyChannel(schema));
        const rows = await q(sql.listRelays, [LEASE_LIMIT]);
        aliveRelays = new Set(rows.filter((r) => r.alive === true).map((r) => String(r.owner)));
        const statuses: CheckStatus[] = [];
        const detail: string[] = [];
        const fix: string[] = [];
        for (const r of rows) {
          const owner = String(r.owner);
          const inFlight = num(r.in_flight);
          const leased =
            inFlight > 0 ? `, ${inFlight} in flight (first lease ends ${iso(r.oldest_lease_until)})` : '';
          const line =
            `${owner}: ${r.alive === true ? String(r.state) : 'DEAD'}, host ${String(r.host)} pid ${num(r.pid)}, ` +
            `mailroom ${String(r.version)}, ${String(r.wakeup)} -> ${String(r.transport)}, ` +
            `last heartbeat ${age(r.heartbeat_age_ms)} ago (every ${age(r.heartbeat_interval_ms)})${leased}`;
          detail.push(line);
          if (r.alive !== true) {
            statuses.push('warn');
            fix.push(
              `relay ${owner} stopped heartbeating (killed, or lost its database): if host ${String(r.host)} pid ` +
                `${num(r.pid)} is gone, DELETE FROM ${s}.relay WHERE owner = ${quoteLiteral(owner)}; ` +
                '(rows dead for a day go at the next heartbeat of any relay)',
            );
          } else if (r.state === 'unavailable') {
            statuses.push('warn');
            fix.push(
              `relay ${owner} cannot publish to its transport (${String(r.transport)}): check the broker (mailroom doctor --transport URL)`,
            );
          } else {
            statuses.push('ok');
          }
        }
        const known = new Set(rows.map((r) => String(r.owner)));
        for (const l of leases) {
          if (known.has(String(l.owner))) continue;
          detail.push(
            `${String(l.owner)}: no presence row (a relay older than schema version 13, or a callback dispatcher), ` +
              `${num(l.n)} in flight (first lease ends ${iso(l.first_until)})`,
          );
        }
        const dead = rows.length - aliveRelays.size;
        if (aliveRelays.size === 0) {
          fix.push(
            `start a relay: mailroom relay --database-url URL --schema ${schema} --transport URL (docs/relay.md)`,
          );
          return check(
            'relays',
            waiting ? 'fail' : 'warn',
            waiting
              ? `no relay alive, and messages wait in the outbox${dead > 0 ? ` (${dead} dead relay row(s))` : ''}`
              : `no relay alive (the outbox is empty now)${dead > 0 ? `; ${dead} dead relay row(s)` : ''}`,
            { detail, fix },
          );
        }
        const unavailable = rows.filter((r) => r.alive === true && r.state === 'unavailable').length;
        const parts = [`${aliveRelays.size} relay(s) alive`];
        if (unavailable > 0) parts.push(`${unavailable} without their transport`);
        if (dead > 0) parts.push(`${dead} dead (no heartbeat for over 3 intervals)`);
        return check('relays', worst(statuses), parts.join(', '), { detail, fix });
      }),
    );
  }

  // The oldest message and why it waits; then the oldest message held behind its key.
  const noRelay = (): boolean => presence && aliveRelays.size === 0;
  const explain = (m: Row): { status: CheckStatus; why: string; fix: string[] } => {
    const attempts = num(m.attempts);
    const lastError = m.last_error ? `; last error: ${truncate(String(m.last_error), 300)}` : '';
    if (m.leased === true) {
      const owner = String(m.lease_owner);
      const dead = presence && !aliveRelays.has(owner);
      return {
        status: dead ? 'warn' : 'ok',
        why:
          `leased by ${owner} until ${iso(m.lease_until)} (attempt ${attempts})` +
          (dead ? `; that relay is not alive: the lease runs out then and another relay takes it` : '') +
          lastError,
        fix: [],
      };
    }
    if (m.delayed === true) {
      if (attempts > 0 && m.last_error) {
        return {
          status: 'warn',
          why: `in retry until ${iso(m.available_at)} (attempt ${attempts} failed)${lastError}`,
          fix: [
            `fix the cause of the error; to send it now: UPDATE ${s}.outbox SET available_at = now() WHERE id = ${quoteLiteral(String(m.id))};`,
          ],
        };
      }
      return { status: 'ok', why: `delayed until ${iso(m.available_at)} (enqueued with a delay)`, fix: [] };
    }
    if (noRelay()) {
      return {
        status: 'fail',
        why: `due since ${iso(m.available_at)}, and no relay is alive to claim it${lastError}`,
        fix: [`start a relay: mailroom relay --database-url URL --schema ${schema} --transport URL`],
      };
    }
    const dueMs = num(m.due_ms);
    if (dueMs > thresholds.staleMessageMs) {
      return {
        status: 'warn',
        why: `due for ${age(dueMs)} and not claimed${lastError}`,
        fix: [
          'check that the relays of this schema run and are not paused by an unavailable transport (check relays, transport)',
        ],
      };
    }
    return { status: 'ok', why: `due, waiting for the next claim${lastError}`, fix: [] };
  };
  const MESSAGE_COLUMNS = `seq::text AS seq, id::text AS id, topic, key, attempts, last_error, lease_owner, lease_until,
  available_at, available_at > now() AS delayed, coalesce(lease_until > now(), false) AS leased,
  extract(epoch FROM now() - created_at) * 1000 AS age_ms,
  extract(epoch FROM now() - greatest(available_at, coalesce(lease_until, available_at))) * 1000 AS due_ms`;
  const describe = (m: Row): string =>
    `message ${String(m.id)} (topic ${String(m.topic)}${m.key === null ? '' : `, key ${String(m.key)}`})`;

  if (hasOutbox) {
    checks.push(
      await guarded('oldest-message', async () => {
        const [head] = await q(`SELECT ${MESSAGE_COLUMNS} FROM ${s}.outbox ORDER BY seq LIMIT 1`);
        if (!head) return check('oldest-message', 'ok', 'the outbox is empty');
        const why = explain(head);
        return check(
          'oldest-message',
          why.status,
          `oldest ${describe(head)} is ${age(head.age_ms)} old: ${why.why}`,
          { fix: why.fix },
        );
      }),
    );
    checks.push(
      await guarded('blocked-keys', async () => {
        const [blocked] = await q(
          `SELECT ${MESSAGE_COLUMNS} FROM ${s}.outbox b
WHERE b.seq IN (SELECT w.seq FROM ${s}.outbox w ORDER BY w.seq LIMIT $1)
  AND b.key IS NOT NULL AND b.available_at <= now() AND (b.lease_until IS NULL OR b.lease_until <= now())
  AND EXISTS (SELECT 1 FROM ${s}.outbox e WHERE e.key = b.key AND e.seq < b.seq)
ORDER BY b.seq LIMIT 1`,
          [BLOCKED_WINDOW],
        );
        if (!blocked) {
          return check(
            'blocked-keys',
            'ok',
            `no due message waits behind an older message of its key (among the oldest ${BLOCKED_WINDOW})`,
          );
        }
        const [blocker] = await q(
          `SELECT ${MESSAGE_COLUMNS} FROM ${s}.outbox WHERE key = $1 ORDER BY seq LIMIT 1`,
          [blocked.key],
        );
        const [behind] = await q(
          `SELECT count(*)::bigint AS n FROM (SELECT 1 FROM ${s}.outbox WHERE key = $1 LIMIT $2) x`,
          [blocked.key, BLOCKED_WINDOW + 1],
        );
        if (!blocker) return check('blocked-keys', 'ok', 'the key blocked a moment ago is free now');
        const why = explain(blocker);
        const waiting = Math.max(0, num(behind?.n) - 1);
        return check(
          'blocked-keys',
          why.status,
          `${describe(blocked)} waits behind ${describe(blocker)}, which is ${why.why}`,
          {
            detail: [
              `key ${String(blocked.key)}: ${waiting}${waiting >= BLOCKED_WINDOW ? '+' : ''} message(s) wait behind message ${String(blocker.id)} (per-key order)`,
              `the blocked message is ${age(blocked.age_ms)} old`,
            ],
            fix: why.fix,
          },
        );
      }),
    );
  }

  // Who holds back the xmin horizon: old transactions, prepared transactions, slots with xmin.
  checks.push(
    await guarded('xmin-horizon', async () => {
      const sessions = await q(
        `SELECT pid, usename::text AS usename, application_name, client_addr::text AS client_addr, state, datname::text AS datname,
  greatest(age(backend_xid), age(backend_xmin)) AS xid_age,
  extract(epoch FROM now() - xact_start) * 1000 AS xact_ms, left(query, 200) AS query
FROM pg_stat_activity
WHERE (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL) AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
  AND (datname = current_database() OR datname IS NULL)
ORDER BY xact_start LIMIT 20`,
      );
      const prepared = await q(
        `SELECT gid, owner::text AS owner, database::text AS database, age(transaction) AS xid_age,
  extract(epoch FROM now() - prepared) * 1000 AS ms FROM pg_prepared_xacts ORDER BY prepared`,
      );
      const slots = await q(
        `SELECT slot_name, slot_type, active, age(xmin) AS xmin_age, age(catalog_xmin) AS catalog_xmin_age
FROM pg_replication_slots WHERE xmin IS NOT NULL OR catalog_xmin IS NOT NULL ORDER BY slot_name`,
      );
      const detail: string[] = [];
      const fix: string[] = [];
      let holders = 0;
      for (const r of sessions) {
        if (num(r.xact_ms) <= thresholds.longTransactionMs) continue;
        holders++;
        const pid = num(r.pid);
        detail.push(
          `pid ${pid} (user ${String(r.usename)}, ${r.application_name ? `application ${String(r.application_name)}, ` : ''}` +
            `${String(r.state)}) has had a transaction open for ${age(r.xact_ms)}, xmin age ${num(r.xid_age)} xids; ` +
            `last statement: ${truncate(String(r.query ?? ''), 120)}`,
        );
        fix.push(
          `SELECT pg_terminate_backend(${pid});  -- ends the session of pid ${pid}, rolling its transaction back`,
        );
      }
      for (const p of prepared) {
        if (num(p.ms) <= thresholds.longTransactionMs) continue;
        holders++;
        detail.push(
          `prepared transaction ${quoteLiteral(String(p.gid))} (owner ${String(p.owner)}, database ${String(p.database)}) ` +
            `prepared ${age(p.ms)} ago, xmin age ${num(p.xid_age)} xids`,
        );
        fix.push(
          `ROLLBACK PREPARED ${quoteLiteral(String(p.gid))};  -- or COMMIT PREPARED, once its coordinator's decision is known`,
        );
      }
      for (const sl of slots) {
        if (sl.xmin_age !== null) {
          holders += sl.active === true ? 0 : 1;
          detail.push(
            `slot ${String(sl.slot_name)} (${String(sl.slot_type)}, ${sl.active === true ? 'active' : 'inactive'}) holds xmin, age ${num(sl.xmin_age)} xids (a standby with hot_standby_feedback)`,
          );
          if (sl.active !== true)
            fix.push(
              `SELECT pg_drop_replication_slot(${quoteLiteral(String(sl.slot_name))});  -- if its standby is gone`,
            );
        }
        if (sl.catalog_xmin_age !== null) {
          detail.push(
            `slot ${String(sl.slot_name)} (${String(sl.slot_type)}, ${sl.active === true ? 'active' : 'inactive'}) holds catalog_xmin, age ${num(sl.catalog_xmin_age)} xids (catalog tables only)`,
          );
        }
      }
      if (holders === 0) {
        return check(
          'xmin-horizon',
          'ok',
          `no transaction open longer than ${age(thresholds.longTransactionMs)}, no prepared transaction or slot holds back vacuum`,
          { detail },
        );
      }
      fix.push(
        "to end such sessions on their own: ALTER DATABASE … SET idle_in_transaction_session_timeout = '5min';",
      );
      return check(
        'xmin-horizon',
        'warn',
        `${holders} holder(s) of the xmin horizon: vacuum cannot remove the outbox's dead rows while they last`,
        { detail, fix },
      );
    }),
  );

  // Replication slots: WAL kept, lag, inactive.
  checks.push(
    await guarded('replication-slots', async () => {
      const slots = await listSlotHealth(client, thresholds.slotWarnBytes);
      if (slots.length === 0)
        return check('replication-slots', 'ok', 'no logical replication slot in this database');
      const detail = slots.map(
        (sl) =>
          `${sl.slot} (${sl.plugin ?? '?'}): ${sl.active ? `active (pid ${sl.activePid ?? '?'})` : 'inactive'}, ` +
          `lag ${sl.lagBytes === null ? '-' : formatBytes(sl.lagBytes)}, WAL kept ${sl.retainedWalBytes === null ? '-' : formatBytes(sl.retainedWalBytes)}, wal_status ${sl.walStatus ?? '-'}`,
      );
      const warnings = slots.flatMap((sl) => sl.warnings);
      const relaySlot = `${schema}_relay`;
      if (warnings.length === 0) {
        return check(
          'replication-slots',
          'ok',
          `${slots.length} logical slot(s), all read${slots.some((sl) => sl.slot === relaySlot) ? ` (${relaySlot} is this schema's relay slot)` : ''}`,
          { detail },
        );
      }
      const bad = slots.filter((sl) => sl.warnings.length > 0).map((sl) => sl.slot);
      return check('replication-slots', 'warn', `slot(s) ${bad.join(', ')}: ${warnings[0] as string}`, {
        detail: [...detail, ...warnings.slice(1)],
        fix: bad.map((name) => `mailroom slot drop ${name}  -- if no relay will read it again`),
      });
    }),
  );

  if (!hasOutbox) {
    checks.push(skip('bloat', `schema "${schema}" is not migrated`));
    checks.push(skip('autovacuum', `schema "${schema}" is not migrated`));
  } else {
    const table = `${s}.outbox`;
    checks.push(
      await guarded('bloat', async () => {
        const [t] = await q(
          `SELECT n_live_tup, n_dead_tup, last_autovacuum, last_vacuum, autovacuum_count,
  pg_relation_size(relid) AS table_bytes, pg_indexes_size(relid) AS index_bytes
FROM pg_stat_user_tables WHERE relid = $1::regclass`,
          [table],
        );
        if (!t) return check('bloat', 'skip', 'no statistics for the outbox table (track_counts off?)');
        const live = num(t.n_live_tup);
        const dead = num(t.n_dead_tup);
        const tableBytes = num(t.table_bytes);
        const indexBytes = num(t.index_bytes);
        const lastVacuum = t.last_autovacuum ?? t.last_vacuum;
        const detail = [
          `${live} live and ${dead} dead row versions; table ${formatBytes(tableBytes)}, indexes ${formatBytes(indexBytes)}`,
          `last vacuum ${lastVacuum ? iso(lastVacuum) : 'never'} (${num(t.autovacuum_count)} autovacuum runs since the statistics were reset)`,
        ];
        if (dead > 100_000 && dead > live) {
          return check(
            'bloat',
            'warn',
            `${dead} dead row versions in the outbox (${live} live): vacuum is not keeping up`,
            {
              detail,
              fix: [
                `VACUUM (VERBOSE) ${table};  -- if it says dead rows "are dead but not yet removable", see xmin-horizon`,
              ],
            },
          );
        }
        if (live < 10_000 && tableBytes + indexBytes > 256 * 1024 ** 2) {
          return check(
            'bloat',
            'warn',
            `the outbox holds ${live} rows in ${formatBytes(tableBytes + indexBytes)}: bloated by an old backlog`,
            {
              detail,
              fix: [
                `REINDEX TABLE CONCURRENTLY ${table};  -- shrinks the indexes; VACUUM FULL (locks the table) or pg_repack shrinks the table`,
              ],
            },
          );
        }
        return check(
          'bloat',
          'ok',
          `${dead} dead row versions, ${formatBytes(tableBytes + indexBytes)} in all`,
          {
            detail,
          },
        );
      }),
    );
    checks.push(
      await guarded('autovacuum', async () => {
        const [r] = await q(
          `SELECT current_setting('autovacuum') AS autovacuum, current_setting('track_counts') AS track_counts,
  c.reloptions FROM pg_class c WHERE c.oid = $1::regclass`,
          [table],
        );
        const options = new Map<string, string>();
        for (const o of (r?.reloptions as string[] | null) ?? []) {
          const eq = o.indexOf('=');
          options.set(o.slice(0, eq), o.slice(eq + 1));
        }
        const setAll = `ALTER TABLE ${table} SET (${Object.entries(OUTBOX_RELOPTIONS)
          .map(([k, v]) => `${k} = ${v}`)
          .join(', ')});`;
        // Every problem is reported, the worst deciding the status.
        const problems: Array<{ status: CheckStatus; text: string; fix: string }> = [];
        if (r?.autovacuum !== 'on' || r?.track_counts !== 'on') {
          problems.push({
            status: 'fail',
            text: `autovacuum is ${String(r?.autovacuum)} and track_counts ${String(r?.track_counts)} on this server: the outbox's dead rows are never removed`,
            fix: 'ALTER SYSTEM SET autovacuum = on; ALTER SYSTEM SET track_counts = on; SELECT pg_reload_conf();',
          });
        }
        if (options.get('autovacuum_enabled') === 'false' || options.get('autovacuum_enabled') === 'off') {
          problems.push({
            status: 'fail',
            text: 'autovacuum is turned off for the outbox table',
            fix: `ALTER TABLE ${table} RESET (autovacuum_enabled);`,
          });
        }
        const off = Object.entries(OUTBOX_RELOPTIONS).filter(([k, v]) => options.get(k) !== v);
        if (off.length > 0) {
          problems.push({
            status: 'warn',
            text: `the outbox's vacuum settings differ from Mailroom's (migration 7): ${off
              .map(([k, v]) => `${k} = ${options.get(k) ?? 'default'} (expected ${v})`)
              .join(', ')}`,
            fix: setAll,
          });
        }
        if (problems.length === 0) {
          return check('autovacuum', 'ok', "autovacuum on, the outbox has Mailroom's vacuum settings");
        }
        return check(
          'autovacuum',
          worst(problems.map((p) => p.status)),
          problems.map((p) => p.text).join('; '),
          {
            fix: problems.map((p) => p.fix),
          },
        );
      }),
    );
  }

  checks.push(
    await guarded('notify-queue', async () => {
      const [r] = await q('SELECT pg_notification_queue_usage() AS usage');
      const usage = num(r?.usage);
      const pct = `${(usage * 100).toFixed(usage < 0.01 ? 2 : 1)} %`;
      const fix = [
        "a session that LISTENs and sits in a long transaction keeps every notification: find it with SELECT pid, state, xact_start FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'; end it with pg_terminate_backend(pid)",
      ];
      if (usage >= 0.5) {
        return check(
          'notify-queue',
          'fail',
          `the NOTIFY queue is ${pct} full: at 100 % every enqueue that notifies fails`,
          { fix },
        );
      }
      if (usage >= 0.05) return check('notify-queue', 'warn', `the NOTIFY queue is ${pct} full`, { fix });
      return check('notify-queue', 'ok', `the NOTIFY queue is ${pct} full`);
    }),
  );

  return { checks, migrated: version === latestVersion() };
}

/** Topics whose messages RabbitMQ returned as unroutable in the last day (dead letters), busiest first. */
export async function unroutableTopics(
  client: PgClientSlice,
  schema: string,
): Promise<Array<{ topic: string; count: number; lastAt: string; error: string }>> {
  const s = quoteIdent(schema);
  const res = await client.query(
    `SELECT topic, count(*)::bigint AS n, max(dead_at) AS last_at, max(last_error) AS error FROM ${s}.dead_letter
WHERE dead_at > now() - interval '1 day' AND last_error ILIKE '%unroutable%'
GROUP BY topic ORDER BY 2 DESC LIMIT 20`,
  );
  return res.rows.map((r) => ({
    topic: String(r.topic),
    count: num(r.n),
    lastAt: iso(r.last_at),
    error: truncate(String(r.error ?? ''), 200),
  }));
}
