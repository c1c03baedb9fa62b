// The official mixpanel-browser library (npm, pinned in tests/package-lock.json), loaded with
// Mixpanel's own snippet into a real Chromium page, with api_host pointing at trackd through
// nginx: track, identify, people.set and get_group().set land in the log. Three ways the
// library sends: batched XHR (its default, base64 payload), api_transport 'sendBeacon', and
// api_payload_format 'json'. The page is on http://localhost:PORT and the API on
// http://127.0.0.1:PORT, so every request is cross-origin, as on a real site: XHR with
// credentials, answered with trackd's CORS headers.
//
// The library is served unmodified from tests/node_modules/mixpanel-browser/dist by the test's
// nginx; nothing in the page or the test adapts to trackd.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { readRecords } from '../blackbox/lib/trackd.mjs';
import { MIXPANEL_DIST, launchBrowser, slow, startStack, waitFor } from './lib/stack.mjs';

const MP_VERSION = JSON.parse(fs.readFileSync(path.join(MIXPANEL_DIST, '..', 'package.json'), 'utf8')).version;
const MP_SNIPPET = fs.readFileSync(path.join(MIXPANEL_DIST, 'mixpanel-jslib-snippet.min.js'), 'utf8');

let seq = 0;
const newToken = () => `mp${process.pid}x${++seq}`;

/** The page: Mixpanel's snippet loading the npm build, then init with `config`. */
function mixpanelPage(token, config) {
    return `<!doctype html>
<html><head><meta charset="utf-8"><title>mixpanel-browser ${MP_VERSION}</title><link rel="icon" href="data:,">
<script>var MIXPANEL_CUSTOM_LIB_URL = '/vendor/mixpanel-browser/mixpanel.min.js';</script>
<script>${MP_SNIPPET}</script>
<script>mixpanel.init(${JSON.stringify(token)}, ${JSON.stringify(config)});</script>
</head><body></body></html>
`;
}

/** Open the page and wait until the library replaced the snippet's stub. */
async function openMixpanel(page, url) {
    await page.goto(url);
    await page.waitForFunction(() => window.mixpanel && window.mixpanel.__loaded, null, { timeout: slow(10000) });
}

// What every variant does, once the library is loaded (the snippet's stub would replay identify
// before the calls queued ahead of it): an anonymous event, identify, an identified event, a
// profile update and a group update. Values with a space, a '+', a '/' and non-ASCII text catch
// decoding mistakes (base64's '+' and '/', form encoding's '+' for space).
function actions() {
    mixpanel.track('MP anonymous', { 'sp ace': 'a+b c/d', unicode: 'h\u00e9llo \u2713 \u4e2d', n: 1.5, list: [1, 'two'] });
    mixpanel.identify('mp-user-1');
    mixpanel.track('MP identified', { k: 'v' });
    mixpanel.people.set({ plan: 'gold', 'first seen': 'today' });
    mixpanel.get_group('company', 'acme').set({ name: 'Acme + Co' });
}

const mine = (recs, token) => recs.filter((r) => (r.properties ? r.properties.token : r.$token) === token);

