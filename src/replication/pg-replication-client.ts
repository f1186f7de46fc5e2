import { ConfigError } from '../core/errors/config-error.js';

/**
 * The slice of node-postgres (`pg`) the log stream uses, declared here so that nothing imports
 * `pg`'s types: a `pg.Client` for setup queries, and one opened with `replication: 'database'`
 * whose internal `connection` carries the copy-both stream (pg exposes CopyData and
 * CopyBothResponse there as `copyData` and `replicationStart` events, and writes CopyData and
 * CopyDone with `sendCopyFromChunk` and `endCopyFrom`).
 */
export interface PgReplicationConnection {
  on(event: 'copyData', listener: (msg: { chunk: Buffer }) => void): unknown;
  once(event: 'replicationStart', listener: () => void): unknown;
  removeAllListeners(event?: string): unknown;
  sendCopyFromChunk(chunk: Buffer): void;
  endCopyFrom(): void;
  /** The socket. */
  stream: { pause(): void; resume(): void; destroy(): void };
}

export interface PgClientSlice {
  connect(): Promise<unknown>;
  query(text: string, values?: unknown[]): Promise<{ rows: Array<Record<string, unknown>> }>;
  end(): Promise<void>;
  on(event: 'error', listener: (err: Error) => void): unknown;
  on(event: 'end', listener: () => void): unknown;
  removeAllListeners(event?: string): unknown;
  /** The backend's PID, once connected. */
  readonly processID?: number | null;
  readonly connection: PgReplicationConnection;
}

type PgClientConstructor = new (config: Record<string, unknown>) => PgClientSlice;

let clientConstructor: PgClientConstructor | undefined;

/** Loads `pg` once, on the first start. */
export async function loadPgClient(): Promise<PgClientConstructor> {
  if (clientConstructor) return clientConstructor;
  try {
    const mod = (await import('pg')) as unknown as {
      default?: { Client: PgClientConstructor };
      Client?: PgClientConstructor;
    };
    const ctor = mod.default?.Client ?? mod.Client;
    if (!ctor) throw new Error('the pg module has no Client export');
    clientConstructor = ctor;
    return ctor;
  } catch (err) {
    throw new ConfigError(
      'pg',
      'the replication log stream needs the `pg` package: run `npm install pg`',
      {},
      err,
    );
  }
}
