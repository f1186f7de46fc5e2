/**
 * Checks that atomic groups reached a consumer whole: every group seen has all its members, and,
 * on one queue, each group's members arrived together, in order, with nothing in between (a
 * broker commits a transaction's messages to a queue at once). Deliveries of a group published
 * twice (at least once) make two whole runs, which is fine.
 *
 * @module
 */

/** A delivery as the check needs it: its id and the group it came in, if any. */
export interface GroupedDelivery {
  id: string;
  group?: { id: string; size: number; index: number } | null;
}

export interface GroupCheck {
  /** Groups seen. */
  groups: number;
  /** Groups some member of which was never received. */
  incomplete: string[];
  /** Groups whose members did not arrive as one unbroken run starting at the first member. */
  broken: string[];
}

/** Checks `deliveries`, in arrival order on one queue. */
export function checkGroups(deliveries: readonly GroupedDelivery[]): GroupCheck {
  const seen = new Map<string, { size: number; members: Set<number> }>();
  const broken = new Set<string>();
  let open: { id: string; next: number; size: number } | null = null;
  for (const d of deliveries) {
    const g = d.group ?? null;
    if (g) {
      const entry = seen.get(g.id) ?? { size: g.size, members: new Set<number>() };
      entry.members.add(g.index);
      seen.set(g.id, entry);
    }
    if (open) {
      if (g && g.id === open.id && g.index === open.next) {
        open.next++;
        if (open.next === open.size) open = null;
        continue;
      }
      broken.add(open.id);
      open = null;
    }
    if (!g) continue;
    if (g.index !== 0) {
      broken.add(g.id);
      continue;
    }
    if (g.size > 1) open = { id: g.id, next: 1, size: g.size };
  }
  if (open) broken.add(open.id);
  const incomplete = [...seen].filter(([, e]) => e.members.size < e.size).map(([id]) => id);
  return { groups: seen.size, incomplete, broken: [...broken] };
}
