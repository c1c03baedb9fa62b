// HTTP/1.1 conformance where it matters for a server behind proxies and in front of hostile
// clients: every framing a proxy and trackd could read differently is refused (400, connection
// closed), and no request is ever interpreted two ways. Each smuggling case hides a complete
// second request inside what one reading calls the body; the test counts the answers (exactly
// one, the 400) and the stored events (neither the outer nor the smuggled one). Then the
// request-target forms (RFC 9112 3.2), long and many headers, pipelining split at every byte, and
// reflection: no callback, Origin, requested header or redirect target can put bytes of the
// attacker's choosing where they break out of their place in an answer.
//
// errors.test.mjs covers the plain statuses of many malformed requests; this file adds the
// two-readings view and the cases it does not have.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { b64json, byInsertId, insertId, oneByInsertId, trackEvent, engageUpdate } from './lib/events.mjs';
import { RawConn, buildRequest } from './lib/http.mjs';
import { readRecords, slow, startTrackd } from './lib/trackd.mjs';

const FORM = 'application/x-www-form-urlencoded';

let srv;

before(async () => {
    srv = await startTrackd({ durability: 'write', args: ['--redirect-host', 'ok.example'] });
});

after(async () => {
    if (srv) await srv.stop();
});

/**
 * Write `bytes` on a new connection and collect every answer until the server closes, stays
 * silent for `idleMs`, or `count` answers came. Returns {responses, closed}; `closed` is waited
 * for only after an error answer (the server closes then; a keep-alive one stays open).
 */
async function converse(bytes, { idleMs = slow(600), count = Infinity } = {}) {
    const c = await RawConn.open(srv.port);
    const responses = [];
    try {
        try {
            await c.write(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes, 'latin1'));
        } catch {
            /* the server may answer and close before everything is written */
        }
        while (responses.length < count) {
            try {
                responses.push(await c.response({ timeout: idleMs }));
            } catch {
                break; // silence or close
            }
        }
        // After an error the server closes; wait for it unless the caller only wants answers.
        const failed = responses.some((r) => r.status >= 400) && count === Infinity;
        return { responses, closed: await c.waitClosed(failed ? slow(2500) : 20) };
    } finally {
        c.close();
    }
}

/** Every header line of every answer is a token, ": ", and printable ASCII: nothing broke out. */
function assertCleanHeaders(r, what) {
    for (const [name, value] of r.rawHeaders) {
        assert.match(name, /^[a-z0-9-]+$/, `${what}: header name ${JSON.stringify(name)}`);
        assert.match(value, /^[\x20-\x7e]*$/, `${what}: header ${name} value ${JSON.stringify(value)}`);
    }
    assert.equal(r.headers['set-cookie'], undefined, `${what}: a Set-Cookie was injected`);
}

const evData = (ev) => encodeURIComponent(b64json(ev));

/** A complete GET /track request for `ev` (the smuggled one). */
function smuggledGet(ev) {
    return `GET /track?data=${evData(ev)} HTTP/1.1\r\nHost: x\r\n\r\n`;
}

/** Assert: exactly one answer, with `status`, then the connection closed; none of `evs` stored. */
async function assertOneReading(bytes, status, evs, what) {
    const { responses, closed } = await converse(bytes);
    assert.equal(responses.length, 1, `${what}: ${responses.length} answers (${responses.map((r) => r.status)})`);
    assert.equal(responses[0].status, status, `${what}: ${responses[0].status} ${responses[0].text}`);
    assert.ok(closed, `${what}: connection left open after ${status}`);
    assertCleanHeaders(responses[0], what);
    const recs = readRecords(srv.dataDir);
    for (const ev of evs) {
        assert.equal(byInsertId(recs, ev.properties.$insert_id).length, 0, `${what}: an event was stored`);
    }
}

