/**
 * Checks that atomic groups reached a consumer whole: every group seen has all its members, and,
 * on one queue, their first arrivals came in the order they were published. Other messages may
 * arrive between a group's members: RabbitMQ commits a transaction's messages to a queue without
 * holding other channels' messages back, so a group is all or none, not contiguous.
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
  /** Groups whose members first arrived out of the order they were published in. */
  broken: string[];
}

/** Checks `deliveries`, in arrival order on one queue. */
export function checkGroups(deliveries: readonly GroupedDelivery[]): GroupCheck {
  const seen = new Map<string, { size: number; members: Set<number>; last: number }>();
  const broken = new Set<string>();
  for (const d of deliveries) {
    const g = d.group ?? null;
    if (!g) continue;
    const entry = seen.get(g.id) ?? { size: g.size, members: new Set<number>(), last: -1 };
    // First arrivals in the order the members were published (a copy published again later
    // repeats members already seen, which is fine).
    if (!entry.members.has(g.index)) {
      if (g.index < entry.last) broken.add(g.id);
      entry.last = g.index;
      entry.members.add(g.index);
    }
    seen.set(g.id, entry);
  }
  const incomplete = [...seen].filter(([, e]) => e.members.size < e.size).map(([id]) => id);
  return { groups: seen.size, incomplete, broken: [...broken] };
}
