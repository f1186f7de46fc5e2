// The dashboard in a real browser: Debian's headless Chromium driven by playwright-core, against
// a real admin server over a PostgreSQL schema and a relay publishing to RabbitMQ.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { Outbox, Relay } from '../../src/core/index.js';
import { RelayPresence } from '../../src/core/relay-presence.js';
import { DASHBOARD_ASSETS } from '../../src/server/dashboard/assets.js';
import { AdminServer } from '../../src/server/index.js';
import { RabbitMqTransport } from '../../src/transports/rabbitmq/index.js';
import { AMQP_URL, bindConsumer } from '../helpers/amqp.js';
import { createTestDb, inTransaction, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';

const CHROMIUM = '/usr/bin/chromium';
const TOKEN = `dash-${randomBytes(16).toString('hex')}`;
const dashboardDir = new URL('../../src/server/dashboard/', import.meta.url);
const docsScreenshot = new URL('../../docs/images/dashboard.png', import.meta.url);

// In CI the browser must be there (.ci/run installs Debian's chromium); elsewhere a machine
// without it skips, saying why.
const skipBrowser =
  existsSync(CHROMIUM) || process.env.CI
    ? false
    : `Debian's Chromium is not installed at ${CHROMIUM} (apt-get install chromium); CI installs it and runs this test`;

describe('dashboard assets', () => {
  it('embeds dashboard.html, .css and .js verbatim (assets.ts is regenerated after each edit)', () => {
    const expect = (path: string, file: string, contentType: string) => {
      const asset = DASHBOARD_ASSETS.get(path);
      assert.ok(asset, `asset ${path}`);
      assert.equal(asset.contentType, contentType);
      assert.equal(
        asset.body,
        readFileSync(new URL(file, dashboardDir), 'utf8'),
        `${path} differs from ${file}: run node src/server/dashboard/build-assets.mjs`,
      );
    };
    expect('/', 'dashboard.html', 'text/html; charset=utf-8');
    expect('/assets/dashboard.css', 'dashboard.css', 'text/css; charset=utf-8');
    expect('/assets/dashboard.js', 'dashboard.js', 'text/javascript; charset=utf-8');
    expect('/assets/favicon.svg', 'favicon.svg', 'image/svg+xml');
    assert.equal(DASHBOARD_ASSETS.size, 4);
  });

  it('has no inline script, inline style or style attribute, and loads nothing from elsewhere', () => {
    const html = DASHBOARD_ASSETS.get('/')?.body ?? '';
    assert.doesNotMatch(html, /<script(?![^>]*\ssrc=)[^>]*>/, 'every script has a src');
    assert.doesNotMatch(html, /<style|\sstyle=|\son[a-z]+=/i, 'no inline style or handler');
    for (const asset of DASHBOARD_ASSETS.values()) {
      assert.doesNotMatch(asset.body, /(src|href)="(https?:)?\/\//, 'no third-party URL');
    }
    assert.doesNotMatch(
      DASHBOARD_ASSETS.get('/assets/dashboard.js')?.body ?? '',
      /innerHTML|outerHTML|insertAdjacentHTML|document\.write/,
    );
  });

  it('keeps the docs screenshot a small PNG', () => {
    const png = readFileSync(docsScreenshot);
    assert.equal(png.subarray(1, 4).toString(), 'PNG');
    assert.ok(
      png.length < 300 * 1024,
      `docs/images/dashboard.png is ${png.length} bytes; keep it under 300 KB`,
    );
  });
});

describe('dashboard in headless Chromium', { skip: skipBrowser }, () => {
  let db: TestDb;
  let browser: Browser;
  const exchange = `mr_dash_${randomBytes(3).toString('hex')}`;
  /** Console errors, page errors and failed requests: the page must have none. */
  const problems: string[] = [];
  /** Every URL the pages asked for, to check the token never travels in one. */
  const urls: string[] = [];
  /** Set once a test stops the server on purpose: refused connections are then expected. */
  let offline = false;

  before(async () => {
    db = await createTestDb('dash');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-background-networking'],
    });
  });
  after(async () => {
    await browser?.close();
    await db?.drop();
  });

  async function openPage(url: string, expectedStatuses: number[] = [], loaded = true): Promise<Page> {
    const page = await browser.newPage({ viewport: { width: 1360, height: 1000 } });
    page.on('console', (msg) => {
      if (msg.type() !== 'error' && msg.type() !== 'warning') return;
      const text = msg.text();
      // Chromium logs every 4xx answer as "Failed to load resource"; the statuses a step
      // provokes on purpose are allowed (the page shows them), nothing else is.
      const status = /the server responded with a status of (\d+)/.exec(text)?.[1];
      if (status && expectedStatuses.includes(Number(status))) return;
      if (offline && /net::ERR_/.test(text)) return;
      problems.push(`console ${msg.type()}: ${text}`);
    });
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('requestfailed', (req) => {
      if (!offline) problems.push(`request failed: ${req.url()} ${req.failure()?.errorText}`);
    });
    page.on('request', (req) => urls.push(req.url()));
    await page.goto(url);
    if (loaded) await page.locator('body[data-loaded="true"]').waitFor({ timeout: 15_000 });
    return page;
  }

  const text = (page: Page, testid: string) => page.getByTestId(testid).textContent();

  /** Releases in reverse order of acquisition: page, server, relay, transport, queues. */
  function releaser() {
    const steps: Array<() => Promise<unknown>> = [];
    return {
      add(step: () => Promise<unknown>) {
        steps.push(step);
      },
      async run() {
        for (const step of steps.reverse())
          await step().catch((err: unknown) => problems.push(`cleanup: ${String(err)}`));
      },
    };
  }

  it('shows the backlog grow, a dead letter, and replays it through the UI until it is delivered', async () => {
    const release = releaser();
    try {
      const orders = await bindConsumer(exchange, 'orders.#');
      release.add(() => orders.close());
      const transport = new RabbitMqTransport({ url: AMQP_URL, exchange });
      release.add(() => transport.close());
      const relay = new Relay({
        store: db.store,
        transport,
        owner: 'dashboard-test-relay',
        pollIntervalMs: 200,
        retry: { maxAttempts: 3 },
      });
      const admin = new AdminServer({
        port: 0,
        stores: [{ name: 'default', store: db.store }],
        relay,
        transport,
        token: TOKEN,
        historyIntervalMs: 500,
      });
      // What `mailroom relay` does: the relay records its presence row, which the table lists.
      const presence = new RelayPresence({
        store: db.store,
        transport: transport.name,
        intervalMs: 1000,
        onError: (err) => problems.push(`presence: ${String(err)}`),
      });
      const detach = presence.attach(relay);
      release.add(async () => {
        detach();
        await presence.stop();
      });
      const { url } = await admin.start();
      release.add(() => admin.close());
      const outbox = new Outbox({ store: db.store });

      const page = await openPage(url, [401]);
      release.add(() => page.close());
      assert.match((await text(page, 'version')) ?? '', /^version \d/);
      assert.equal(await text(page, 'mutations'), 'enabled');
      assert.equal(await text(page, 'connection'), 'live');
      assert.equal(await text(page, 'backlog-total'), '0');

      // The relay is not running yet: what is written stays in the backlog, and the card shows it.
      await inTransaction(db.pool, (c) =>
        outbox.enqueue(
          c,
          Array.from({ length: 7 }, (_, i) => ({
            topic: 'orders.created',
            key: `o${i % 3}`,
            payload: { n: i },
          })),
        ),
      );
      await page.getByTestId('backlog-total').filter({ hasText: /^7$/ }).waitFor({ timeout: 15_000 });
      assert.equal(await text(page, 'backlog-due'), '7');
      await page.getByTestId('topic-row').filter({ hasText: 'orders.created' }).waitFor();
      assert.notEqual(await text(page, 'oldest-age'), 'none');

      await relay.start();
      release.add(() => relay.stop());
      await waitUntil(() => orders.received.length === 7, 'the 7 orders at the consumer', 30_000);
      await page.getByTestId('backlog-total').filter({ hasText: /^0$/ }).waitFor({ timeout: 15_000 });
      await page.getByTestId('relay-row').filter({ hasText: 'dashboard-test-relay' }).waitFor();
      assert.match((await text(page, 'transport-state')) ?? '', /up/);

      // No queue is bound to audit.*: the broker returns the message (mandatory), a permanent
      // failure, so it is dead-lettered at once. Its payload carries markup, which must stay text.
      const markup = '<img src=x onerror=alert(1)><b>bold</b>';
      const [deadId] = await inTransaction(db.pool, (c) =>
        outbox.enqueue(c, [
          {
            topic: 'audit.unrouted',
            key: 'acct-1',
            payload: { note: markup },
            headers: { 'x-origin': 'test' },
          },
        ]),
      );
      assert.ok(deadId);
      const row = page.locator(`[data-testid="dl-row"][data-id="${deadId}"]`);
      await row.waitFor({ timeout: 20_000 });
      await page.getByTestId('dead-total').filter({ hasText: /^1$/ }).waitFor({ timeout: 15_000 });
      assert.match((await row.getByTestId('dl-error').textContent()) ?? '', /unroutable/);

      // The table is rebuilt at every refresh; a focused control keeps its focus.
      await row.getByTestId('dl-view').focus();
      const shownAt = (await text(page, 'last-updated')) ?? '';
      await page.getByTestId('last-updated').filter({ hasNotText: shownAt }).waitFor({ timeout: 15_000 });
      assert.equal(await row.locator('[data-testid="dl-view"]:focus').count(), 1, 'focus kept');

      // The payload view: pretty-printed JSON, as text.
      await row.getByTestId('dl-view').click();
      const dialog = page.getByTestId('detail-dialog');
      await dialog.waitFor({ state: 'visible' });
      await page.getByTestId('detail-payload').filter({ hasText: '"note"' }).waitFor();
      assert.equal(await text(page, 'detail-payload'), JSON.stringify({ note: markup }, null, 2));
      assert.match((await text(page, 'detail-headers')) ?? '', /"x-origin": "test"/);
      assert.equal(await dialog.locator('img, b').count(), 0, 'the payload is shown as text, not markup');
      await page.screenshot({ path: join(tmpdir(), `mailroom-dashboard-detail-${process.pid}.png`) });
      await page.getByTestId('detail-close').click();
      await dialog.waitFor({ state: 'hidden' });

      // Without the token the server refuses, and the page says so.
      await row.getByTestId('dl-replay').click();
      assert.match(
        (await text(page, 'confirm-text')) ?? '',
        /^Replay 1 dead letter of topic audit\.unrouted \(id /,
      );
      await page.getByTestId('confirm-ok').click();
      const actionError = page.getByTestId('action-error');
      await actionError.waitFor({ state: 'visible' });
      assert.match((await actionError.textContent()) ?? '', /401/);
      assert.equal(await actionError.getAttribute('data-code'), 'unauthorized');

      // Cancel does nothing.
      await page.getByTestId('token-input').fill(TOKEN);
      await page.getByTestId('token-save').click();
      await row.getByTestId('dl-replay').click();
      await page.getByTestId('confirm-cancel').click();
      assert.equal(await row.count(), 1);

      // With a queue for audit.* the replayed message is routable now; replay it through the UI.
      const audit = await bindConsumer(exchange, 'audit.#');
      release.add(() => audit.close());
      if (process.env.UPDATE_DOCS_SCREENSHOT) {
        // The picture in docs/dashboard.md: a dead letter listed and some history drawn.
        await new Promise((r) => setTimeout(r, 3000));
        await page.screenshot({ path: docsScreenshot.pathname, fullPage: true });
      }
      await row.getByTestId('dl-select').check();
      await page.getByTestId('dl-replay-selected').click();
      assert.match(
        (await text(page, 'confirm-text')) ?? '',
        /^Replay 1 dead letter of topic audit\.unrouted/,
      );
      assert.match((await text(page, 'confirm-consequence')) ?? '', /back into the outbox/);
      await page.getByTestId('confirm-ok').click();
      await page.getByTestId('action-result').filter({ hasText: 'Replayed 1 dead letter.' }).waitFor();
      await waitUntil(
        () => audit.received.some((m) => m.id === deadId),
        'the replayed message at its consumer',
        30_000,
      );
      await page.getByTestId('dead-letters-empty').waitFor({ state: 'visible', timeout: 15_000 });
      await page.getByTestId('dead-total').filter({ hasText: /^0$/ }).waitFor({ timeout: 15_000 });

      // Purge all of one topic through the filter, then the other through its row.
      const [lostA, lostB] = await inTransaction(db.pool, (c) =>
        outbox.enqueue(c, [
          { topic: 'lost.a', payload: 'a' },
          { topic: 'lost.b', payload: 'b' },
        ]),
      );
      await page.locator(`[data-testid="dl-row"][data-id="${lostB}"]`).waitFor({ timeout: 20_000 });
      await page.locator(`[data-testid="dl-row"][data-id="${lostA}"]`).waitFor({ timeout: 20_000 });
      await page.getByTestId('dl-topic-filter').selectOption('lost.a');
      await page
        .getByTestId('dl-count')
        .filter({ hasText: /^1 dead letter in topic lost\.a$/ })
        .waitFor();
      await page.getByTestId('dl-purge-all').click();
      assert.equal(await text(page, 'confirm-text'), 'Purge all 1 dead letter of topic lost.a?');
      assert.match((await text(page, 'confirm-consequence')) ?? '', /deleted for good/);
      await page.getByTestId('confirm-ok').click();
      await page.getByTestId('action-result').filter({ hasText: 'Purged 1 dead letter.' }).waitFor();
      await page.getByTestId('dl-topic-filter').selectOption('');
      const rowB = page.locator(`[data-testid="dl-row"][data-id="${lostB}"]`);
      await page
        .getByTestId('dl-count')
        .filter({ hasText: /^1 dead letter$/ })
        .waitFor();
      await rowB.getByTestId('dl-purge').click();
      assert.equal(await text(page, 'confirm-text'), `Purge 1 dead letter of topic lost.b (id ${lostB})?`);
      await page.getByTestId('confirm-ok').click();
      await page.getByTestId('dead-letters-empty').waitFor({ state: 'visible', timeout: 15_000 });
      assert.equal(await db.count('dead_letter'), 0);
      // The throughput chart has drawn something by now.
      await page.getByTestId('chart-throughput').locator('polyline').first().waitFor();
      await page.screenshot({
        path: join(tmpdir(), `mailroom-dashboard-${process.pid}.png`),
        fullPage: true,
      });

      for (const u of urls) assert.ok(!u.includes(TOKEN), `the token never travels in a URL (${u})`);
    } finally {
      await release.run();
    }
    assert.deepEqual(problems, [], 'no console error, page error or failed request');
  });

  it('says mutations are disabled when the server has no token, and replays nothing', async () => {
    const release = releaser();
    try {
      const sink = await bindConsumer(exchange, 'never.#');
      release.add(() => sink.close());
      const transport = new RabbitMqTransport({ url: AMQP_URL, exchange });
      release.add(() => transport.close());
      const outbox = new Outbox({ store: db.store });
      // Nothing is bound to nowhere.*: the message is dead on its first attempt.
      const relay = new Relay({
        store: db.store,
        transport,
        owner: 'dashboard-ro-relay',
        pollIntervalMs: 200,
      });
      const [id] = await inTransaction(db.pool, (c) =>
        outbox.enqueue(c, [{ topic: 'nowhere.x', payload: 'plain text' }]),
      );
      await relay.start();
      release.add(() => relay.stop());
      await waitUntil(async () => (await db.count('dead_letter')) === 1, 'the dead letter', 20_000);

      const admin = new AdminServer({
        port: 0,
        stores: [{ name: 'default', store: db.store }],
        relay,
        transport,
      });
      const { url } = await admin.start();
      release.add(() => admin.close());
      const page = await openPage(url, [403]);
      release.add(() => page.close());
      assert.equal(await text(page, 'mutations'), 'disabled');
      const row = page.locator(`[data-testid="dl-row"][data-id="${id}"]`);
      await row.waitFor({ timeout: 15_000 });
      await row.getByTestId('dl-replay').click();
      await page.getByTestId('confirm-ok').click();
      const actionError = page.getByTestId('action-error');
      await actionError.waitFor({ state: 'visible' });
      assert.equal(await actionError.getAttribute('data-code'), 'mutations_disabled');
      assert.match((await actionError.textContent()) ?? '', /Mutations are disabled/);
      assert.equal(await db.count('dead_letter'), 1, 'nothing was replayed');

      // The server goes away: the page says so instead of showing stale numbers as live.
      offline = true;
      await admin.close();
      await page
        .getByTestId('connection')
        .filter({ hasText: 'connection lost' })
        .waitFor({ timeout: 15_000 });
      assert.match((await text(page, 'last-updated')) ?? '', /^last update \d\d:\d\d:\d\d, retrying$/);
    } finally {
      await release.run();
    }
    assert.deepEqual(problems, [], 'no console error, page error or failed request');
  });

  it('shows the source picked among several, and says what needs a relay in the process', async () => {
    const release = releaser();
    try {
      const second = await createTestDb('dash2');
      release.add(() => second.drop());
      await inTransaction(second.pool, (c) =>
        new Outbox({ store: second.store }).enqueue(c, [
          { topic: 'second.a', payload: 1 },
          { topic: 'second.a', payload: 2 },
          { topic: 'second.b', payload: 3 },
        ]),
      );
      const admin = new AdminServer({
        port: 0,
        stores: [
          { name: 'first', store: db.store },
          { name: 'second', store: second.store },
        ],
      });
      const { url } = await admin.start();
      release.add(() => admin.close());
      const page = await openPage(url);
      release.add(() => page.close());
      assert.equal(await text(page, 'transport-state'), 'none');
      assert.equal(await text(page, 'owner'), 'none (admin server only)');
      await page.getByTestId('chart-throughput-note').waitFor();
      await page.getByTestId('source-picker').waitFor({ state: 'visible' });
      assert.equal(await page.getByTestId('source-select').inputValue(), 'first');
      await page.getByTestId('source-select').selectOption('second');
      await page.getByTestId('backlog-total').filter({ hasText: /^3$/ }).waitFor({ timeout: 15_000 });
      await page.getByTestId('topic-row').filter({ hasText: 'second.b' }).waitFor();
      assert.equal(await page.getByTestId('topic-row').count(), 2);
    } finally {
      await release.run();
    }
    assert.deepEqual(problems, [], 'no console error, page error or failed request');
  });

  it('asks for the token when the server, bound beyond loopback, wants it for reading too', async () => {
    const release = releaser();
    try {
      const admin = new AdminServer({
        host: '0.0.0.0',
        port: 0,
        token: TOKEN,
        stores: [{ name: 'default', store: db.store }],
      });
      const { port } = await admin.start();
      release.add(() => admin.close());
      const page = await openPage(`http://127.0.0.1:${port}/`, [401], false);
      release.add(() => page.close());
      await page.getByTestId('connection').filter({ hasText: 'no access' }).waitFor({ timeout: 15_000 });
      assert.match((await text(page, 'source-error')) ?? '', /401/);
      await page.getByTestId('token-input').fill(TOKEN);
      await page.getByTestId('token-save').click();
      await page.getByTestId('connection').filter({ hasText: 'live' }).waitFor({ timeout: 15_000 });
      await page.locator('body[data-loaded="true"]').waitFor();
      assert.equal(await page.getByTestId('source-error').isVisible(), false);
      for (const u of urls) assert.ok(!u.includes(TOKEN), `the token never travels in a URL (${u})`);
    } finally {
      await release.run();
    }
    assert.deepEqual(problems, [], 'no console error, page error or failed request');
  });
});