describe('smuggling: one reading only, or none', () => {
    const cases = {
        'Content-Length covering a chunked body that ends early (TE.CL)': (outer, smug) => {
            const body = `0\r\n\r\n${smuggledGet(smug)}`;
            return `POST /track?data=${evData(outer)} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n\r\n${body}`;
        },
        'Transfer-Encoding before a short Content-Length (CL.TE)': (outer, smug) => {
            const form = `data=${evData(outer)}`;
            const chunked = `${form.length.toString(16)}\r\n${form}\r\n0\r\n\r\n`;
            return `POST /track HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\nContent-Type: ${FORM}\r\n\r\n${chunked}${smuggledGet(smug)}`;
        },
        'two different Content-Length headers': (outer, smug) => {
            const form = `data=${evData(outer)}`;
            return `POST /track HTTP/1.1\r\nHost: x\r\nContent-Type: ${FORM}\r\nContent-Length: ${form.length}\r\nContent-Length: ${form.length + smuggledGet(smug).length}\r\n\r\n${form}${smuggledGet(smug)}`;
        },
        'Transfer-Encoding: chunked, identity (not ending in chunked)': (outer, smug) =>
            `POST /track?data=${evData(outer)} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n${smuggledGet(smug)}`,
        'Transfer-Encoding: gzip, chunked (a coding trackd does not do)': (outer, smug) =>
            `POST /track?data=${evData(outer)} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n${smuggledGet(smug)}`,
        'Transfer-Encoding on two lines': (outer, smug) =>
            `POST /track?data=${evData(outer)} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n${smuggledGet(smug)}`,
        'Transfer-Encoding: xchunked': (outer, smug) =>
            `POST /track?data=${evData(outer)} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${smuggledGet(smug)}`,
        'Transfer-Encoding hidden in an obs-fold': (outer, smug) =>
            `POST /track?data=${evData(outer)} HTTP/1.1\r\nHost: x\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggledGet(smug)}`,
        'Content-Length continued by an obs-fold': (outer, smug) =>
            `POST /track?data=${evData(outer)} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n ${smuggledGet(smug).length}\r\n\r\n${smuggledGet(smug)}`,
        'a bare LF ending the Content-Length line': (outer, smug) =>
            `GET /track?data=${evData(outer)} HTTP/1.1\r\nHost: x\nContent-Length: ${smuggledGet(smug).length}\r\n\r\n${smuggledGet(smug)}`,
        'a bare CR inside a header value': (outer, smug) =>
            `GET /track?data=${evData(outer)} HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: ${smuggledGet(smug).length}\r\n\r\n${smuggledGet(smug)}`,
        'chunk data not followed by CRLF': (outer, smug) =>
            `POST /track?data=${evData(outer)} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n${smuggledGet(smug)}`,
        'a chunk longer than its size': (outer, smug) =>
            `POST /track?data=${evData(outer)} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n${smuggledGet(smug)}`,
        'a chunked body on HTTP/1.0': (outer, smug) =>
            `POST /track?data=${evData(outer)} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggledGet(smug)}`,
        'a Content-Length with a sign': (outer, smug) =>
            `POST /track?data=${evData(outer)} HTTP/1.1\r\nHost: x\r\nContent-Length: +${smuggledGet(smug).length}\r\n\r\n${smuggledGet(smug)}`,
        'a Content-Length list': (outer, smug) =>
            `POST /track?data=${evData(outer)} HTTP/1.1\r\nHost: x\r\nContent-Length: 0, ${smuggledGet(smug).length}\r\n\r\n${smuggledGet(smug)}`,
    };
    for (const size of ['0x3', '-3', '3 ', '+3', ' 3', '3\n', '1ffffffffffffffff0']) {
        cases[`chunk size ${JSON.stringify(size)}`] = (outer, smug) =>
            `POST /track?data=${evData(outer)} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${size}\r\nabc\r\n0\r\n\r\n${smuggledGet(smug)}`;
    }
    for (const [what, make] of Object.entries(cases)) {
        it(`${what}: one 400, closed, nothing stored`, async () => {
            const outer = trackEvent();
            const smug = trackEvent();
            await assertOneReading(make(outer, smug), 400, [outer, smug], what);
        });
    }

    it('Transfer-Encoding: CHUNKED and with blanks is chunked (codings are case-insensitive)', async () => {
        const evs = [trackEvent(), trackEvent()];
        for (const [ev, te] of [[evs[0], 'CHUNKED'], [evs[1], '\t chunked ']]) {
            const form = `data=${evData(ev)}`;
            const { responses } = await converse(
                `POST /track HTTP/1.1\r\nHost: x\r\nContent-Type: ${FORM}\r\nTransfer-Encoding: ${te}\r\n\r\n${form.length.toString(16)}\r\n${form}\r\n0\r\n\r\n`,
                { count: 1 },
            );
            assert.equal(responses.length, 1);
            assert.equal(responses[0].status, 200, `${te}: ${responses[0].text}`);
        }
        const recs = readRecords(srv.dataDir);
        for (const ev of evs) oneByInsertId(recs, ev.properties.$insert_id);
    });

    it('a request behind a complete chunked body is a second request, answered once', async () => {
        const first = trackEvent();
        const second = trackEvent();
        const form = `data=${evData(first)}`;
        const { responses } = await converse(
            `POST /track?callback=one HTTP/1.1\r\nHost: x\r\nContent-Type: ${FORM}\r\nTransfer-Encoding: chunked\r\n\r\n${form.length.toString(16)};ext=1\r\n${form}\r\n0\r\nTrailer-A: x\r\n\r\n` +
                `GET /track?callback=two&data=${evData(second)} HTTP/1.1\r\nHost: x\r\n\r\n`,
        );
        assert.deepStrictEqual(responses.map((r) => r.text), ['one(1)', 'two(1)']);
        const recs = readRecords(srv.dataDir);
        oneByInsertId(recs, first.properties.$insert_id);
        oneByInsertId(recs, second.properties.$insert_id);
    });
});

