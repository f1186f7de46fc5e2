import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

/** The part of a generated PrismaClient the tests use. */
export interface GeneratedPrismaClient {
  $transaction<T>(fn: (tx: PrismaTx) => Promise<T>, options?: { timeout?: number }): Promise<T>;
  $executeRawUnsafe(sql: string, ...values: unknown[]): Promise<number>;
  $queryRawUnsafe<T = unknown>(sql: string, ...values: unknown[]): Promise<T>;
  $connect(): Promise<void>;
  $disconnect(): Promise<void>;
}
/** An interactive transaction's client (no $connect / $disconnect, like Prisma.TransactionClient). */
export type PrismaTx = Omit<GeneratedPrismaClient, '$connect' | '$disconnect' | '$transaction'>;

/** The databases Prisma supports that the tests run on (the schema's datasource provider). */
export type PrismaProvider = 'postgresql' | 'mysql' | 'sqlite';

/** One schema per provider: the client Prisma generates is bound to its provider. */
function schema(provider: PrismaProvider): string {
  return `generator client {
  provider     = "prisma-client"
  output       = "./client"
  moduleFormat = "esm"
}

datasource db {
  provider = "${provider}"
}

model Order {
  id String @id
  @@map("orders")
}
`;
}

const root = new URL('../..', import.meta.url).pathname;
const require = createRequire(import.meta.url);

/**
 * Generates a Prisma 7 client for `provider` (the TypeScript `prisma-client` generator, no Rust
 * query engine) under node_modules/.cache once per schema text, each in a directory of its own,
 * and returns its PrismaClient class. Offline:
 * `prisma generate` needs no engine, but the CLI would download the schema engine at startup
 * (binaries.prisma.sh, unreachable here), so PRISMA_SCHEMA_ENGINE_BINARY names a file that is
 * never run.
 */
export async function generatedPrismaClient(
  provider: PrismaProvider = 'postgresql',
): Promise<new (options: { adapter: unknown }) => GeneratedPrismaClient> {
  const text = schema(provider);
  const hash = createHash('sha256').update(text).digest('hex').slice(0, 12);
  const dir = join(root, 'node_modules', '.cache', 'mailroom-test-prisma', `${provider}-${hash}`);
  if (!existsSync(join(dir, 'client', 'client.ts'))) {
    // Generated beside, then moved in one rename: a second test run never sees half a client.
    const work = `${dir}.${process.pid}`;
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work, { recursive: true });
    writeFileSync(join(work, 'schema.prisma'), text);
    const cli = require.resolve('prisma/build/index.js');
    await promisify(execFile)(process.execPath, [cli, 'generate', '--schema', join(work, 'schema.prisma')], {
      cwd: work,
      env: {
        ...process.env,
        PRISMA_SCHEMA_ENGINE_BINARY: process.execPath,
        PRISMA_HIDE_UPDATE_MESSAGE: '1',
        CHECKPOINT_DISABLE: '1',
      },
      timeout: 60_000,
    });
    try {
      renameSync(work, dir);
    } catch {
      rmSync(work, { recursive: true, force: true }); // another run got there first
    }
  }
  const mod = (await import(pathToFileURL(join(dir, 'client', 'client.ts')).href)) as {
    PrismaClient: new (options: { adapter: unknown }) => GeneratedPrismaClient;
  };
  return mod.PrismaClient;
}
