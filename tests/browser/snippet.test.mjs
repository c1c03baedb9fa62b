// The loader snippet and trackd.js in a real Chromium, against the real trackd behind nginx:
// what a page tracks arrives in the log (read back with trackctl cat) with the right properties,
// in Mixpanel's wire format, as simple CORS requests; the shipped file is current and small; the
// server's refusals (413, other 4xx) are handled as docs/snippet.md says.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';

import { readRecords } from '../blackbox/lib/trackd.mjs';
import {
    REPO_ROOT,
    launchBrowser,
    libInfo,
    libLoaded,
    slow,
    snippetPage,
    startStack,
    waitFor,
} from './lib/stack.mjs';

const INSERT_ID = /^[a-z0-9]{16,36}$/;
let seq = 0;
/** A token of its own for each test: records and localStorage keys never mix between tests. */
const newToken = () => `tok${process.pid}x${++seq}`;
const ofToken = (recs, token) => recs.filter((r) => (r.properties ? r.properties.token : r.$token) === token);

describe('build', () => {
    it('web/dist is what web/build.mjs generates from the sources (terser, pinned)', () => {
        const r = spawnSync(process.execPath, ['web/build.mjs', '--check'], { cwd: REPO_ROOT, encoding: 'utf8' });
        assert.equal(r.status, 0, `build --check: ${r.stdout}${r.stderr}`);
    });

    it('the library is at most 4096 bytes minified and gzipped (scripts/js-size.mjs)', () => {
        const r = spawnSync(process.execPath, ['scripts/js-size.mjs'], { cwd: REPO_ROOT, encoding: 'utf8' });
        assert.equal(r.status, 0, `js-size: ${r.stdout}${r.stderr}`);
        const m = /(\d+) bytes gzipped \(budget 4096\)/.exec(r.stdout);
        assert.ok(m && Number(m[1]) <= 4096, r.stdout);
        // The check can fail: a budget below the real size must.
        const low = spawnSync(process.execPath, ['scripts/js-size.mjs', '--budget', String(Number(m[1]) - 1)], {
            cwd: REPO_ROOT,
            encoding: 'utf8',
        });
        assert.equal(low.status, 1, 'js-size passes a budget one byte too small');
    });
});