describe('header bytes', () => {
    const bad = {
        'NUL in a value': 'a\u0000b',
        'SOH in a value': 'a\u0001b',
        'vertical tab in a value': 'a\u000bb',
        'form feed in a value': 'a\u000cb',
        'DEL in a value': 'a\u007fb',
        'ESC in a value': 'a\u001b[31mb',
    };
    for (const [what, value] of Object.entries(bad)) {
        it(`${what} -> 400, closed, the request not handled`, async () => {
            const ev = trackEvent();
            await assertOneReading(`GET /track?data=${evData(ev)} HTTP/1.1\r\nHost: x\r\nX-Bad: ${value}\r\n\r\n`, 400, [ev], what);
        });
    }
    for (const [what, line] of [
        ['a control character in a header name', 'X-B\u0001ad: v'],
        ['a space inside a header name', 'X Bad: v'],
        ['an empty header name', ': v'],
        ['a header line without a colon', 'X-No-Colon'],
    ]) {
        it(`${what} -> 400, closed`, async () => {
            const ev = trackEvent();
            await assertOneReading(`GET /track?data=${evData(ev)} HTTP/1.1\r\nHost: x\r\n${line}\r\n\r\n`, 400, [ev], what);
        });
    }
    it('a tab and bytes >= 0x80 in a value are allowed (field-vchar, obs-text)', async () => {
        const ev = trackEvent();
        const { responses } = await converse(Buffer.concat([
            Buffer.from(`GET /track?data=${evData(ev)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Tab: a\tb\r\nX-Latin: `, 'latin1'),
            Buffer.from([0xe9, 0xff]),
            Buffer.from('\r\n\r\n'),
        ]));
        assert.equal(responses.length, 1);
        assert.equal(responses[0].status, 200);
        oneByInsertId(readRecords(srv.dataDir), ev.properties.$insert_id);
    });
    it('HTTP/0.9 (no version) -> 400 and HTTP/2.0 on a 1.1 connection -> 505', async () => {
        await assertOneReading(`GET /track?data=${evData(trackEvent())}\r\n\r\n`, 400, [], 'HTTP/0.9');
        await assertOneReading('GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n', 505, [], 'HTTP/2.0');
    });
});

