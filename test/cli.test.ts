import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { AMQP_URL } from './helpers/amqp.js';
import { inParallel, runCli, type CliResult } from './helpers/cli.js';
import { DATABASE_URL } from './helpers/postgres.js';

describe('mailroom command', () => {
  const schema = `cli_${randomBytes(4).toString('hex')}`;
  let pool: pg.Pool;
  before(() => {
    pool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
  });
  after(async () => {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool.end();
  });

  it('prints help that names every command', async () => {
    const [r, relayHelp] = await inParallel([['--help'], ['relay', '--help']], (args) => runCli(args));
    assert.equal(r.code, 0);
    for (const c of ['migrate', 'relay', 'version', 'help']) assert.match(r.stdout, new RegExp(`\\n  ${c} `));
    assert.equal(relayHelp.code, 0);
    assert.match(relayHelp.stdout, /--transport <url>/);
    assert.match(relayHelp.stdout, /MAILROOM_TRANSPORT/);
  });

  it('says "unknown command" for help of a command that does not exist, with the closest name, exit code 2', async () => {
    const oks = [['help'], ['help', 'help'], ['help', 'version'], ['help', 'verify']];
    const [typo, subcommand, nothingClose, extra, ...okResults] = await inParallel(
      [['help', 'stauts'], ['help', 'replay'], ['help', 'frobnicate'], ['help', 'send', 'status'], ...oks],
      (args) => runCli(args),
    );
    assert.equal(typo.code, 2);
    assert.equal(typo.stdout, '', 'no command list that would hide the typo');
    assert.match(
      typo.stderr,
      /^mailroom help: unknown command "stauts" \(did you mean "status"\?\); commands: migrate, /,
    );
    assert.equal(typo.stderr.trim().split('\n').length, 1, 'one line');
    assert.equal(subcommand.code, 2);
    assert.match(subcommand.stderr, /unknown command "replay" \(did you mean "dlq replay"\?\)/);
    assert.equal(nothingClose.code, 2);
    assert.match(nothingClose.stderr, /unknown command "frobnicate"; commands: /);
    assert.equal(extra.code, 2);
    assert.match(extra.stderr, /help takes one command/);
    for (const [i, ok] of oks.entries()) {
      const r = okResults[i] as CliResult;
      assert.equal(r.code, 0, `${ok.join(' ')}: ${r.stderr}`);
      assert.notEqual(r.stdout, '');
    }
  });

  it('suggests the closest command for a mistyped one, with exit code 2', async () => {
    const r = await runCli(['sned', '--topic', 't']);
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      /^mailroom: unknown command "sned" \(did you mean "send"\?\); commands: .*verify, tcc, demo, version, help\n$/,
    );
  });

  it('migrates with --dry-run printing SQL and changing nothing, then for real, twice', async () => {
    const dry = await runCli(['migrate', '--dry-run', '--schema', schema], { DATABASE_URL });
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, new RegExp(`CREATE TABLE "${schema}".outbox`));
    const exists = await pool.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
    assert.equal(exists.rowCount, 0, 'dry run created nothing');
    const first = await runCli(['migrate', '--database-url', DATABASE_URL, '--schema', schema]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /000001_outbox: applied/);
    const second = await runCli(['migrate', '--database-url', DATABASE_URL, '--schema', schema]);
    assert.equal(second.code, 0);
    assert.match(second.stdout, /000001_outbox: already-applied/);
  });

  it('rejects an unknown flag with exit code 2 and a hint', async () => {
    const r = await runCli(['relay', '--batchsize', '5']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown flag --batchsize \(did you mean --batch-size\?\)/);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  });

  it('names the missing setting and how to give it', async () => {
    const r = await runCli(['relay', '--transport', AMQP_URL]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /missing PostgreSQL URL.*pass --database-url or set DATABASE_URL/);
  });

  it('rejects bad values naming the key, the value and what is allowed', async () => {
    const runs: Array<[string[], NodeJS.ProcessEnv]> = [
      [['relay', '--database-url', DATABASE_URL, '--transport', AMQP_URL, '--batch-size', 'lots'], {}],
      [['relay', '--transport', AMQP_URL], { DATABASE_URL, MAILROOM_WAKEUP: 'sometimes' }],
      [['relay', '--database-url', 'mongodb://x@y/z', '--transport', AMQP_URL], {}],
      [['relay', '--database-url', DATABASE_URL, '--transport', 'gopher://broker:70'], {}],
      [['relay', '--database-url', 'not a url', '--transport', AMQP_URL], {}],
    ];
    const [r1, r2, r3, r4, r5] = (await inParallel(runs, ([args, env]) => runCli(args, env))) as [
      CliResult,
      CliResult,
      CliResult,
      CliResult,
      CliResult,
    ];
    assert.equal(r1.code, 2);
    assert.match(r1.stderr, /flag --batch-size must be a whole number from 1 to 10000, got "lots"/);
    assert.equal(r2.code, 2);
    assert.match(
      r2.stderr,
      /environment MAILROOM_WAKEUP must be one of notify, poll, replication, got "sometimes"/,
    );
    assert.equal(r3.code, 2);
    assert.match(
      r3.stderr,
      /names no database Mailroom can open \(scheme "mongodb:"\); supported: postgres:\/\//,
    );
    assert.equal(r4.code, 2);
    assert.match(r4.stderr, /no transport for scheme "gopher:"/);
    assert.equal(r5.code, 2);
    assert.match(r5.stderr, /not a valid URL/);
  });

  it('says the database is unreachable without printing the password', async () => {
    const r = await runCli(['migrate', '--database-url', 'postgres://me:hunter2@127.0.0.1:1/db']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot reach PostgreSQL at 127\.0\.0\.1:1: nothing accepts connections there/);
    assert.doesNotMatch(r.stderr, /hunter2/);
  });

  it('says the broker is unreachable without printing the password', async () => {
    await runCli(['migrate', '--database-url', DATABASE_URL, '--schema', schema]);
    const r = await runCli([
      'relay',
      '--database-url',
      DATABASE_URL,
      '--schema',
      schema,
      '--transport',
      'amqp://guest:sekrit@127.0.0.1:1',
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /127\.0\.0\.1:1/);
    assert.doesNotMatch(r.stderr, /sekrit/);
  });

  it('tells the user to run migrate when the schema is missing', async () => {
    const r = await runCli([
      'relay',
      '--database-url',
      DATABASE_URL,
      '--schema',
      'nothing_here',
      '--transport',
      AMQP_URL,
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /run `npx mailroom migrate --schema nothing_here`/);
  });

  it('prints the resolved configuration with secrets redacted, honouring precedence', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mailroom-'));
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify({ batchSize: 7, concurrency: 3, leaseMs: 5000 }));
    const r = await runCli(
      [
        'relay',
        '--print-config',
        '--config',
        file,
        '--lease-ms',
        '6000',
        '--transport',
        'amqp://u:topsecret@h:5672',
      ],
      {
        DATABASE_URL: 'postgres://u:dbsecret@h/db',
        MAILROOM_CONCURRENCY: '4',
        MAILROOM_CALLBACK_SECRET: 'whsec_c2lnbmluZy1zZWNyZXQtb2YtdGhlLXRlc3Q=',
      },
    );
    assert.equal(r.code, 0, r.stderr);
    const config = JSON.parse(r.stdout);
    assert.equal(config.callbackSecret, '***', 'a secret that is not a URL is not printed at all');
    assert.doesNotMatch(r.stdout, /c2lnbmluZy1zZWNyZXQ/);
    assert.equal(config.batchSize, 7, 'file over default');
    assert.equal(config.concurrency, 4, 'environment over file');
    assert.equal(config.leaseMs, 6000, 'flag over file');
    assert.doesNotMatch(r.stdout, /topsecret|dbsecret/);
    writeFileSync(file, '{"batchSize": 7,');
    const bad = await runCli(['relay', '--print-config', '--config', file]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /is not valid JSON/);
    writeFileSync(file, '{"batchsize": 7}');
    const unknown = await runCli(['relay', '--print-config', '--config', file]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown key "batchsize"/);
  });

  it('lets every command share one config file, each taking its own keys', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mailroom-'));
    const file = join(dir, 'mailroom.config.json');
    writeFileSync(file, JSON.stringify({ databaseUrl: DATABASE_URL, schema, batchSize: 9 }));
    const r = await runCli(['status', '--json', '--config', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).schema, schema);
  });

  it('loads the config file formats docs/cli.md names: .mjs, CommonJS .cjs and .js, other endings as JSON', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mailroom-'));
    const files: Array<[string, string, number]> = [
      ['settings.mjs', 'export default { batchSize: 21 };\n', 21],
      ['settings.cjs', 'module.exports = { batchSize: 22 };\n', 22],
      // No package.json with "type" here: Node reads a .js file as CommonJS.
      ['settings.js', 'module.exports = { batchSize: 23 };\n', 23],
      ['settings.conf', '{"batchSize": 24}', 24],
    ];
    for (const [name, body] of files) writeFileSync(join(dir, name), body);
    const results = await inParallel(files, ([name]) =>
      runCli(['relay', '--print-config', '--config', join(dir, name)]),
    );
    for (const [i, [name, , batchSize]] of files.entries()) {
      const r = results[i] as CliResult;
      assert.equal(r.code, 0, `${name}: ${r.stderr}`);
      assert.equal(JSON.parse(r.stdout).batchSize, batchSize, name);
    }
  });

  it('lists every command of mailroom --help in the command table of docs/cli.md', async () => {
    const help = await runCli(['--help']);
    const commands = [...help.stdout.matchAll(/^ {2}([a-z]+) {2,}/gm)].map((m) => m[1] as string);
    assert.ok(commands.length >= 9, `commands found in the help: ${commands.join(', ')}`);
    const doc = readFileSync(new URL('../docs/cli.md', import.meta.url), 'utf8');
    const table = doc.slice(0, doc.indexOf('## Exit codes'));
    for (const name of commands) {
      assert.match(
        table,
        new RegExp(`^\\| \\[?\`${name}\`(\\]\\(#[a-z-]+\\))? +\\|`, 'm'),
        `docs/cli.md lists ${name}`,
      );
    }
  });

  it('ships in the npm package every docs/ page the README names, and promises no inbox', () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
      files: string[];
      description: string;
    };
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const mentioned = [...readme.matchAll(/\bdocs\/[\w/.-]+\.md\b/g)].map((m) => m[0]);
    assert.ok(mentioned.length > 0);
    for (const path of mentioned) {
      assert.ok(existsSync(new URL(`../${path}`, import.meta.url)), `${path} exists`);
      assert.ok(
        pkg.files.some((f) => path === f || path.startsWith(`${f}/`)),
        `${path} is in the package ("files" in package.json)`,
      );
    }
    assert.doesNotMatch(pkg.description, /inbox/, 'no inbox exists yet');
  });

  it('loads a TypeScript config file, and says what is wrong with a broken one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mailroom-'));
    const file = join(dir, 'mailroom.config.ts');
    writeFileSync(
      file,
      "const batchSize: number = 11;\nexport default { batchSize, wakeup: 'poll' as const, databaseUrl: 'postgres://u:tssecret@h/db' };\n",
    );
    const r = await runCli(['relay', '--print-config', '--config', file]);
    assert.equal(r.code, 0, r.stderr);
    const config = JSON.parse(r.stdout);
    assert.equal(config.batchSize, 11);
    assert.equal(config.wakeup, 'poll');
    assert.doesNotMatch(r.stdout, /tssecret/);
    writeFileSync(file, 'export default { batchSize: ');
    const broken = await runCli(['relay', '--print-config', '--config', file]);
    assert.equal(broken.code, 2);
    assert.match(broken.stderr, /cannot load config file .*mailroom\.config\.ts/);
    assert.equal(broken.stderr.trim().split('\n').length, 1);
    writeFileSync(file, 'export default [1, 2];');
    const notObject = await runCli(['relay', '--print-config', '--config', file]);
    assert.equal(notObject.code, 2);
    assert.match(notObject.stderr, /must hold an object of settings/);
  });
});