describe('snippet and library against trackd', () => {
    let stack;
    let browser;
    before(async () => {
        stack = await startStack({ trackdArgs: ['--max-events-per-request', '10'] });
        browser = await launchBrowser();
    });
    after(async () => {
        if (browser) await browser.close();
        if (stack) await stack.stop();
    });

    it('page view, track, register, identify and people.set arrive with the right properties', { timeout: slow(60000) }, async () => {
        const token = newToken();
        const page = await browser.newPage();
        const sent = [];
        page.on('request', (r) => {
            if (/\/(track|engage)\//.test(r.url())) sent.push({ url: r.url(), method: r.method(), headers: r.headers(), body: r.postData() });
        });
        const t0 = Date.now() / 1000;
        // Everything before the library loads goes through the snippet's stub queue.
        const url = stack.page(
            `basic-${token}.html`,
            snippetPage(`
                // Calls made before init wait for it; the page view comes after them.
                trackd.register({plan: 'pro', 'app version': '1.2+3'});
                trackd.init(${JSON.stringify(token)}, {track_pageview: true, flush_interval_ms: 300});
                document.addEventListener('click', function (e) {
                    trackd.track('Button clicked', {label: e.target.textContent, n: 7, nested: {a: [1, 2]}});
                });`),
        );
        const script = page.waitForResponse((r) => r.url().endsWith(libInfo().path));
        await page.goto(url);
        const lib = await script;
        assert.equal(lib.status(), 200);
        assert.match(lib.headers()['cache-control'] || '', /max-age=31536000.*immutable|immutable.*max-age=31536000/);
        await libLoaded(page);
        await page.click('#b');
        const anon = await page.evaluate(() => trackd.get_distinct_id());
        assert.match(anon, /^\$device:[a-z0-9]{16,}$/);
        await page.evaluate(() => {
            trackd.identify('user-42');
            trackd.track('After identify', { k: 'v' });
            trackd.people.set({ $name: 'Ada', plan: 'pro' });
        });

        const recs = await waitFor(
            () => {
                const r = ofToken(readRecords(stack.dataDir), token);
                return r.length >= 5 && r;
            },
            { what: 'five records of the page' },
        );
        const t1 = Date.now() / 1000;
        const events = recs.filter((r) => r._trackd.endpoint === 'track');
        assert.deepEqual(events.map((e) => e.event).sort(), ['$identify', '$mp_web_page_view', 'After identify', 'Button clicked']);
        const ev = (name) => events.find((e) => e.event === name);
        for (const e of events) {
            const p = e.properties;
            assert.equal(p.token, token);
            assert.match(p.$insert_id, INSERT_ID, 'insert id');
            assert.ok(p.time >= t0 - 1 && p.time <= t1 + 1, `time ${p.time} in seconds, between ${t0} and ${t1}`);
            assert.equal(p.$current_url, url);
            assert.equal(p.plan, 'pro', 'registered property on every event');
            assert.equal(p['app version'], '1.2+3', 'a "+" and a space survive the form encoding');
            assert.equal(p.ip, '127.0.0.1', 'ip=1 behind the trusted proxy');
            assert.equal(p.$lib_version, libInfo().version);
        }
        assert.equal(new Set(events.map((e) => e.properties.$insert_id)).size, events.length, 'insert ids are unique');
        assert.equal(ev('$mp_web_page_view').properties.distinct_id, anon);
        assert.equal(ev('$mp_web_page_view').properties.current_page_title, 'trackd test page');
        const click = ev('Button clicked').properties;
        assert.equal(click.label, 'button');
        assert.equal(click.n, 7);
        assert.deepEqual(click.nested, { a: [1, 2] });
        assert.equal(click.distinct_id, anon);
        assert.equal(ev('$identify').properties.distinct_id, 'user-42');
        assert.equal(ev('$identify').properties.$anon_distinct_id, anon);
        assert.equal(ev('After identify').properties.distinct_id, 'user-42');
        assert.equal(ev('After identify').properties.$user_id, 'user-42');
        assert.equal(ev('After identify').properties.$device_id, anon.slice('$device:'.length));
        assert.equal(ev('After identify').properties.k, 'v');

        const engage = recs.filter((r) => r._trackd.endpoint === 'engage');
        assert.equal(engage.length, 1);
        const { _trackd, ...profile } = engage[0];
        assert.deepEqual(profile, { $token: token, $distinct_id: 'user-42', $set: { $name: 'Ada', plan: 'pro' }, $ip: '127.0.0.1' });

        // Mixpanel's wire format as simple requests: POST, form body data=<JSON>, verbose=1.
        assert.ok(sent.length >= 2);
        for (const s of sent) {
            assert.equal(s.method, 'POST');
            assert.match(s.url, /\/(track|engage)\/\?verbose=1&ip=1$/);
            assert.equal(s.headers['content-type'], 'application/x-www-form-urlencoded');
            const data = new URLSearchParams(s.body).get('data');
            assert.ok(Array.isArray(JSON.parse(data)), 'data holds a JSON array');
        }
        assert.ok(!stack.nginx.accessLog().some((l) => l.includes('"OPTIONS ')), 'no preflight');

        // Acknowledged: the stored queues are empty. The identity survives a reload.
        await waitFor(() => page.evaluate((tok) => localStorage.getItem(`trackd_${tok}_q_track`) === '[]', token));
        await page.reload();
        await libLoaded(page);
        await page.evaluate(() => trackd.flush());
        const again = await waitFor(() =>
            ofToken(readRecords(stack.dataDir), token).filter((r) => r.event === '$mp_web_page_view')[1],
        );
        assert.equal(again.properties.distinct_id, 'user-42', 'distinct_id persisted in localStorage');
        assert.equal(again.properties.$device_id, anon.slice('$device:'.length));
        await page.close();
    });

    it('works cross-origin as a simple CORS request: no preflight, answers readable', { timeout: slow(60000) }, async () => {
        const token = newToken();
        const page = await browser.newPage();
        // The page is on http://localhost:PORT, the library and the API on http://127.0.0.1:PORT.
        const url = stack.page(
            `cors-${token}.html`,
            snippetPage(`trackd.init(${JSON.stringify(token)}, {flush_interval_ms: 200}); trackd.track('Cross origin', {x: 1});`, {
                libOrigin: stack.origin,
            }),
            'localhost',
        );
        const posted = page.waitForResponse((r) => r.url().startsWith(`${stack.origin}/track/`));
        await page.goto(url);
        const resp = await posted;
        assert.equal(resp.status(), 200);
        assert.equal(resp.headers()['access-control-allow-origin'], new URL(url).origin);
        const recs = await waitFor(() => ofToken(readRecords(stack.dataDir), token).length === 1 && ofToken(readRecords(stack.dataDir), token));
        assert.equal(recs[0].event, 'Cross origin');
        assert.equal(recs[0].properties.$current_url, url);
        // The library saw the 200 (the CORS answer was readable): the queue is empty.
        await waitFor(() => page.evaluate((tok) => localStorage.getItem(`trackd_${tok}_q_track`) === '[]', token), {
            what: 'an empty queue after the acknowledgement',
        });
        assert.ok(!stack.nginx.accessLog().some((l) => l.includes('"OPTIONS ')), 'no preflight');
        await page.close();
    });

    it('a 413 (too many events per request) halves the batch until it fits; every event stored once', { timeout: slow(60000) }, async () => {
        // trackd runs with --max-events-per-request 10; a batch of 40 is refused with 413.
        const token = newToken();
        const page = await browser.newPage();
        const statuses = [];
        page.on('response', (r) => r.url().includes('/track/') && statuses.push(r.status()));
        await page.goto(stack.page(`split-${token}.html`, snippetPage(`trackd.init(${JSON.stringify(token)}, {batch_size: 40, flush_interval_ms: 60000});`)));
        await libLoaded(page);
        await page.evaluate(() => {
            for (let i = 0; i < 40; i++) trackd.track('Bulk', { i });
        });
        const recs = await waitFor(() => {
            const r = ofToken(readRecords(stack.dataDir), token);
            return r.length >= 40 && r;
        }, { what: '40 events' });
        assert.equal(recs.length, 40);
        assert.deepEqual(recs.map((r) => r.properties.i).sort((a, b) => a - b), [...Array(40).keys()]);
        assert.equal(new Set(recs.map((r) => r.properties.$insert_id)).size, 40);
        // 40 -> 413, 20 -> 413, then 10 at a time: 200 four times.
        await waitFor(() => statuses.filter((s) => s === 200).length >= 4, { what: "four 200s" });
        assert.deepEqual(statuses, [413, 413, 200, 200, 200, 200]);
        await page.close();
    });

    it('a string cut inside an emoji (lone surrogate, which trackd rejects) does not sink its batch', { timeout: slow(60000) }, async () => {
        const token = newToken();
        const page = await browser.newPage();
        await page.goto(stack.page(`surrogate-${token}.html`, snippetPage(`trackd.init(${JSON.stringify(token)}, {flush_interval_ms: 200});`)));
        await libLoaded(page);
        await page.evaluate(() => {
            trackd.track('Cut', { s: 'rocket \u{1f680}'.slice(0, 8), whole: 'rocket \u{1f680}' });
            trackd.track('Fine', { s: 'ok' });
        });
        const recs = await waitFor(() => {
            const r = ofToken(readRecords(stack.dataDir), token);
            return r.length >= 2 && r;
        }, { what: 'both events' });
        const cut = recs.find((r) => r.event === 'Cut');
        assert.equal(cut.properties.s, 'rocket \ufffd', 'the lone surrogate became U+FFFD');
        assert.equal(cut.properties.whole, 'rocket \u{1f680}', 'a whole emoji is kept');
        assert.equal(recs.find((r) => r.event === 'Fine').properties.s, 'ok');
        await page.close();
    });

    it('another 4xx (unknown token: 401) drops the batch with a console warning instead of retrying forever', { timeout: slow(60000) }, async () => {
        // A second trackd with a token allow-list answers 401 to any other token.
        const strict = await startStack({ trackdArgs: ['--token', 'only-this-one'] });
        const page = await browser.newPage();
        const warnings = [];
        page.on('console', (m) => m.type() === 'warning' && warnings.push(m.text()));
        const statuses = [];
        page.on('response', (r) => r.url().includes('/track/') && statuses.push(r.status()));
        try {
            await page.goto(strict.page('strict.html', snippetPage(`trackd.init('not-allowed', {flush_interval_ms: 100, retry_base_ms: 100});`)));
            await libLoaded(page);
            await page.evaluate(() => trackd.track('Refused'));
            await waitFor(() => warnings.some((w) => /dropped 1 record\(s\) the server refused with 401/.test(w)), { what: 'the warning' });
            assert.equal(await page.evaluate(() => localStorage.getItem('trackd_not-allowed_q_track')), '[]');
            // Dropped for good: no retry follows.
            await new Promise((r) => setTimeout(r, 1000));
            assert.deepEqual(statuses, [401]);
            // The page's next events are not blocked behind it (here: allowed token on a new init).
            await page.evaluate(() => {
                trackd.init('only-this-one', { flush_interval_ms: 100 });
                trackd.track('Allowed');
            });
            await waitFor(() => readRecords(strict.dataDir).some((r) => r.event === 'Allowed'));
            assert.equal(readRecords(strict.dataDir).length, 1);
        } finally {
            await page.close();
            await strict.stop();
        }
    });
});