describe('request targets (RFC 9112 3.2): origin-form and http(s) absolute-form only', () => {
    it('absolute-form http and https URIs are served by their path, whatever Host says', async () => {
        const evs = [trackEvent(), trackEvent(), trackEvent(), trackEvent()];
        const targets = [
            `http://example.com/track?data=${evData(evs[0])}`,
            `https://example.com:8443/track/?data=${evData(evs[1])}`,
            `HTTP://EXAMPLE.COM/track?data=${evData(evs[2])}`,
        ];
        for (const t of targets) {
            const { responses } = await converse(`GET ${t} HTTP/1.1\r\nHost: other.example\r\n\r\n`, { count: 1 });
            assert.equal(responses.length, 1, t);
            assert.equal(responses[0].status, 200, `${t}: ${responses[0].text}`);
            assert.equal(responses[0].text, '1');
        }
        // HTTP/1.0 needs no Host at all.
        const { responses } = await converse(`GET http://example.com/track?data=${evData(evs[3])} HTTP/1.0\r\n\r\n`);
        assert.equal(responses[0].status, 200);
        const recs = readRecords(srv.dataDir);
        for (const ev of evs) oneByInsertId(recs, ev.properties.$insert_id);
    });
    it('an absolute-form URI without a path is the path /', async () => {
        const { responses } = await converse(`GET http://example.com?data=${evData(trackEvent())} HTTP/1.1\r\nHost: x\r\n\r\n`, { count: 1 });
        assert.equal(responses[0].status, 404);
    });
    for (const [what, line] of [
        ['another scheme', `GET ftp://example.com/track?data=x HTTP/1.1`],
        ['asterisk-form', 'OPTIONS * HTTP/1.1'],
        ['authority-form (CONNECT)', 'CONNECT example.com:443 HTTP/1.1'],
        ['a relative path', 'GET track?data=x HTTP/1.1'],
    ]) {
        it(`${what} -> 400, closed`, async () => {
            await assertOneReading(`${line}\r\nHost: example.com\r\n\r\n`, 400, [], what);
        });
    }
});

