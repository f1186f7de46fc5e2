/**
 * Lays rows out as a plain-text table with a header, columns padded to their widest cell
 * (psql/kubectl style). Cells are single-line: line breaks and tabs become spaces.
 */
export function formatTable(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const clean = (cell: string) => cell.replace(/[\r\n\t]+/g, ' ');
  const all = [header, ...rows].map((r) => r.map(clean));
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all
    .map((r) =>
      r
        .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] as number)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** Cuts `text` to `max` characters, ending in `…` when cut. */
export function truncate(text: string, max: number): string {
  const one = text.replace(/\s*[\r\n]+\s*/g, ' ');
  return one.length > max ? `${one.slice(0, max - 1)}…` : one;
}
