/**
 * A newcomer's first hour, scripted: the README's quick start, command by command in the README's
 * order, against the local PostgreSQL and RabbitMQ; then the wrong inputs a tired operator types
 * (issue 11), each of which must end with a clear error and exit code 1 or 2, never hang.
 *
 * The commands are read from README.md's quick-start block, not copied here, so a README that
 * stops working fails this test. What differs from a newcomer's terminal, and why:
 * - No real `git clone` and `npm ci`: minutes of network and installing, on every run. The test
 *   runs this work tree's built command (`npm run build` first) where the README says
 *   `npx mailroom`, which is what npx runs in a clone.
 * - Names of its own, so it cannot collide with other tests or a developer's data: a fresh
 *   database in place of the README's `test` (the only value replaced), and the exchange and
 *   verify queue through the environment variables the CLI documents (MAILROOM_EXCHANGE,
 *   MAILROOM_VERIFY_QUEUE). The README's commands run as written.
 * - `cmd &` and `kill %1` are job control, which a non-interactive shell lacks: the test starts
 *   the command in the background and sends it SIGTERM, as `kill %1` does.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import amqp from 'amqplib';
import pg from 'pg';
import { AMQP_URL } from './helpers/amqp.js';
import { BIN, runCli } from './helpers/cli.js';
import { DATABASE_URL } from './helpers/postgres.js';
import { waitUntil } from './helpers/wait.js';

const README = fileURLToPath(new URL('../README.md', import.meta.url));
/** Bounds a command that would hang; not a speed requirement. */
const COMMAND_BOUND_MS = 60_000;

/** The first ```sh block after the line that starts with `intro`, as lines. */
function shBlockAfter(markdown: string, intro: string): string[] {
  const at = markdown.indexOf(`\n${intro}`);
  assert.ok(at >= 0, `README.md has a paragraph starting "${intro}"`);
  const open = markdown.indexOf('```sh\n', at);
  const close = markdown.indexOf('\n```', open + 6);
  assert.ok(open >= 0 && close > open, `a \`\`\`sh block follows "${intro}" in README.md`);
  return markdown.slice(open + 6, close).split('\n');
}