describe('size of the head', () => {
    it('one header line longer than max_header_bytes -> 431 before the line ends', async () => {
        const c = await RawConn.open(srv.port);
        try {
            await c.write(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: `);
            let sent = 0;
            // Up to 1 MiB, in pieces: the answer must come long before the line would end.
            while (sent < 1 << 20 && c.pending().length === 0 && !c.ended) {
                try {
                    await c.write('v'.repeat(4096));
                } catch {
                    break;
                }
                sent += 4096;
                await new Promise((r) => setTimeout(r, 1)); // let the answer in (write callbacks alone never poll)
            }
            const r = await c.response({ timeout: slow(3000) });
            assert.equal(r.status, 431);
            assert.ok(sent < 64 * 1024, `answered after ${sent} bytes of the line`);
            assert.ok(await c.waitClosed(slow(3000)));
        } finally {
            c.close();
        }
    });
    it('a request line of 100 KiB -> 414, closed', async () => {
        await assertOneReading(`GET /track?pad=${'a'.repeat(100 * 1024)} HTTP/1.1\r\nHost: x\r\n\r\n`, 414, [], 'long target');
    });
    it('64 header lines are served, 65 are 431', async () => {
        const ev = trackEvent();
        const ok = Array.from({ length: 63 }, (_, i) => [`X-H${i}`, 'v']); // + Host = 64
        let { responses } = await converse(buildRequest({ path: `/track?data=${evData(ev)}`, headers: ok }), { count: 1 });
        assert.equal(responses[0].status, 200);
        const ev2 = trackEvent();
        ok.push(['X-One-More', 'v']);
        ({ responses } = await converse(buildRequest({ path: `/track?data=${evData(ev2)}`, headers: ok })));
        assert.equal(responses.length, 1);
        assert.equal(responses[0].status, 431);
        const recs = readRecords(srv.dataDir);
        oneByInsertId(recs, ev.properties.$insert_id);
        assert.equal(byInsertId(recs, ev2.properties.$insert_id).length, 0);
    });
    it('a long header name that begins like Transfer-Encoding is just another header', async () => {
        const ev = trackEvent();
        const second = trackEvent();
        const { responses } = await converse(
            `GET /track?callback=a&data=${evData(ev)} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding${'-x'.repeat(40)}: chunked\r\nContent-Length${'-x'.repeat(40)}: 5\r\n\r\n` +
                `GET /track?callback=b&data=${evData(second)} HTTP/1.1\r\nHost: x\r\n\r\n`,
        );
        assert.deepStrictEqual(responses.map((r) => r.text), ['a(1)', 'b(1)']);
    });
});

describe('pipelining', () => {
    it('three pipelined requests split at every byte are answered in order, each stored once', async () => {
        const base = [trackEvent(), trackEvent(), trackEvent()];
        const build = (evs) => Buffer.concat([
            buildRequest({ path: `/track?callback=p0&data=${evData(evs[0])}` }),
            buildRequest({ method: 'POST', path: '/track?callback=p1', headers: { 'Content-Type': FORM }, body: `data=${b64json(evs[1])}` }),
            buildRequest({
                method: 'POST', path: '/track?callback=p2',
                headers: { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' },
                body: (() => {
                    const j = JSON.stringify(evs[2]);
                    return `${Buffer.byteLength(j).toString(16)}\r\n${j}\r\n0\r\n\r\n`;
                })(),
            }),
        ]);
        const total = build(base).length;
        const sent = [];
        for (let k = 1; k < total; k++) {
            // Same lengths for every k: $insert_id and distinct ids are fixed-size.
            const evs = base.map((e) => ({ ...e, properties: { ...e.properties, $insert_id: insertId().padEnd(36, '0').slice(0, 36) } }));
            const bytes = build(evs);
            sent.push(...evs);
            const c = await RawConn.open(srv.port);
            try {
                await c.write(bytes.subarray(0, k));
                await new Promise((r) => setImmediate(r));
                await c.write(bytes.subarray(k));
                for (let i = 0; i < 3; i++) {
                    const r = await c.response({ timeout: slow(5000) });
                    assert.equal(r.status, 200, `split at ${k}, answer ${i}: ${r.status} ${r.text}`);
                    assert.equal(r.text, `p${i}(1)`, `split at ${k}: answer ${i} out of order`);
                }
                assert.equal(c.pending().length, 0, `split at ${k}: more than three answers`);
            } finally {
                c.close();
            }
        }
        const counts = new Map();
        for (const rec of readRecords(srv.dataDir)) {
            const id = rec.properties && rec.properties.$insert_id;
            if (id) counts.set(id, (counts.get(id) || 0) + 1);
        }
        for (const ev of sent) {
            assert.equal(counts.get(ev.properties.$insert_id), 1, `${ev.properties.$insert_id} stored ${counts.get(ev.properties.$insert_id) || 0} times`);
        }
    });
});

describe('reflection: nothing breaks out of its place in an answer', () => {
    const get = async (path, headers = {}) => {
        const { responses } = await converse(buildRequest({ path, headers }), { count: 1 });
        assert.equal(responses.length, 1, path);
        assertCleanHeaders(responses[0], path);
        return responses[0];
    };

    it('JSONP callback names outside ^[A-Za-z_$][A-Za-z0-9_$.]{0,127}$ are 400 and never echoed', async () => {
        for (const cb of ['a%0D%0ASet-Cookie:%20x=1', 'alert(1);x', '%3Cscript%3E', 'a%20b', '1abc', 'a-b', 'a[0]', '%E2%80%A8', 'a%00b', 'a'.repeat(129), 'x%22', '']) {
            const ev = trackEvent();
            const r = await get(`/track?callback=${cb}&data=${evData(ev)}`);
            if (cb === '') {
                assert.equal(r.text, '1', 'an empty callback is no callback');
                continue;
            }
            assert.equal(r.status, 400, `callback ${cb}: ${r.status} ${r.text}`);
            assert.equal(r.text, 'invalid callback name');
            assert.equal(byInsertId(readRecords(srv.dataDir), ev.properties.$insert_id).length, 0);
        }
        for (const cb of ['cb', '$', '_a.b$c.d9', `a${'b'.repeat(127)}`]) {
            const r = await get(`/track?callback=${cb}&data=${evData(trackEvent())}`);
            assert.equal(r.text, `${cb}(1)`);
            assert.match(r.headers['content-type'], /^text\/javascript/);
        }
    });

    it('verbose JSONP error reasons quoting client keys are printable ASCII and valid JavaScript', async () => {
        const evil = '</script>\u2028\u2029"\\\n\r\'${x}\u0001';
        const upd = engageUpdate();
        delete upd.$set;
        upd.$add = { [evil]: 'not a number' };
        const r = await get(`/engage?verbose=1&callback=cb&data=${evData([upd])}`);
        assert.equal(r.status, 200);
        assert.match(r.text, /^cb\(\{"status":0,"error":"[\x20-\x7e]*"\}\)$/, r.text);
        assert.ok(!r.text.includes('</script>\u2028'));
        let got;
        new Function('cb', r.text)((v) => (got = v)); // parses as one call, nothing more
        assert.equal(got.status, 0);
        assert.match(got.error, /must be a number/);
        // A JSON error (jansson refuses \u0000 in strings) answers 400 in the same JSONP shape.
        const bad = await get(`/engage?verbose=1&callback=cb&data=${encodeURIComponent('{"$token":"\\u0000</script>\u2028"}')}`);
        assert.ok(bad.status === 200 || bad.status === 400, `${bad.status}`);
        assert.match(bad.text, /^cb\(\{"status":0,"error":"[\x20-\x7e]*"\}\)$/, bad.text);
        new Function('cb', bad.text)(() => {});
    });

    it('an Origin is echoed only when it is one printable token', async () => {
        const ok = await get(`/track?data=${evData(trackEvent())}`, { Origin: 'https://shop.example' });
        assert.equal(ok.headers['access-control-allow-origin'], 'https://shop.example');
        assert.equal(ok.headers['vary'], 'Origin');
        for (const origin of ['https://a.example, https://b.example', 'https://a b', `https://${'a'.repeat(300)}.example`, 'https://a.example%0d%0aSet-Cookie:%20x']) {
            const r = await get(`/track?data=${evData(trackEvent())}`, { Origin: origin });
            const echoed = r.headers['access-control-allow-origin'];
            if (origin.includes('%0d')) {
                // Percent signs are just characters in a header: echoed as sent, no line break.
                assert.equal(echoed, origin);
            } else {
                assert.equal(echoed, undefined, `${origin} echoed`);
            }
        }
        // obs-text (bytes >= 0x80) in an Origin: accepted by HTTP, never echoed.
        const { responses } = await converse(Buffer.concat([
            Buffer.from(`GET /track?data=${evData(trackEvent())} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: https://`, 'latin1'),
            Buffer.from([0xc3, 0xa9, 0x0d]),
            Buffer.from('\n\r\n'),
        ]));
        assert.equal(responses.length, 1);
        assertCleanHeaders(responses[0], 'obs-text origin');
        assert.equal(responses[0].headers['access-control-allow-origin'], undefined);
    });

    it('Access-Control-Request-Headers are echoed only as header-name tokens', async () => {
        const pre = async (acrh) => {
            const { responses } = await converse(buildRequest({ method: 'OPTIONS', path: '/track', headers: { Origin: 'https://a.example', 'Access-Control-Request-Headers': acrh } }), { count: 1 });
            assertCleanHeaders(responses[0], acrh);
            assert.equal(responses[0].status, 204);
            return responses[0].headers['access-control-allow-headers'];
        };
        assert.equal(await pre('content-type, x-custom'), 'content-type, x-custom');
        assert.equal(await pre('x;y'), undefined);
        assert.equal(await pre('x:y'), undefined);
        assert.equal(await pre(`x-${'a'.repeat(600)}`), undefined);
        assert.equal(await pre('x-a%0d%0aSet-Cookie'), undefined);
    });

    it('redirect= only to allowed hosts, never with line breaks, user info or other schemes', async () => {
        const ok = await get(`/track?redirect=${encodeURIComponent('https://OK.example/thanks?a=1')}&data=${evData(trackEvent())}`);
        assert.equal(ok.status, 302);
        assert.equal(ok.headers.location, 'https://OK.example/thanks?a=1');
        for (const target of [
            'https://ok.example/%0d%0aSet-Cookie:%20x=1', // decoded once by the form: raw CR LF
            'https://evil.example/',
            '//ok.example/',
            'https://ok.example@evil.example/',
            'https://ok.example\\@evil.example/',
            'javascript:alert(1)',
            'https://ok.example/a b',
            'https://ok.example/\u00e9',
        ]) {
            const r = await get(`/track?redirect=${encodeURIComponent(decodeURIComponent(target.replace(/%0d%0a/i, '%0D%0A')))}&data=${evData(trackEvent())}`);
            assert.equal(r.status, 200, `${target}: ${r.status} ${r.headers.location}`);
            assert.equal(r.headers.location, undefined, `${target} followed`);
            assert.equal(r.text, '1');
        }
    });
});
