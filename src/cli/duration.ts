import { UsageError } from './cli-error.js';

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/** Longer than anyone means; guards against `99999999999d` overflowing a Date. */
const MAX_MS = 100 * 365 * 86_400_000;

const PART_RE = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g;
const WHOLE_RE = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$/;

/**
 * Parses a duration such as `30s`, `10m`, `2h`, `7d`, `1w`, `250ms` or `1h30m` into
 * milliseconds. Throws a {@link UsageError} naming the flag and the value otherwise.
 */
export function parseDuration(flag: string, value: string): number {
  const text = value.trim();
  if (!WHOLE_RE.test(text)) {
    throw new UsageError(
      `--${flag} must be a duration like 30s, 10m, 2h or 7d (units ms, s, m, h, d, w), got ${JSON.stringify(value)}`,
      { flag },
    );
  }
  let ms = 0;
  for (const [, n, unit] of text.matchAll(PART_RE)) ms += Number(n) * (UNIT_MS[unit as string] as number);
  if (!Number.isFinite(ms) || ms > MAX_MS) {
    throw new UsageError(`--${flag} is too long: ${JSON.stringify(value)}`, { flag });
  }
  return Math.round(ms);
}

/**
 * A duration for people: `850ms`, `3.2s`, `4m 10s`, `2h 5m`, `3d 4h`. Shows the two largest
 * units, which is as much precision as an operator reading a status line needs.
 */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  if (ms < 60_000) return `${(Math.floor(ms / 100) / 10).toFixed(1)}s`;
  const s = Math.floor(ms / 1000);
  const [big, bigUnit, small, smallUnit] =
    s < 3600
      ? [Math.floor(s / 60), 'm', s % 60, 's']
      : s < 86_400
        ? [Math.floor(s / 3600), 'h', Math.floor(s / 60) % 60, 'm']
        : [Math.floor(s / 86_400), 'd', Math.floor(s / 3600) % 24, 'h'];
  return small ? `${big}${bigUnit} ${small}${smallUnit}` : `${big}${bigUnit}`;
}
