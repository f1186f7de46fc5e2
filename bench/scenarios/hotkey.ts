/**
 * Hot key: every message on one key, drained by one relay at default settings, beside the 1k-key
 * base drain of the same run (issue 12 part 2). When the relay has a per-key batch limit
 * (`--max-per-key`), the same drain at 1 message per key per batch shows the relay before it.
 */
import { relayCommand } from '../../src/cli/commands/relay.js';
import { relayOptionsSchema } from '../../src/core/relay-options.js';
import type { Row } from '../lib.js';
import { keyedDrain, measureBase, ofBase, type KeyedDrainOptions } from './keys.js';

/** The relay option behind `--max-per-key`, when this relay has one. */
function maxPerKeyOption(): string | undefined {
  const spec = relayCommand.options.find((o) => o.flag === 'max-per-key');
  return spec && spec.key in relayOptionsSchema.fields ? spec.key : undefined;
}

/**
 * The `hotkey` scenario. `base` is the 1k-key row measured earlier in the same run (by `keys`);
 * without it the base is drained here first.
 */
export async function hotkeyScenario(quick: boolean, base?: Row): Promise<Row[]> {
  const baseRow = base ?? (await measureBase(quick));
  const single: KeyedDrainOptions = {
    backlog: 'single key',
    messages: quick ? 5_000 : 20_000,
    keyOf: () => 'hot',
    keys: 1,
    maxSeconds: quick ? 20 : 60,
  };
  const rows = [baseRow, { ...(await keyedDrain(single)), relay: 'defaults' }];
  const option = maxPerKeyOption();
  if (option) {
    const before = await keyedDrain({ ...single, relay: { [option]: 1 } });
    rows.push({ ...before, relay: '--max-per-key 1' });
  }
  return ofBase(rows, baseRow);
}
