// The demo page (web/demo/) as `make run` serves it: nginx (scripts/gen-nginx.sh) at /, trackd
// behind it, and scripts/demo-feed.sh writing the feed from `trackctl tail`. The page's own page
// view, a button click and identify + people.set must show up in its table, and every row it
// shows must be a record the log really holds (same $insert_id in `trackctl cat`).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { TRACKCTL, readRecords } from '../blackbox/lib/trackd.mjs';
import { REPO_ROOT, launchBrowser, libLoaded, slow, startStack, waitFor } from './lib/stack.mjs';

describe('demo page', () => {
    let stack;
    let browser;
    let feed;
    let feedErr = '';
    before(async () => {
        stack = await startStack();
        feed = spawn(
            path.join(REPO_ROOT, 'scripts', 'demo-feed.sh'),
            ['--data-dir', stack.dataDir, '--out', path.join(stack.runDir, 'feed.json'), '--interval', '0.2', '--trackctl', TRACKCTL],
            { stdio: ['ignore', 'ignore', 'pipe'] },
        );
        feed.stderr.setEncoding('utf8');
        feed.stderr.on('data', (d) => (feedErr += d));
        browser = await launchBrowser();
    });
    after(async () => {
        if (feed && feed.exitCode === null) {
            const gone = new Promise((r) => feed.once('exit', r));
            feed.kill('SIGTERM');
            await gone;
        }
        if (browser) await browser.close();
        if (stack) await stack.stop();
    });

    /** The rows of the page's table: [{insertId, cells: [...]}]. */
    const rows = (page) =>
        page.$$eval('#feed tr', (trs) =>
            trs.map((tr) => ({ insertId: tr.getAttribute('data-insert-id'), mine: tr.className === 'mine', cells: [...tr.cells].map((c) => c.textContent) })),
        );

    it('shows its page view, a click and identify + people.set as trackd stored them', { timeout: slow(60000) }, async () => {
        const page = await browser.newPage();
        await page.goto(`${stack.origin}/`);
        await libLoaded(page);
        const me = await page.evaluate(() => trackd.get_distinct_id());

        const find = async (pred, what) =>
            waitFor(async () => (await rows(page)).find(pred), { what: `${what} in the demo's table (feed: ${feedErr || 'ok'})` });
        const view = await find((r) => r.cells[2] === '$mp_web_page_view' && r.cells[3] === me, 'the page view');
        assert.equal(view.cells[1], 'track');
        assert.ok(view.mine, 'own rows are highlighted');

        await page.click('button[data-event="Added to cart"]');
        const click = await find((r) => r.cells[2] === 'Added to cart' && r.cells[3] === me, 'the click');
        assert.match(click.insertId, /^[a-z0-9]{16,}$/);
        assert.match(click.cells[5], /"button":"Add to cart"/);

        await page.fill('#user', 'demo-user-7');
        await page.selectOption('#plan', 'pro');
        await page.click('#identify button[type=submit]');
        const profile = await find((r) => r.cells[1] === 'engage' && r.cells[3] === 'demo-user-7', 'the profile update');
        assert.equal(profile.cells[2], '$set');
        assert.match(profile.cells[5], /"plan":"pro"/);

        // Every row shown is in the log, and the table holds the log's newest records.
        const log = readRecords(stack.dataDir);
        const stored = new Set(log.filter((r) => r.properties).map((r) => r.properties.$insert_id));
        const shown = await rows(page);
        for (const r of shown.filter((x) => x.insertId)) assert.ok(stored.has(r.insertId), `row ${r.cells.join(' | ')} is not in the log`);
        assert.ok(shown.length <= 20, 'at most the 20 newest');
        assert.match(await page.textContent('#feed-status'), /newest records, read from the log/);
        await page.close();
    });

    it('says so when the feed is missing (demo-feed.sh not running) instead of showing anything', { timeout: slow(30000) }, async () => {
        const bare = await startStack(); // no demo-feed.sh: nginx answers 404 for /feed.json
        const page = await browser.newPage();
        try {
            await page.goto(`${bare.origin}/`);
            await waitFor(async () => /HTTP 404/.test(await page.textContent('#feed-status')), { what: 'the feed error' });
            assert.equal((await rows(page)).length, 0);
        } finally {
            await page.close();
            await bare.stop();
        }
    });
});