/** A command line without its trailing `# comment` (none of the commands holds a ` #`). */
function withoutComment(line: string): string {
  return line.replace(/\s+#\s.*$/, '').trim();
}

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs one README line in bash, `npx mailroom` being this tree's built command. */
function shell(line: string, env: NodeJS.ProcessEnv, background = false): ChildProcess {
  const command = line.replaceAll('npx mailroom', `node ${JSON.stringify(BIN)}`);
  // `exec`: the signal `kill %1` stands for reaches node itself, not a shell around it.
  return spawn('bash', ['-c', background ? `exec ${command}` : command], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

function finished(child: ChildProcess, line: string, boundMs = COMMAND_BOUND_MS): Promise<Ran> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`\`${line}\` did not finish within ${boundMs} ms\n${stdout}${stderr}`));
    }, boundMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('a newcomer following the README', () => {
  const suffix = randomBytes(4).toString('hex');
  const database = `mr_newcomer_${suffix}`;
  const databaseUrl = (() => {
    const u = new URL(DATABASE_URL);
    u.pathname = `/${database}`;
    return u.toString();
  })();
  const exchange = `mr_newcomer_${suffix}`;
  const queue = `mr_newcomer_${suffix}.verify`;
  let admin: pg.Client;
  const background = new Set<ChildProcess>();

  before(async () => {
    admin = new pg.Client({ connectionString: DATABASE_URL });
    await admin.connect();
    await admin.query(`CREATE DATABASE "${database}"`);
  });
  after(async () => {
    for (const child of background) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    await admin.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
    await admin.end();
    // The relay declared the exchange; verify stop deleted the queue.
    const conn = await amqp.connect(AMQP_URL);
    try {
      const ch = await conn.createChannel();
      await ch.deleteExchange(exchange);
      await ch.deleteQueue(queue);
    } finally {
      await conn.close();
    }
  });

  it('gets the first message into the queue bound the way the quick start says', async () => {
    const readme = readFileSync(README, 'utf8');
    // The two-command promise: one command for the demo, one for the tests.
    const first = shBlockAfter(readme, 'On a fresh clone').map(withoutComment);
    assert.deepEqual(first, ['npm ci && npm start', 'npm test']);

    const lines = shBlockAfter(readme, 'With your own PostgreSQL and RabbitMQ')
      .map(withoutComment)
      .filter((l) => l !== '');
    // Without these the rest proves little: the queue must be bound before the first message.
    const order = ['migrate', 'verify start', 'relay', 'mailroom.enqueue', 'verify check'].map((word) =>
      lines.findIndex((l) => l.includes(word)),
    );
    assert.ok(
      order.every((i, n) => i >= 0 && (n === 0 || i > (order[n - 1] as number))),
      `the quick start binds the queue before the relay and the first message, then checks:\n${lines.join('\n')}`,
    );

    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME };
    // The test's own names, through the settings the CLI documents (see the top of this file).
    const isolation = { MAILROOM_EXCHANGE: exchange, MAILROOM_VERIFY_QUEUE: queue };
    let relay: { child: ChildProcess; done: Promise<Ran> } | undefined;
    const outputs = new Map<string, Ran>();
    for (const line of lines) {
      const exported = /^export ([A-Z_]+)=(\S+)$/.exec(line);
      if (exported) {
        const [, name, value] = exported as unknown as [string, string, string];
        // The README's servers are the test's, unless the suite runs against others.
        env[name] = name === 'DATABASE_URL' ? databaseUrl : name === 'MAILROOM_TRANSPORT' ? AMQP_URL : value;
        continue;
      }
      if (line === 'kill %1') {
        assert.ok(relay, '`kill %1` follows a command started with &');
        relay.child.kill('SIGTERM');
        const ran = await relay.done;
        assert.equal(ran.code, 0, `the relay stops cleanly on SIGTERM\n${ran.stderr}`);
        continue;
      }
      const runEnv = { ...env, ...isolation };
      if (line.endsWith(' &')) {
        const child = shell(line.slice(0, -2), runEnv, true);
        background.add(child);
        let stderr = '';
        child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
        relay = { child, done: finished(child, line) };
        // Like a person reading the next line: go on once the relay says it runs.
        await waitUntil(() => stderr.includes('"relay started"'), `\`${line}\` to start\n${stderr}`);
        continue;
      }
      const ran = await finished(shell(line, runEnv), line);
      assert.equal(ran.code, 0, `\`${line}\` exits 0\n${ran.stdout}${ran.stderr}`);
      outputs.set(line, ran);
    }

    const check = [...outputs].find(([line]) => line.endsWith('verify check'))?.[1];
    assert.ok(check, 'the quick start runs verify check');
    assert.match(check.stdout, /^committed +1$/m);
    assert.match(check.stdout, /^received +1 +\(1 distinct\)$/m, 'the first message reached the queue');
    assert.match(check.stdout, /^lost +0$/m);
    assert.match(check.stdout, /^dead letters +0$/m);
    assert.match(check.stdout, /^verify: OK$/m);
    assert.ok(relay && relay.child.exitCode !== null, 'the relay was stopped by the quick start');
  });

  describe('then types what a tired operator types', () => {
    const common = ['--database-url', databaseUrl];
    // The quick start migrated this database; again here, so these cases stand on their own.
    before(async () => {
      const r = await runCli(['migrate', ...common], {}, COMMAND_BOUND_MS);
      assert.equal(r.code, 0, r.stderr);
    });
    const cases: Array<{ does: string; args: string[]; code: 1 | 2; says: RegExp }> = [
      {
        does: 'points status at the broker port instead of the database',
        args: ['status', '--database-url', DATABASE_URL.replace(/:\d+\//, ':5672/')],
        code: 1,
        says: /is 127\.0\.0\.1:5672 a PostgreSQL server\?/,
      },
      {
        does: 'points the relay at the database port instead of the broker',
        args: [
          'relay',
          ...common,
          '--transport',
          'amqp://guest:guest@127.0.0.1:5432',
          '--exchange',
          exchange,
        ],
        code: 1,
        says: /127\.0\.0\.1:5432/,
      },
      {
        does: 'migrates into a system schema',
        args: ['migrate', ...common, '--schema', 'pg_catalog'],
        code: 2,
        says: /"pg_catalog" is a PostgreSQL system schema name/,
      },
      {
        does: 'migrates into information_schema',
        args: ['migrate', ...common, '--schema', 'information_schema'],
        code: 2,
        says: /"information_schema" is a PostgreSQL system schema name/,
      },
      {
        does: 'gives a first retry delay above the largest',
        args: [
          'relay',
          ...common,
          '--transport',
          AMQP_URL,
          '--retry-base-ms',
          '5000',
          '--retry-max-ms',
          '1000',
        ],
        code: 2,
        says: /--retry-base-ms \(5000\) must not exceed --retry-max-ms \(1000\)/,
      },
      {
        does: 'asks for help on a command that does not exist',
        args: ['help', 'rely'],
        code: 2,
        says: /unknown command "rely"/,
      },
      {
        does: 'gives a transport URL without a scheme',
        args: ['relay', ...common, '--transport', 'guest:guest@127.0.0.1:5672'],
        code: 2,
        says: /no transport for scheme "guest:" .*; supported: amqp:\/\/, amqps:\/\//,
      },
    ];
    for (const c of cases) {
      it(`${c.does}: exit ${c.code} and an error that says so`, async () => {
        const r = await runCli(c.args, {}, COMMAND_BOUND_MS);
        assert.equal(r.code, c.code, r.stdout + r.stderr);
        const error = r.stderr.trim().split('\n').at(-1) ?? '';
        assert.match(error, /^mailroom /, 'the error is the last line, prefixed by the command');
        assert.match(error, c.says);
        assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      });
    }

    it('sends a payload over the limit through the SQL API: refused by PostgreSQL, naming size and limit', async () => {
      const sql =
        "SELECT mailroom.enqueue('order.created', jsonb_build_object('blob', repeat('x', 1100000)))";
      const ran = await finished(
        spawn('psql', [databaseUrl, '-v', 'ON_ERROR_STOP=1', '-c', sql], {
          stdio: ['ignore', 'pipe', 'pipe'],
        }),
        'psql',
      );
      assert.equal(ran.code, 1, ran.stdout + ran.stderr);
      assert.match(ran.stderr, /1048576/);
    });
  });
});
