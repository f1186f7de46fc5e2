import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

const ORMS = /^(kysely|drizzle-orm|knex|typeorm|@prisma\/|prisma|reflect-metadata)/;
const dir = new URL('../../src/adapters/', import.meta.url);

describe('adapters load no ORM', () => {
  it('import ORMs for their types only, so installing Mailroom pulls in none', () => {
    const files = readdirSync(dir).filter((f) => f.endsWith('.ts'));
    assert.ok(files.includes('kysely.ts') && files.includes('prisma.ts'), 'the adapters are where expected');
    const found: string[] = [];
    for (const file of files) {
      const text = readFileSync(new URL(file, dir), 'utf8');
      // Static imports and re-exports, and dynamic import()/require() of a package.
      for (const m of text.matchAll(/^\s*(import|export)\s+(type\s+)?[^;]*?from\s+'([^']+)'/gm)) {
        if (ORMS.test(m[3] as string) && !m[2]) found.push(`${file}: ${m[0].trim()}`);
      }
      for (const m of text.matchAll(/\b(?:import|require)\(\s*'([^']+)'/g)) {
        if (ORMS.test(m[1] as string)) found.push(`${file}: ${m[0]}`);
      }
    }
    assert.deepEqual(found, [], 'runtime imports of an ORM');
  });
});