describe(`mixpanel-browser ${MP_VERSION} against trackd`, () => {
    let stack;
    let browser;
    before(async () => {
        stack = await startStack();
        browser = await launchBrowser();
    });
    after(async () => {
        if (browser) await browser.close();
        if (stack) await stack.stop();
    });

    const variants = [
        { name: 'batched XHR (default), base64 payload', config: {}, beacon: false },
        { name: "api_transport: 'sendBeacon'", config: { api_transport: 'sendBeacon' }, beacon: true },
        { name: "api_payload_format: 'json'", config: { api_payload_format: 'json' }, beacon: false },
    ];

    for (const v of variants) {
        it(`${v.name}: track, identify, people.set and get_group().set land in the log`, { timeout: slow(60000) }, async () => {
            const token = newToken();
            const page = await browser.newPage();
            const answers = [];
            page.on('response', (r) => {
                if (/\/(track|engage|groups)\//.test(r.url())) answers.push(`${r.status()} ${r.request().method()} ${r.url()}`);
            });
            const config = { api_host: stack.origin, batch_flush_interval_ms: 300, debug: true, ...v.config };
            const url = stack.page(`mp-${token}.html`, mixpanelPage(token, config), 'localhost');
            const logLines = stack.nginx.accessLog().length;
            const t0 = Date.now() / 1000;
            await openMixpanel(page, url);
            await page.evaluate(actions);

            const recs = await waitFor(
                () => {
                    const r = mine(readRecords(stack.dataDir), token);
                    const events = r.filter((x) => x.event && x.event.startsWith('MP ')).length;
                    const set = r.some((x) => x._trackd.endpoint === 'engage' && x.$set);
                    const group = r.some((x) => x._trackd.endpoint === 'groups');
                    return events >= 2 && set && group && r;
                },
                { what: 'the events, the profile and the group update', ms: slow(20000) },
            );
            const t1 = Date.now() / 1000;

            const events = recs.filter((r) => r._trackd.endpoint === 'track');
            const anon = events.find((e) => e.event === 'MP anonymous');
            const ident = events.find((e) => e.event === 'MP identified');
            assert.ok(anon && ident, `events stored: ${events.map((e) => e.event)}`);
            for (const e of events) {
                assert.equal(e.properties.token, token);
                assert.match(e.properties.$insert_id, /^[A-Za-z0-9-]{1,36}$/);
                assert.ok(e.properties.time >= t0 - 1 && e.properties.time <= t1 + 1, `time ${e.properties.time}`);
                assert.equal(e.properties.$current_url, url);
                assert.equal(e.properties.mp_lib, 'web');
                assert.equal(e.properties.ip, '127.0.0.1');
            }
            assert.equal(new Set(events.map((e) => e.properties.$insert_id)).size, events.length, 'no duplicate');
            assert.equal(anon.properties['sp ace'], 'a+b c/d');
            assert.equal(anon.properties.unicode, 'h\u00e9llo \u2713 \u4e2d');
            assert.equal(anon.properties.n, 1.5);
            assert.deepEqual(anon.properties.list, [1, 'two']);
            assert.match(anon.properties.distinct_id, /^\$device:/);
            assert.equal(ident.properties.distinct_id, 'mp-user-1');
            assert.equal(ident.properties.$user_id, 'mp-user-1');
            assert.equal(ident.properties.k, 'v');
            const idEvent = events.find((e) => e.event === '$identify');
            if (idEvent) assert.equal(idEvent.properties.$anon_distinct_id, anon.properties.distinct_id);

            // people.set, and the library's own $set_once of the initial referrer.
            const profiles = recs.filter((r) => r._trackd.endpoint === 'engage' && r.$set);
            assert.equal(profiles.length, 1, JSON.stringify(profiles));
            assert.equal(profiles[0].$token, token);
            assert.equal(profiles[0].$distinct_id, 'mp-user-1');
            assert.equal(profiles[0].$set.plan, 'gold');
            assert.equal(profiles[0].$set['first seen'], 'today');

            const groups = recs.filter((r) => r._trackd.endpoint === 'groups');
            assert.equal(groups.length, 1, JSON.stringify(groups));
            assert.equal(groups[0].$token, token);
            assert.equal(groups[0].$group_key, 'company');
            assert.equal(groups[0].$group_id, 'acme');
            assert.deepEqual(groups[0].$set, { name: 'Acme + Co' });

            if (v.beacon) {
                // Beacons: the page never sees an answer; nginx logged them, all 200.
                // nginx logs a request once trackd answered, which may be after the records can be read.
                const beacons = () => stack.nginx.accessLog().slice(logLines).filter((l) => /"POST \/(track|engage|groups)\//.test(l));
                const posts = await waitFor(() => beacons().length >= 3 && beacons(), { what: 'three beacons in the access log' });
                for (const l of posts) assert.match(l, /" 200 /, `every beacon acknowledged:\n${posts.join('\n')}`);
            } else {
                // The records can be read before the answers reach the test.
                await waitFor(() => answers.length >= 3, { what: `answers to the track, engage and groups requests (${answers})` });
                for (const a of answers) assert.match(a, /^200 POST /, `every request acknowledged:\n${answers.join('\n')}`);
            }
            assert.ok(!stack.nginx.accessLog().some((l) => l.includes('"OPTIONS ')), 'no preflight');
            await page.close();
        });
    }

    // mixpanel-browser's base64 payload (its default for a non-mixpanel.com api_host) is built by
    // its own _.utf8Encode, which encodes each UTF-16 code unit on its own: a character outside
    // the BMP (any emoji) becomes two 3-byte surrogate sequences (CESU-8: U+1F680 is
    // ED A0 BD ED BA 80), not valid UTF-8. The client drops a batch answered with 400, so every
    // event in a batch holding one emoji would be lost. The JSON format encodes proper UTF-8.
    for (const [name, config] of [
        ['base64 (default)', {}],
        ["api_payload_format: 'json'", { api_payload_format: 'json' }],
    ]) {
        it(`an emoji (outside the BMP) in a ${name} payload is stored, with the events batched alongside it`, { timeout: slow(60000) }, async () => {
            const token = newToken();
            const page = await browser.newPage();
            const answers = [];
            page.on('response', async (r) => {
                if (!r.url().includes('/track/')) return;
                const body = await r.text().catch(() => '');
                answers.push(`${r.status()} ${body} <- ${r.request().postData()}`);
            });
            const url = stack.page(`mp-emoji-${token}.html`, mixpanelPage(token, { api_host: stack.origin, batch_flush_interval_ms: 300, ...config }), 'localhost');
            await openMixpanel(page, url);
            await page.evaluate(() => {
                mixpanel.track('Plain', { x: 1 });
                mixpanel.track('Emoji', { text: 'rocket \u{1f680}' });
            });
            await waitFor(() => answers.length > 0, { what: 'the answer to the batch' });
            await new Promise((r) => setTimeout(r, 500));
            const recs = mine(readRecords(stack.dataDir), token);
            assert.deepEqual(
                recs.map((r) => `${r.event}: ${r.properties.text || ''}`).sort(),
                ['Emoji: rocket \u{1f680}', 'Plain: '],
                `stored ${recs.length} of 2 events; trackd answered:\n${answers.join('\n')}`,
            );
            await page.close();
        });
    }
});
