// The ingestion API as clients use it (../../../shared/API.md): every payload shape on every
// endpoint, the query and form flags, validation and limits, tokens and /import secrets, CORS.
// Each accepted event is read back with `trackctl cat` and compared with what was sent.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import zlib from 'node:zlib';

import {
    TOKEN,
    assertStored,
    b64json,
    byInsertId,
    byProfileId,
    engageUpdate,
    groupUpdate,
    insertId,
    nowSeconds,
    oneByInsertId,
    trackEvent,
} from './lib/events.mjs';
import { RawConn, buildRequest, request } from './lib/http.mjs';
import { assertVerifies, readRecords, slow, startTrackd } from './lib/trackd.mjs';

const SECRET = 'bb-import-secret';
const TRUSTED_PROXY = '127.0.0.2';
const REDIRECT_HOST = 'example.com';
const CORS_MAX_AGE = 600;
const FORM = 'application/x-www-form-urlencoded';

let srv;
let workersAtStart;

before(async () => {
    srv = await startTrackd({
        args: [
            '--token', TOKEN,
            '--import-secret', SECRET,
            '--trusted-proxy', TRUSTED_PROXY,
            '--redirect-host', REDIRECT_HOST,
            '--cors-max-age-s', String(CORS_MAX_AGE),
        ],
    });
    workersAtStart = srv.workerPids();
});

after(async () => {
    if (!srv) return;
    await srv.stop();
    assertVerifies(srv.dataDir);
});


function send(opts) {
    return request(srv.port, { timeout: slow(10000), ...opts });
}

function records() {
    return readRecords(srv.dataDir);
}

/** An event whose base64 holds both '+' and '/' (so escaping matters). */
function eventWithPlusAndSlash() {
    for (let pad = 0; pad < 64; pad++) {
        const ev = trackEvent({ blob: `${'x'.repeat(pad)}>>>???~~~ü` });
        const b = b64json(ev);
        if (b.includes('+') && b.includes('/')) return ev;
    }
    throw new Error('could not build an event whose base64 has + and /');
}

function basic(secret) {
    return 'Basic ' + Buffer.from(`${secret}:`).toString('base64');
}

/** Assert a plain success answer: 200, body exactly "1", the cache headers. */
function assertOk(r, what = '') {
    assert.equal(r.status, 200, `${what}: status ${r.status}, body ${r.text}`);
    assert.equal(r.text, '1', `${what}: body`);
    assert.equal(r.headers['cache-control'], 'no-cache, no-store', `${what}: Cache-Control`);
}

/** Assert a verbose answer with the given status field; returns the parsed body. */
function verboseBody(r, status) {
    let j;
    try {
        j = r.json();
    } catch {
        assert.fail(`verbose body is not JSON: ${r.text}`);
    }
    assert.equal(j.status, status, `verbose status in ${r.text}`);
    if (status === 1 && j.error !== null) assert.equal(typeof j.error, 'string');
    if (status === 0) assert.ok(typeof j.error === 'string' && j.error.length > 0, `verbose error text in ${r.text}`);
    return j;
}

