/**
 * The result of one `mailroom doctor` check, and the report they make. The JSON document
 * (`mailroom doctor --json`) is these types: fields are only ever added, never renamed.
 */

/** `ok`: nothing to do; `warn`: look at it; `fail`: broken, fix it; `skip`: not checked (see summary). */
export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skip';

/** One check's finding. */
export interface DoctorCheck {
  /** Stable id (`schema`, `relays`, `oldest-message`…): every check is in every report. */
  id: string;
  status: CheckStatus;
  /** One line: what was found. */
  summary: string;
  /** Further lines: the facts behind the summary (rows, ages, names). */
  detail: string[];
  /** What to do, as concrete commands or SQL; empty when nothing is to be done. */
  fix: string[];
}

/** What `mailroom doctor --json` prints for one source. */
export interface DoctorReport {
  /** The database, without user or password (`host:port/database`, or a file). */
  database: string;
  schema: string;
  /** `postgres`, `pglite`, `mysql` or `sqlite`. */
  store: string;
  /** When the checks ran, on this machine's clock (ISO 8601). */
  checkedAt: string;
  /** How many checks ended in each status. */
  counts: Record<CheckStatus, number>;
  /** The exit code the command gives for this report (0, or 1 on a failure; `--strict`: also on a warning). */
  exitCode: number;
  checks: DoctorCheck[];
}

/** Every check id, in report order. */
export const CHECK_IDS = [
  'connection',
  'schema',
  'relays',
  'oldest-message',
  'blocked-keys',
  'xmin-horizon',
  'replication-slots',
  'bloat',
  'autovacuum',
  'notify-queue',
  'transport',
  'bindings',
] as const;

/** A check id. */
export type CheckId = (typeof CHECK_IDS)[number];

/** A check result; `detail` and `fix` default to none. */
export function check(
  id: CheckId,
  status: CheckStatus,
  summary: string,
  more: { detail?: string[]; fix?: string[] } = {},
): DoctorCheck {
  return { id, status, summary, detail: more.detail ?? [], fix: more.fix ?? [] };
}

/** A check that was not run, and why. */
export function skip(id: CheckId, why: string): DoctorCheck {
  return check(id, 'skip', why);
}

/** The worst of some statuses (`fail` > `warn` > `ok` > `skip`). */
export function worst(statuses: readonly CheckStatus[]): CheckStatus {
  const order: CheckStatus[] = ['skip', 'ok', 'warn', 'fail'];
  return statuses.reduce<CheckStatus>((w, s) => (order.indexOf(s) > order.indexOf(w) ? s : w), 'skip');
}

/** An error's message on one line, for a summary. */
export function errorText(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, ' ');
}