describe('payload shapes on /track and /track/', () => {
    for (const path of ['/track', '/track/']) {
        it(`${path}: GET ?data= URL-escaped base64 is stored exactly`, async () => {
            const ev = eventWithPlusAndSlash();
            const t0 = Date.now();
            const r = await send({ path: `${path}?data=${encodeURIComponent(b64json(ev))}` });
            assertOk(r, 'GET');
            assertStored(oneByInsertId(records(), ev.properties.$insert_id), ev, { endpoint: 'track', sentAtMs: t0 });
        });

        it(`${path}: POST form data= URL-escaped base64`, async () => {
            const ev = eventWithPlusAndSlash();
            const t0 = Date.now();
            const r = await send({
                method: 'POST', path,
                headers: { 'Content-Type': FORM },
                body: `data=${encodeURIComponent(b64json(ev))}`,
            });
            assertOk(r, 'POST escaped');
            assertStored(oneByInsertId(records(), ev.properties.$insert_id), ev, { endpoint: 'track', sentAtMs: t0 });
        });

        it(`${path}: POST form data= unescaped base64 keeps a raw '+' as '+'`, async () => {
            const evs = [eventWithPlusAndSlash(), eventWithPlusAndSlash()];
            const raw = b64json(evs);
            assert.ok(raw.includes('+'));
            const r = await send({
                method: 'POST', path,
                headers: { 'Content-Type': FORM },
                body: `data=${raw}`,
            });
            assertOk(r, 'POST unescaped');
            const recs = records();
            for (const ev of evs) assertStored(oneByInsertId(recs, ev.properties.$insert_id), ev, { endpoint: 'track' });
        });

        it(`${path}: POST form data= plain JSON (URL-escaped)`, async () => {
            const ev = trackEvent({ note: 'a+b & c=d %' });
            const r = await send({
                method: 'POST', path,
                headers: { 'Content-Type': FORM },
                body: `data=${encodeURIComponent(JSON.stringify(ev))}`,
            });
            assertOk(r, 'POST form JSON');
            assertStored(oneByInsertId(records(), ev.properties.$insert_id), ev, { endpoint: 'track' });
        });

        it(`${path}: content types with parameters (the browser's form; charset on JSON)`, async () => {
            const a = trackEvent();
            const b = trackEvent();
            assertOk(await send({
                method: 'POST', path,
                headers: { 'Content-Type': 'application/x-www-form-urlencoded; charset=UTF-8' },
                body: `data=${encodeURIComponent(b64json(a))}`,
            }), 'form; charset');
            assertOk(await send({
                method: 'POST', path,
                headers: { 'Content-Type': 'application/json; charset=utf-8' },
                body: JSON.stringify([b]),
            }), 'json; charset');
            const recs = records();
            for (const ev of [a, b]) assertStored(oneByInsertId(recs, ev.properties.$insert_id), ev, { endpoint: 'track' });
        });

        it(`${path}: POST raw JSON object and array bodies`, async () => {
            const one = trackEvent();
            const two = [trackEvent({ n: 1 }), trackEvent({ n: 2 })];
            assertOk(await send({ method: 'POST', path, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(one) }), 'object');
            assertOk(await send({ method: 'POST', path, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(two) }), 'array');
            const recs = records();
            for (const ev of [one, ...two]) assertStored(oneByInsertId(recs, ev.properties.$insert_id), ev, { endpoint: 'track' });
        });

        it(`${path}: sendBeacon text/plain;charset=UTF-8 body holding data=`, async () => {
            const ev = eventWithPlusAndSlash();
            const r = await send({
                method: 'POST', path,
                headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
                body: `data=${encodeURIComponent(b64json(ev))}`,
            });
            assertOk(r, 'beacon');
            assertStored(oneByInsertId(records(), ev.properties.$insert_id), ev, { endpoint: 'track' });
        });

        it(`${path}: Content-Encoding: gzip form and JSON bodies`, async () => {
            const a = trackEvent();
            const b = [trackEvent(), trackEvent()];
            assertOk(await send({
                method: 'POST', path,
                headers: { 'Content-Type': FORM, 'Content-Encoding': 'gzip' },
                body: zlib.gzipSync(`data=${encodeURIComponent(b64json(a))}`),
            }), 'gzip form');
            assertOk(await send({
                method: 'POST', path,
                headers: { 'Content-Type': 'application/json', 'Content-Encoding': 'gzip' },
                body: zlib.gzipSync(JSON.stringify(b)),
            }), 'gzip json');
            const recs = records();
            for (const ev of [a, ...b]) assertStored(oneByInsertId(recs, ev.properties.$insert_id), ev, { endpoint: 'track' });
        });

        it(`${path}: chunked request body`, async () => {
            const evs = [trackEvent(), trackEvent(), trackEvent()];
            const body = Buffer.from(`data=${encodeURIComponent(b64json(evs))}`);
            // Uneven chunks, one with an extension, then the last chunk and no trailers.
            const cuts = [0, 1, 17, Math.floor(body.length / 2), body.length];
            let chunked = '';
            for (let i = 0; i + 1 < cuts.length; i++) {
                const part = body.subarray(cuts[i], cuts[i + 1]);
                chunked += part.length.toString(16) + (i === 1 ? ';ext=1' : '') + '\r\n' + part.toString('latin1') + '\r\n';
            }
            chunked += '0\r\n\r\n';
            const r = await send({
                method: 'POST', path,
                headers: { 'Content-Type': FORM, 'Transfer-Encoding': 'chunked' },
                body: Buffer.from(chunked, 'latin1'),
            });
            assertOk(r, 'chunked');
            const recs = records();
            for (const ev of evs) assertStored(oneByInsertId(recs, ev.properties.$insert_id), ev, { endpoint: 'track' });
        });

        it(`${path}: Expect: 100-continue gets 100 before the body, then 200`, async () => {
            const ev = trackEvent();
            const body = Buffer.from(`data=${encodeURIComponent(b64json(ev))}`);
            const c = await RawConn.open(srv.port);
            try {
                await c.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: ${FORM}\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`);
                const interim = await c.response({ timeout: slow(5000) });
                assert.equal(interim.status, 100, 'interim status');
                await c.write(body);
                const r = await c.response({ timeout: slow(5000) });
                assertOk(r, 'after 100');
            } finally {
                c.close();
            }
            assertStored(oneByInsertId(records(), ev.properties.$insert_id), ev, { endpoint: 'track' });
        });
    }

    it('a gzip bomb gets 413 quickly and stores nothing', async () => {
        // 64 MiB of JSON-looking padding inflates far past the decoded-size cap (8 MiB default)
        // while the compressed body stays well under the 2 MiB body limit.
        const ev = trackEvent();
        const head = Buffer.from(`[${JSON.stringify(ev)},{"event":"pad","properties":{"x":"`);
        const bomb = zlib.gzipSync(Buffer.concat([head, Buffer.alloc(64 << 20, 0x61)]), { level: 9 });
        assert.ok(bomb.length < 1 << 20, `bomb is ${bomb.length} bytes`);
        const t0 = Date.now();
        const r = await send({
            method: 'POST', path: '/track',
            headers: { 'Content-Type': 'application/json', 'Content-Encoding': 'gzip' },
            body: bomb,
        });
        const took = Date.now() - t0;
        assert.equal(r.status, 413, `gzip bomb: status ${r.status} body ${r.text}`);
        assert.ok(took < slow(3000), `413 took ${took} ms`);
        assert.equal(byInsertId(records(), ev.properties.$insert_id).length, 0);
    });

    it('test=1 and _=<ms> have no effect', async () => {
        const ev = trackEvent();
        const r = await send({ path: `/track?test=1&_=${Date.now()}&data=${encodeURIComponent(b64json(ev))}` });
        assertOk(r);
        assertStored(oneByInsertId(records(), ev.properties.$insert_id), ev, { endpoint: 'track' });
    });

    it('base64 without padding, and with spaces for lost pluses, is decoded', async () => {
        const ev = eventWithPlusAndSlash();
        let b = b64json(ev).replace(/=+$/, '');
        if (b.length % 4 === 0) {
            // make sure the unpadded form really lacks padding: add a byte to the event
            ev.properties.pad = 'y';
            b = b64json(ev).replace(/=+$/, '');
        }
        const spaced = b.replace(/\+/g, ' ');
        const r = await send({ method: 'POST', path: '/track', headers: { 'Content-Type': FORM }, body: `data=${encodeURIComponent(spaced)}` });
        assertOk(r, 'unpadded, spaces');
        assertStored(oneByInsertId(records(), ev.properties.$insert_id), ev, { endpoint: 'track' });
    });
});

describe('profile and group updates', () => {
    for (const [ep, make] of [['engage', engageUpdate], ['groups', groupUpdate]]) {
        for (const path of [`/${ep}`, `/${ep}/`]) {
            it(`${path}: GET ?data= and POST form are stored with endpoint ${ep}`, async () => {
                const a = make();
                const b = make({ $ignore_time: true });
                const c = [make(), make()];
                assertOk(await send({ path: `${path}?data=${encodeURIComponent(b64json(a))}` }), 'GET');
                assertOk(await send({ method: 'POST', path, headers: { 'Content-Type': FORM }, body: `data=${b64json(b)}` }), 'POST form');
                assertOk(await send({ method: 'POST', path, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(c) }), 'POST json array');
                const recs = records();
                for (const u of [a, b, ...c]) {
                    const id = u.$distinct_id || u.$group_id;
                    const found = byProfileId(recs, id);
                    assert.equal(found.length, 1, `${id} stored once`);
                    assertStored(found[0], u, { endpoint: ep, profile: true });
                }
            });
        }
    }

    it('/engage with every documented operation is accepted', async () => {
        const ops = [
            { $set: { a: 1 } }, { $set_once: { first: 'x' } }, { $add: { n: 2 } }, { $union: { tags: ['a'] } },
            { $append: { list: 'v' } }, { $remove: { list: 'v' } }, { $unset: ['a'] }, { $delete: '' },
        ];
        const ups = ops.map((op) => ({ $token: TOKEN, $distinct_id: `ops-${insertId()}`, ...op }));
        const r = await send({ method: 'POST', path: '/engage', headers: { 'Content-Type': FORM }, body: `data=${encodeURIComponent(JSON.stringify(ups))}&verbose=1` });
        assert.equal(r.status, 200);
        verboseBody(r, 1);
        const recs = records();
        for (const u of ups) assertStored(byProfileId(recs, u.$distinct_id)[0], u, { endpoint: 'engage', profile: true });
    });

    it('/engage ip=1 adds $ip unless the update has one', async () => {
        const a = engageUpdate();
        const b = engageUpdate({ $ip: '198.51.100.1' });
        assertOk(await send({ path: `/engage?ip=1&data=${encodeURIComponent(b64json([a, b]))}` }));
        const recs = records();
        assertStored(byProfileId(recs, a.$distinct_id)[0], a, { endpoint: 'engage', profile: true, ip: '127.0.0.1' });
        assertStored(byProfileId(recs, b.$distinct_id)[0], b, { endpoint: 'engage', profile: true });
    });
});

describe('/import', () => {
    function importEvent(props = {}) {
        return trackEvent({ time: Date.now() - 30 * 86400 * 1000, distinct_id: `imp-${insertId()}`, ...props }, 'Imported');
    }

    for (const path of ['/import', '/import/']) {
        it(`${path}: Basic auth with the secret stores the batch and answers the import JSON`, async () => {
            const evs = [importEvent(), importEvent()];
            const r = await send({
                method: 'POST', path,
                headers: { 'Content-Type': 'application/json', Authorization: basic(SECRET) },
                body: JSON.stringify(evs),
            });
            assert.equal(r.status, 200, r.text);
            assert.deepStrictEqual(r.json(), { code: 200, num_records_imported: 2, status: 'OK' });
            const recs = records();
            for (const ev of evs) assertStored(oneByInsertId(recs, ev.properties.$insert_id), ev, { endpoint: 'import' });
        });
    }

    it('api_key= in the query is accepted as the secret (form body, unescaped base64)', async () => {
        const evs = [importEvent()];
        // The legacy form shape answers like /track (`1`), as the Node library requires ...
        const r = await send({ method: 'POST', path: `/import?api_key=${SECRET}`, headers: { 'Content-Type': FORM }, body: `data=${b64json(evs)}` });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.text, '1');
        assertStored(oneByInsertId(records(), evs[0].properties.$insert_id), evs[0], { endpoint: 'import' });
        // ... and with strict=1 it gets the import JSON.
        const evs2 = [importEvent()];
        const r2 = await send({ method: 'POST', path: `/import?api_key=${SECRET}&strict=1`, headers: { 'Content-Type': FORM }, body: `data=${b64json(evs2)}` });
        assert.equal(r2.status, 200, r2.text);
        assert.deepStrictEqual(r2.json(), { code: 200, num_records_imported: 1, status: 'OK' });
        assertStored(oneByInsertId(records(), evs2[0].properties.$insert_id), evs2[0], { endpoint: 'import' });
    });

    for (const [what, headers, query] of [
        ['no credentials', {}, ''],
        ['a wrong secret', { Authorization: basic('not-the-secret') }, ''],
        ['a wrong api_key', {}, '?api_key=nope'],
        ['a malformed Authorization header', { Authorization: 'Basic %%%' }, ''],
    ]) {
        it(`${what}: 401 Invalid credentials and nothing stored`, async () => {
            const ev = importEvent();
            const r = await send({
                method: 'POST', path: `/import${query}`,
                headers: { 'Content-Type': 'application/json', ...headers },
                body: JSON.stringify([ev]),
            });
            assert.equal(r.status, 401, r.text);
            assert.deepStrictEqual(r.json(), { code: 401, error: 'Invalid credentials', status: 'Unauthorized' });
            assert.equal(byInsertId(records(), ev.properties.$insert_id).length, 0);
        });
    }

    it('bad records: 400 with failed_records (index, $insert_id, field), valid ones stored', async () => {
        const good1 = importEvent();
        const noTime = importEvent();
        delete noTime.properties.time;
        const tooOld = importEvent({ time: Date.UTC(1965, 0, 1) });
        const noInsertId = importEvent();
        delete noInsertId.properties.$insert_id;
        const good2 = importEvent();
        const noDistinct = importEvent();
        delete noDistinct.properties.distinct_id;
        const future = importEvent({ time: Date.now() + 3 * 3600 * 1000 });
        const batch = [good1, noTime, tooOld, noInsertId, good2, noDistinct, future];
        const r = await send({
            method: 'POST', path: '/import',
            headers: { 'Content-Type': 'application/json', Authorization: basic(SECRET) },
            body: JSON.stringify(batch),
        });
        assert.equal(r.status, 400, r.text);
        const j = r.json();
        assert.ok(Array.isArray(j.failed_records), `failed_records in ${r.text}`);
        const byIndex = new Map(j.failed_records.map((f) => [f.index, f]));
        assert.deepStrictEqual([...byIndex.keys()].sort(), [1, 2, 3, 5, 6], r.text);
        assert.equal(byIndex.get(1)['$insert_id'], noTime.properties.$insert_id);
        assert.equal(byIndex.get(1).field, 'properties.time');
        assert.equal(byIndex.get(2).field, 'properties.time');
        assert.equal(byIndex.get(6).field, 'properties.time');
        assert.equal(byIndex.get(5).field, 'properties.distinct_id');
        assert.equal(byIndex.get(3).field, 'properties.$insert_id');
        for (const f of j.failed_records) assert.ok(typeof f.message === 'string' && f.message.length > 0, JSON.stringify(f));
        const recs = records();
        for (const ev of [good1, good2]) assertStored(oneByInsertId(recs, ev.properties.$insert_id), ev, { endpoint: 'import' });
        for (const ev of [noTime, tooOld, noDistinct, future]) {
            assert.equal(byInsertId(recs, ev.properties.$insert_id).length, 0, `invalid ${JSON.stringify(ev)} stored`);
        }
    });
});

describe('flags', () => {
    it('verbose=1 in the query or the form body answers JSON', async () => {
        const a = trackEvent();
        const r1 = await send({ path: `/track?verbose=1&data=${encodeURIComponent(b64json(a))}` });
        assert.equal(r1.status, 200);
        assert.deepStrictEqual(r1.json(), { status: 1, error: null });
        const b = trackEvent();
        const r2 = await send({ method: 'POST', path: '/track', headers: { 'Content-Type': FORM }, body: `data=${encodeURIComponent(b64json(b))}&verbose=1` });
        assert.deepStrictEqual(r2.json(), { status: 1, error: null });
        const recs = records();
        oneByInsertId(recs, a.properties.$insert_id);
        oneByInsertId(recs, b.properties.$insert_id);
    });

    it('ip=1 records the peer address; ip=0 or absent does not; an event ip is kept', async () => {
        const a = trackEvent();
        const b = trackEvent();
        const c = trackEvent();
        const d = trackEvent({ ip: '192.0.2.55' });
        const e = trackEvent();
        assertOk(await send({ path: `/track?ip=1&data=${encodeURIComponent(b64json(a))}` }));
        assertOk(await send({ path: `/track?ip=0&data=${encodeURIComponent(b64json(b))}` }));
        assertOk(await send({ path: `/track?data=${encodeURIComponent(b64json(c))}` }));
        assertOk(await send({ path: `/track?ip=1&data=${encodeURIComponent(b64json(d))}` }));
        assertOk(await send({ method: 'POST', path: '/track', headers: { 'Content-Type': FORM }, body: `data=${b64json(e)}&ip=1` }));
        const recs = records();
        assertStored(oneByInsertId(recs, a.properties.$insert_id), a, { ip: '127.0.0.1' });
        assertStored(oneByInsertId(recs, b.properties.$insert_id), b);
        assertStored(oneByInsertId(recs, c.properties.$insert_id), c);
        assertStored(oneByInsertId(recs, d.properties.$insert_id), d);
        assertStored(oneByInsertId(recs, e.properties.$insert_id), e, { ip: '127.0.0.1' });
    });

    it('X-Forwarded-For / X-Real-IP are believed only from a trusted proxy', async () => {
        const viaProxyXff = trackEvent();
        const viaProxyReal = trackEvent();
        const untrustedXff = trackEvent();
        const untrustedReal = trackEvent();
        const q = (ev) => `/track?ip=1&data=${encodeURIComponent(b64json(ev))}`;
        assertOk(await send({ path: q(viaProxyXff), localAddress: TRUSTED_PROXY, headers: { 'X-Forwarded-For': '203.0.113.7' } }), 'trusted xff');
        assertOk(await send({ path: q(viaProxyReal), localAddress: TRUSTED_PROXY, headers: { 'X-Real-IP': '203.0.113.8' } }), 'trusted x-real-ip');
        assertOk(await send({ path: q(untrustedXff), headers: { 'X-Forwarded-For': '203.0.113.9' } }), 'untrusted xff');
        assertOk(await send({ path: q(untrustedReal), headers: { 'X-Real-IP': '203.0.113.10' } }), 'untrusted x-real-ip');
        const recs = records();
        assertStored(oneByInsertId(recs, viaProxyXff.properties.$insert_id), viaProxyXff, { ip: '203.0.113.7' });
        assertStored(oneByInsertId(recs, viaProxyReal.properties.$insert_id), viaProxyReal, { ip: '203.0.113.8' });
        assertStored(oneByInsertId(recs, untrustedXff.properties.$insert_id), untrustedXff, { ip: '127.0.0.1' });
        assertStored(oneByInsertId(recs, untrustedReal.properties.$insert_id), untrustedReal, { ip: '127.0.0.1' });
    });

    it('over IPv6: ip=1 records ::1; a trusted IPv6 proxy network passes X-Forwarded-For', async () => {
        const v6 = await startTrackd({ host: '::1', args: ['--trusted-proxy', '::1/128'] });
        try {
            const a = trackEvent();
            const b = trackEvent();
            const q = (ev) => `/track?ip=1&data=${encodeURIComponent(b64json(ev))}`;
            assertOk(await request(v6.port, { host: '::1', path: q(a) }), 'v6 plain');
            assertOk(await request(v6.port, { host: '::1', path: q(b), headers: { 'X-Forwarded-For': '2001:db8::7' } }), 'v6 via proxy');
            await v6.stop();
            const recs = readRecords(v6.dataDir);
            assertStored(oneByInsertId(recs, a.properties.$insert_id), a, { ip: '::1' });
            assertStored(oneByInsertId(recs, b.properties.$insert_id), b, { ip: '2001:db8::7' });
        } finally {
            if (!v6.exited) await v6.kill();
        }
    });

    it('GET ?data= with base64 not escaped at all (a raw + read as a space) is decoded', async () => {
        const ev = eventWithPlusAndSlash();
        const r = await send({ path: `/track?data=${b64json(ev).replace(/=/g, '%3D')}` });
        assertOk(r, 'raw base64 in the query');
        assertStored(oneByInsertId(records(), ev.properties.$insert_id), ev);
    });

    it('callback=NAME answers JSONP (text/javascript), plain and verbose', async () => {
        const a = trackEvent();
        const r = await send({ path: `/track?callback=mp_cb.fn_1$&data=${encodeURIComponent(b64json(a))}` });
        assert.equal(r.status, 200);
        assert.match(r.headers['content-type'] || '', /^text\/javascript/);
        assert.equal(r.text, 'mp_cb.fn_1$(1)');
        const b = trackEvent();
        const rv = await send({ method: 'POST', path: '/track', headers: { 'Content-Type': FORM }, body: `data=${b64json(b)}&callback=cb&verbose=1` });
        assert.equal(rv.status, 200);
        assert.match(rv.headers['content-type'] || '', /^text\/javascript/);
        const m = /^cb\((.*)\)$/s.exec(rv.text);
        assert.ok(m, `verbose JSONP body ${rv.text}`);
        assert.deepStrictEqual(JSON.parse(m[1]), { status: 1, error: null });
        const long = '_' + 'a'.repeat(127);
        const rl = await send({ path: `/track?callback=${long}&data=${encodeURIComponent(b64json(trackEvent()))}` });
        assert.equal(rl.status, 200, 'a 128-character name is fine');
        assert.equal(rl.text, `${long}(1)`);
    });

    for (const bad of ['1abc', 'a-b', 'alert(1)', 'a%20b', '%3Cscript%3E', '_' + 'a'.repeat(128), 'x%00', 'x;y']) {
        it(`callback=${bad.length > 20 ? bad.slice(0, 12) + '...(' + bad.length + ')' : bad} is refused with 400`, async () => {
            const r = await send({ path: `/track?callback=${bad}&data=${encodeURIComponent(b64json(trackEvent()))}` });
            assert.equal(r.status, 400, `status ${r.status} body ${r.text}`);
            assert.doesNotMatch(r.headers['content-type'] || '', /javascript/, 'a refused callback is not answered as script');
        });
    }

    it('img=1 answers a 1x1 GIF', async () => {
        const ev = trackEvent();
        const r = await send({ path: `/track?img=1&data=${encodeURIComponent(b64json(ev))}` });
        assert.equal(r.status, 200);
        assert.match(r.headers['content-type'] || '', /^image\/gif/);
        assert.ok(/^GIF8[79]a$/.test(r.body.subarray(0, 6).toString('latin1')), 'GIF signature');
        assert.equal(r.body.readUInt16LE(6), 1, 'width');
        assert.equal(r.body.readUInt16LE(8), 1, 'height');
        assert.equal(r.body[r.body.length - 1], 0x3b, 'GIF trailer');
        oneByInsertId(records(), ev.properties.$insert_id);
    });

    it('img=1 and redirect= work from the form body too', async () => {
        const a = trackEvent();
        const ri = await send({ method: 'POST', path: '/track', headers: { 'Content-Type': FORM }, body: `data=${b64json(a)}&img=1` });
        assert.equal(ri.status, 200);
        assert.match(ri.headers['content-type'] || '', /^image\/gif/);
        const b = trackEvent();
        const to = `http://${REDIRECT_HOST}/done`;
        const rr = await send({ method: 'POST', path: '/track', headers: { 'Content-Type': FORM }, body: `redirect=${encodeURIComponent(to)}&data=${b64json(b)}` });
        assert.equal(rr.status, 302);
        assert.equal(rr.headers.location, to);
        const recs = records();
        oneByInsertId(recs, a.properties.$insert_id);
        oneByInsertId(recs, b.properties.$insert_id);
    });

    it('redirect= to an allow-listed host: 302 with that Location, event stored', async () => {
        const ev = trackEvent();
        const to = `https://${REDIRECT_HOST}/thanks?x=1`;
        const r = await send({ path: `/track?redirect=${encodeURIComponent(to)}&data=${encodeURIComponent(b64json(ev))}` });
        assert.equal(r.status, 302, r.text);
        assert.equal(r.headers.location, to);
        oneByInsertId(records(), ev.properties.$insert_id);
    });

    for (const to of ['https://evil.test/', `https://${REDIRECT_HOST}.evil.test/`, `https://evil.test/?${REDIRECT_HOST}`, `//evil.test/`, 'javascript:alert(1)', `https://user@evil.test/`, `https://evil.test\\@${REDIRECT_HOST}/`]) {
        it(`redirect=${to} (not allow-listed) is ignored`, async () => {
            const ev = trackEvent();
            const r = await send({ path: `/track?redirect=${encodeURIComponent(to)}&data=${encodeURIComponent(b64json(ev))}` });
            assertOk(r, `redirect ${to}`);
            assert.equal(r.headers.location, undefined);
            oneByInsertId(records(), ev.properties.$insert_id);
        });
    }

    for (const where of ['form body', 'query']) it(`strict=1 (in the ${where}) on /track: 400 with failed_records, the valid events stored`, async () => {
        const good = trackEvent();
        const bad = trackEvent();
        delete bad.event;
        const good2 = trackEvent();
        const data = `data=${encodeURIComponent(JSON.stringify([good, bad, good2]))}`;
        const r = where === 'query'
            ? await send({ method: 'POST', path: '/track?strict=1', headers: { 'Content-Type': FORM }, body: data })
            : await send({ method: 'POST', path: '/track', headers: { 'Content-Type': FORM }, body: `${data}&strict=1` });
        assert.equal(r.status, 400, r.text);
        const j = r.json();
        assert.ok(Array.isArray(j.failed_records), r.text);
        assert.equal(j.failed_records.length, 1, r.text);
        assert.equal(j.failed_records[0].index, 1);
        assert.equal(j.failed_records[0].$insert_id, bad.properties.$insert_id);
        const recs = records();
        oneByInsertId(recs, good.properties.$insert_id);
        oneByInsertId(recs, good2.properties.$insert_id);
        assert.equal(byInsertId(recs, bad.properties.$insert_id).length, 0);
    });
});

describe('validation (server without a token allow-list)', () => {
    // Its own server: with an allow-list, a missing or non-string token could also read as
    // "not on the list" (401); without one it can only be an invalid event.
    let open;
    before(async () => {
        open = await startTrackd();
    });
    after(async () => {
        if (!open) return;
        await open.stop();
        assertVerifies(open.dataDir);
    });
    const send = (opts) => request(open.port, { timeout: slow(10000), ...opts });
    const records = () => readRecords(open.dataDir);

    /** Send a batch verbosely; returns the response. */
    function sendBatch(evs, query = 'verbose=1') {
        return send({
            method: 'POST', path: `/track?${query}`,
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify(evs),
        });
    }

    const invalid = {
        'missing event name': () => { const e = trackEvent(); delete e.event; return e; },
        'empty event name': () => trackEvent({}, ''),
        'event name not a string': () => { const e = trackEvent(); e.event = 42; return e; },
        'missing token': () => { const e = trackEvent(); delete e.properties.token; return e; },
        'token not a string': () => trackEvent({ token: 12345 }),
        'time older than 5 days': () => trackEvent({ time: Math.floor(Date.now() / 1000) - 6 * 86400 }),
        'time not a number': () => trackEvent({ time: 'yesterday' }),
        '$insert_id of 37 bytes': () => trackEvent({ $insert_id: 'a'.repeat(37) }),
        '$insert_id with an underscore': () => trackEvent({ $insert_id: 'abc_def' }),
        '$insert_id with a space': () => trackEvent({ $insert_id: 'abc def' }),
        'properties not an object': () => ({ event: 'x', properties: 'nope' }),
        'event not an object': () => 'just a string',
        '255 properties': () => {
            const e = trackEvent();
            for (let i = 0; Object.keys(e.properties).length < 255; i++) e.properties[`p${i}`] = i;
            return e;
        },
        'an array of 255 elements': () => trackEvent({ list: Array.from({ length: 255 }, (_, i) => i) }),
        'a nested object of 255 keys': () => trackEvent({ obj: Object.fromEntries(Array.from({ length: 255 }, (_, i) => [`k${i}`, i])) }),
        'nesting 6 objects deep': () => trackEvent({ a: { b: { c: { d: { e: { f: 1 } } } } } }),
    };

    for (const [what, make] of Object.entries(invalid)) {
        it(`invalid event (${what}) is not stored; the valid ones of its batch are`, async () => {
            const bad = make();
            const good = trackEvent();
            const r = await sendBatch([good, bad]);
            assert.equal(r.status, 200, r.text);
            verboseBody(r, 1);
            const alone = await sendBatch([bad]);
            assert.equal(alone.status, 200, alone.text);
            verboseBody(alone, 0);
            const plain = await send({ method: 'POST', path: '/track', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(bad) });
            if (bad !== null && typeof bad === 'object') {
                assert.equal(plain.status, 200);
                assert.equal(plain.text, '0');
            } else {
                // Sent alone, it is a body that is neither an object nor an array: 400.
                assert.equal(plain.status, 400);
            }
            const recs = records();
            oneByInsertId(recs, good.properties.$insert_id);
            if (bad && bad.properties && typeof bad.properties.$insert_id === 'string') {
                assert.equal(byInsertId(recs, bad.properties.$insert_id).length, 0, 'invalid event stored');
            }
        });
    }

    it('a partly invalid batch: verbose answers status 1 and says why the others were refused', async () => {
        const good = trackEvent();
        const bad = trackEvent({ $insert_id: 'not_valid' });
        const r = await sendBatch([good, bad]);
        assert.equal(r.status, 200, r.text);
        const j = verboseBody(r, 1);
        assert.ok(typeof j.error === 'string' && j.error.length > 0, `verbose error text for a partly invalid batch: ${r.text}`);
        oneByInsertId(records(), good.properties.$insert_id);
    });

    const valid = {
        'time in milliseconds': () => trackEvent({ time: Date.now() - 60000 }),
        'time in whole seconds': () => trackEvent({ time: Math.floor(Date.now() / 1000) - 3600 }),
        'time 4 days ago': () => trackEvent({ time: Math.floor(Date.now() / 1000) - 4 * 86400 }),
        'no time at all': () => { const e = trackEvent(); delete e.properties.time; return e; },
        '$insert_id of 36 bytes': () => trackEvent({ $insert_id: `${insertId()}${'Z'.repeat(36)}`.slice(0, 36) }),
        '254 properties': () => {
            const e = trackEvent();
            for (let i = 0; Object.keys(e.properties).length < 254; i++) e.properties[`p${i}`] = i;
            return e;
        },
        'an array of 254 elements': () => trackEvent({ list: Array.from({ length: 254 }, (_, i) => `v${i}`) }),
        'a nested object of 254 keys': () => trackEvent({ obj: Object.fromEntries(Array.from({ length: 254 }, (_, i) => [`k${i}`, i])) }),
        'one nested object': () => trackEvent({ a: { b: 1, c: 'x', d: [1, 2] } }),
        'unicode and escapes': () => trackEvent({ s: 'é 中文 😀 "quoted" \\ \n\t \u0001' }),
        'numbers of all kinds': () => trackEvent({ i: -12, f: 0.5, big: 9007199254740991, e: 1.5e-7, z: 0, t: true, n: null }),
    };

    for (const [what, make] of Object.entries(valid)) {
        it(`valid event (${what}) is stored exactly`, async () => {
            const ev = make();
            const r = await sendBatch([ev]);
            assert.equal(r.status, 200, r.text);
            verboseBody(r, 1);
            assertStored(oneByInsertId(records(), ev.properties.$insert_id), ev, { endpoint: 'track' });
        });
    }

    it('a time in the future is clamped to the receive time', async () => {
        const ev = trackEvent({ time: Math.floor(Date.now() / 1000) + 86400 });
        const t0 = Date.now();
        const r = await sendBatch([ev]);
        verboseBody(r, 1);
        const rec = oneByInsertId(records(), ev.properties.$insert_id);
        const t = rec.properties.time;
        const ms = t > 1e11 ? t : t * 1000;
        assert.ok(ms >= t0 - 2000 && ms <= Date.now() + 2000, `stored time ${t} not clamped to now`);
    });

    it('an event of 1 MB or more is invalid; the rest of its batch is stored', async () => {
        const big = trackEvent({ blob: 'b'.repeat(1000000) });
        const good = trackEvent();
        const r = await sendBatch([big, good]);
        assert.equal(r.status, 200, r.text);
        verboseBody(r, 1);
        const recs = records();
        oneByInsertId(recs, good.properties.$insert_id);
        assert.equal(byInsertId(recs, big.properties.$insert_id).length, 0);
        const under = trackEvent({ blob: 'u'.repeat(900000) });
        const r2 = await sendBatch([under]);
        verboseBody(r2, 1);
        assertStored(oneByInsertId(records(), under.properties.$insert_id), under);
    });

    it('2000 events in one request are all stored; 2001 get 413 and none is stored', async () => {
        const mk = (n) => Array.from({ length: n }, () => ({ event: 'e', properties: { token: TOKEN, $insert_id: insertId() } }));
        const ok = mk(2000);
        const r = await sendBatch(ok);
        assert.equal(r.status, 200, r.text);
        verboseBody(r, 1);
        const tooMany = mk(2001);
        const r2 = await sendBatch(tooMany);
        assert.equal(r2.status, 413, r2.text);
        const ids = new Map();
        for (const rec of records()) {
            const id = rec.properties && rec.properties.$insert_id;
            if (id) ids.set(id, (ids.get(id) || 0) + 1);
        }
        for (const ev of ok) assert.equal(ids.get(ev.properties.$insert_id), 1, `${ev.properties.$insert_id} of the 2000`);
        for (const ev of tooMany) assert.equal(ids.get(ev.properties.$insert_id), undefined, 'an event of the 2001 was stored');
    });

    it('data missing or empty: status 0 with a reason', async () => {
        for (const req of [
            { path: '/track?verbose=1' },
            { path: '/track?verbose=1&data=' },
            { method: 'POST', path: '/track?verbose=1', headers: { 'Content-Type': FORM }, body: 'data=' },
            { method: 'POST', path: '/track?verbose=1', headers: { 'Content-Type': FORM }, body: '' },
            { method: 'POST', path: '/track?verbose=1', headers: { 'Content-Type': 'application/json' }, body: '[]' },
            { path: `/track?verbose=1&data=${encodeURIComponent(b64json([]))}` },
        ]) {
            const r = await send(req);
            assert.ok(r.status === 200 || r.status === 400, `${JSON.stringify(req)}: status ${r.status}`);
            verboseBody(r, 0);
        }
    });
});

describe('tokens', () => {
    it('an unknown token gets 401 and nothing of the request is stored', async () => {
        const good = trackEvent();
        const bad = trackEvent({ token: 'not-on-the-list' });
        const r = await send({ method: 'POST', path: '/track', headers: { 'Content-Type': FORM }, body: `data=${encodeURIComponent(b64json([good, bad]))}` });
        assert.equal(r.status, 401, r.text);
        const r2 = await send({ path: `/track?data=${encodeURIComponent(b64json(trackEvent({ token: 'nope' })))}` });
        assert.equal(r2.status, 401, r2.text);
        const recs = records();
        assert.equal(byInsertId(recs, good.properties.$insert_id).length, 0, 'nothing of a 401 batch is stored');
        assert.equal(byInsertId(recs, bad.properties.$insert_id).length, 0);
    });

    it('/engage and /groups with an unknown $token get 401 and store nothing', async () => {
        const e = engageUpdate({ $token: 'not-on-the-list' });
        const g = groupUpdate({ $token: 'not-on-the-list' });
        const r1 = await send({ path: `/engage?data=${encodeURIComponent(b64json(e))}` });
        const r2 = await send({ path: `/groups?data=${encodeURIComponent(b64json(g))}` });
        assert.equal(r1.status, 401, r1.text);
        assert.equal(r2.status, 401, r2.text);
        const recs = records();
        assert.equal(byProfileId(recs, e.$distinct_id).length, 0);
        assert.equal(byProfileId(recs, g.$group_id).length, 0);
    });
});

describe('CORS and cache headers', () => {
    const origin = 'https://shop.example.org';

    it('a request with Origin gets it echoed with credentials and Vary: Origin', async () => {
        const ev = trackEvent();
        const r = await send({
            method: 'POST', path: '/track/',
            headers: { 'Content-Type': FORM, Origin: origin },
            body: `data=${encodeURIComponent(b64json(ev))}`,
        });
        assertOk(r);
        assert.equal(r.headers['access-control-allow-origin'], origin);
        assert.equal(r.headers['access-control-allow-credentials'], 'true');
        assert.ok(/(^|,\s*)Origin(\s*,|$)/i.test(r.headers.vary || ''), `Vary: ${r.headers.vary}`);
        oneByInsertId(records(), ev.properties.$insert_id);
    });

    it('OPTIONS preflight: 204, origin echoed, methods, requested headers echoed, Max-Age', async () => {
        for (const path of ['/track/', '/engage', '/groups/', '/import']) {
            const r = await send({
                method: 'OPTIONS', path,
                headers: {
                    Origin: origin,
                    'Access-Control-Request-Method': 'POST',
                    'Access-Control-Request-Headers': 'content-type,x-custom-header',
                },
            });
            assert.equal(r.status, 204, `${path}: ${r.status} ${r.text}`);
            assert.equal(r.body.length, 0);
            assert.equal(r.headers['access-control-allow-origin'], origin);
            assert.equal(r.headers['access-control-allow-credentials'], 'true');
            assert.equal(r.headers['access-control-allow-methods'], 'GET, POST, OPTIONS');
            assert.equal((r.headers['access-control-allow-headers'] || '').toLowerCase().replace(/\s+/g, ''), 'content-type,x-custom-header');
            assert.equal(r.headers['access-control-max-age'], String(CORS_MAX_AGE));
            assert.ok(/(^|,\s*)Origin(\s*,|$)/i.test(r.headers.vary || ''), `Vary: ${r.headers.vary}`);
        }
    });

    it('error answers carry the CORS and cache headers too (the browser must read them)', async () => {
        const r = await send({ path: '/track?verbose=1&data=%21%21%21', headers: { Origin: origin } });
        assert.equal(r.status, 400);
        assert.equal(r.headers['access-control-allow-origin'], origin);
        assert.equal(r.headers['cache-control'], 'no-cache, no-store');
    });

    it('every answer says Cache-Control: no-cache, no-store', async () => {
        const ev = trackEvent();
        for (const req of [
            { path: `/track?data=${encodeURIComponent(b64json(ev))}` },
            { path: `/track?img=1&data=${encodeURIComponent(b64json(trackEvent()))}` },
            { path: `/track?callback=cb&data=${encodeURIComponent(b64json(trackEvent()))}` },
            { path: `/engage?verbose=1&data=${encodeURIComponent(b64json(engageUpdate()))}` },
        ]) {
            const r = await send(req);
            assert.equal(r.status, 200, `${req.path}: ${r.text}`);
            assert.equal(r.headers['cache-control'], 'no-cache, no-store', req.path);
        }
    });
});

describe('concurrency', () => {
    it('32 connections sending at once: every event stored exactly once', async () => {
        const sent = [];
        await Promise.all(Array.from({ length: 32 }, async (_, n) => {
            const c = await RawConn.open(srv.port);
            try {
                for (let i = 0; i < 8; i++) {
                    const evs = [trackEvent({ n, i }), trackEvent({ n, i, second: true })];
                    sent.push(...evs);
                    await c.write(buildRequest({ method: 'POST', path: '/track', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(evs) }));
                    assertOk(await c.response({ timeout: slow(10000) }), `connection ${n} request ${i}`);
                }
            } finally {
                c.close();
            }
        }));
        const recs = records();
        for (const ev of sent) assertStored(oneByInsertId(recs, ev.properties.$insert_id), ev);
    });
});

describe('keep-alive', () => {
    it('one connection carries many requests of every shape', async () => {
        const c = await RawConn.open(srv.port);
        const sent = [];
        try {
            for (let i = 0; i < 12; i++) {
                const ev = trackEvent({ i });
                sent.push(ev);
                const req = i % 3 === 0
                    ? buildRequest({ path: `/track?data=${encodeURIComponent(b64json(ev))}` })
                    : i % 3 === 1
                        ? buildRequest({ method: 'POST', path: '/track/', headers: { 'Content-Type': FORM }, body: `data=${b64json(ev)}` })
                        : buildRequest({ method: 'POST', path: '/track', headers: { 'Content-Type': 'application/json', 'Content-Encoding': 'gzip' }, body: zlib.gzipSync(JSON.stringify(ev)) });
                await c.write(req);
                assertOk(await c.response({ timeout: slow(5000) }), `request ${i}`);
                assert.equal(c.ended, false, 'server closed a keep-alive connection');
            }
        } finally {
            c.close();
        }
        const recs = records();
        for (const ev of sent) assertStored(oneByInsertId(recs, ev.properties.$insert_id), ev);
    });
});

it('a time given as seconds with a fraction is kept as sent', async () => {
    const ev = trackEvent({ time: nowSeconds() - 0.123 });
    assertOk(await send({ path: `/track?data=${encodeURIComponent(b64json(ev))}` }));
    assertStored(oneByInsertId(records(), ev.properties.$insert_id), ev);
});

// Last in the file: nothing above crashed the worker (a restarted worker would hide it).
it('the worker that served all of the above is the one that started', () => {
    assert.deepStrictEqual(srv.workerPids(), workersAtStart);
    srv.assertClean();
});
