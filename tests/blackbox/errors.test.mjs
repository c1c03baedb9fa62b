// Malformed and hostile requests: each gets the right status (with verbose=1, a reason), the
// connection is closed where HTTP/1.1 cannot go on, slow clients time out, pipelined and
// fragmented requests are parsed right, and none of it harms another connection or the worker.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { assertStored, b64json, oneByInsertId, trackEvent } from './lib/events.mjs';
import { RawConn, buildRequest, request } from './lib/http.mjs';
import { assertVerifies, readRecords, sleep, slow, startTrackd } from './lib/trackd.mjs';

const HEADER_TIMEOUT_MS = 700;
const BODY_TIMEOUT_MS = 700;
const MAX_BODY = 2097152; // default max_body_bytes
const FORM = 'application/x-www-form-urlencoded';

let srv;
let workersAtStart;

before(async () => {
    srv = await startTrackd({
        args: ['--header-timeout-ms', String(HEADER_TIMEOUT_MS), '--body-timeout-ms', String(BODY_TIMEOUT_MS)],
    });
    workersAtStart = srv.workerPids();
    assert.equal(workersAtStart.length, 1, `one worker process under the master, got ${workersAtStart}`);
});

after(async () => {
    if (srv) await srv.stop();
});

function send(opts) {
    return request(srv.port, { timeout: slow(10000), ...opts });
}

/** Open a connection, write `bytes`, return the connection and its first response. */
async function exchange(bytes, { timeout = slow(5000) } = {}) {
    const c = await RawConn.open(srv.port);
    try {
        await c.write(bytes);
    } catch {
        /* the server may answer and close before everything is written */
    }
    const r = await c.response({ timeout });
    return { c, r };
}

/** Write raw bytes, expect `status` and the connection closed afterwards. */
async function expectStatusAndClose(bytes, status, what) {
    const { c, r } = await exchange(bytes);
    try {
        assert.equal(r.status, status, `${what}: got ${r.status} ${r.text}`);
        assert.ok(await c.waitClosed(slow(3000)), `${what}: connection left open after ${status}`);
    } finally {
        c.close();
    }
    return r;
}

/**
 * Assert a verbose error body: JSON {status: 0, error: "<reason>"}, or on /import the import
 * API's own error shape {code: <status>, error: "<reason>", status: "<text>"} (API.md).
 */
function assertReason(r, what) {
    let j;
    try {
        j = r.json();
    } catch {
        assert.fail(`${what}: verbose error body is not JSON: ${JSON.stringify(r.text)}`);
    }
    if ('code' in j) {
        assert.equal(j.code, r.status, `${what}: ${r.text}`);
        assert.equal(typeof j.status, 'string', `${what}: ${r.text}`);
    } else {
        assert.equal(j.status, 0, `${what}: ${r.text}`);
    }
    assert.ok(typeof j.error === 'string' && j.error.length > 0, `${what}: reason in ${r.text}`);
}

const goodData = () => encodeURIComponent(b64json(trackEvent()));

describe('payload errors: 400 with a reason', () => {
    const cases = {
        'base64 with bad characters': () => ({ path: '/track?verbose=1&data=%21%21%21%21' }),
        'base64 of something that is not JSON': () => ({ path: `/track?verbose=1&data=${encodeURIComponent(Buffer.from('hello there').toString('base64'))}` }),
        'truncated base64 JSON': () => ({ path: `/track?verbose=1&data=${encodeURIComponent(b64json(trackEvent()).slice(0, 40))}` }),
        'form data= with broken plain JSON': () => ({ method: 'POST', path: '/track?verbose=1', headers: { 'Content-Type': FORM }, body: 'data=%7B%22event%22%3A' }),
        'raw JSON body that does not parse': () => ({ method: 'POST', path: '/track?verbose=1', headers: { 'Content-Type': 'application/json' }, body: '{"event": "x", "properties": {' }),
        'JSON that is neither object nor array': () => ({ method: 'POST', path: '/track?verbose=1', headers: { 'Content-Type': 'application/json' }, body: '"a string"' }),
        'a malformed %XX escape in the form': () => ({ method: 'POST', path: '/track?verbose=1', headers: { 'Content-Type': FORM }, body: `data=%G1${goodData()}` }),
        'a gzip body that is not gzip': () => ({ method: 'POST', path: '/track?verbose=1', headers: { 'Content-Type': FORM, 'Content-Encoding': 'gzip' }, body: `data=${goodData()}` }),
        'base64 on /engage that is not JSON': () => ({ path: '/engage?verbose=1&data=bm90IGpzb24' }),
        'JSON that is not UTF-8': () => ({
            method: 'POST', path: '/track?verbose=1', headers: { 'Content-Type': 'application/json' },
            body: Buffer.concat([Buffer.from('{"event":"x'), Buffer.from([0xff, 0xfe]), Buffer.from('","properties":{"token":"t"}}')]),
        }),
    };
    for (const [what, make] of Object.entries(cases)) {
        it(`${what} -> 400`, async () => {
            const r = await send(make());
            assert.equal(r.status, 400, `${what}: ${r.status} ${r.text}`);
            assertReason(r, what);
        });
    }
});

describe('routing errors', () => {
    for (const [method, path] of [['GET', '/nope'], ['GET', '/trackx'], ['GET', '/track/extra'], ['POST', '/']]) {
        it(`${method} ${path} -> 404 with a reason`, async () => {
            const r = await send({ method, path: `${path}?verbose=1&data=${goodData()}` });
            assert.equal(r.status, 404, `${path}: ${r.status}`);
            assertReason(r, path);
        });
    }
    for (const [method, path] of [['PUT', '/track'], ['DELETE', '/engage/'], ['PATCH', '/groups'], ['PUT', '/import']]) {
        it(`${method} ${path} -> 405 with a reason`, async () => {
            const r = await send({ method, path: `${path}?verbose=1`, headers: { 'Content-Type': FORM }, body: `data=${goodData()}` });
            assert.equal(r.status, 405, `${method} ${path}: ${r.status}`);
            assertReason(r, `${method} ${path}`);
        });
    }
});

describe('size limits', () => {
    it('413 is decided from Content-Length, before the body is sent', async () => {
        const c = await RawConn.open(srv.port);
        try {
            await c.write(`POST /track?verbose=1 HTTP/1.1\r\nHost: x\r\nContent-Type: ${FORM}\r\nContent-Length: ${MAX_BODY + 1}\r\n\r\n`);
            const t0 = Date.now();
            // Not a byte of the body: the answer must come anyway, well within the body timeout.
            const r = await c.response({ timeout: slow(BODY_TIMEOUT_MS - 200) });
            assert.equal(r.status, 413, `got ${r.status} ${r.text}`);
            assert.ok(Date.now() - t0 < BODY_TIMEOUT_MS, 'answered without waiting for the body');
            assertReason(r, '413');
        } finally {
            c.close();
        }
    });

    it('Expect: 100-continue with a Content-Length over the limit gets 413, not 100', async () => {
        const c = await RawConn.open(srv.port);
        try {
            await c.write(`POST /track HTTP/1.1\r\nHost: x\r\nContent-Type: ${FORM}\r\nContent-Length: ${MAX_BODY * 2}\r\nExpect: 100-continue\r\n\r\n`);
            const r = await c.response({ timeout: slow(3000) });
            assert.equal(r.status, 413, `got ${r.status}`);
        } finally {
            c.close();
        }
    });

    it('a body of exactly the limit is read (not 413)', async () => {
        const ev = trackEvent();
        let body = `data=${encodeURIComponent(b64json(ev))}&pad=`;
        body += 'p'.repeat(MAX_BODY - body.length);
        const r = await send({ method: 'POST', path: '/track', headers: { 'Content-Type': FORM }, body });
        assert.equal(r.status, 200, `${r.status} ${r.text}`);
        assert.equal(r.text, '1');
        oneByInsertId(readRecords(srv.dataDir), ev.properties.$insert_id);
    });

    it('a chunked body growing past the limit gets 413', async () => {
        const c = await RawConn.open(srv.port);
        try {
            await c.write(`POST /track HTTP/1.1\r\nHost: x\r\nContent-Type: ${FORM}\r\nTransfer-Encoding: chunked\r\n\r\n`);
            const chunk = Buffer.concat([Buffer.from('10000\r\n'), Buffer.alloc(0x10000, 0x61), Buffer.from('\r\n')]);
            for (let sent = 0; sent <= MAX_BODY + 0x10000 && !c.ended && c.pending().length === 0; sent += 0x10000) {
                try {
                    await c.write(chunk);
                } catch {
                    break;
                }
            }
            const r = await c.response({ timeout: slow(5000) });
            assert.equal(r.status, 413, `got ${r.status}`);
        } finally {
            c.close();
        }
    });

    it('a request target over 8192 bytes -> 414', async () => {
        const r = await send({ path: `/track?data=${goodData()}&pad=${'a'.repeat(9000)}` });
        assert.equal(r.status, 414, `got ${r.status}`);
    });

    it('header lines over 16 KiB together -> 431', async () => {
        const r = await send({ path: `/track?data=${goodData()}`, headers: { 'X-Big': 'b'.repeat(17000) } });
        assert.equal(r.status, 431, `got ${r.status}`);
        const many = Array.from({ length: 20 }, (_, i) => [`X-H${i}`, 'v'.repeat(900)]);
        const r2 = await send({ path: `/track?data=${goodData()}`, headers: many });
        assert.equal(r2.status, 431, `many medium headers: got ${r2.status}`);
    });

    it('more than 64 header fields -> 431', async () => {
        const hs = Array.from({ length: 70 }, (_, i) => [`X-N${i}`, 'v']);
        const r = await send({ path: `/track?data=${goodData()}`, headers: hs });
        assert.equal(r.status, 431, `got ${r.status}`);
    });
});

describe('slow clients', () => {
    it('a request head that stops arriving -> 408 and the connection is closed', async () => {
        const c = await RawConn.open(srv.port);
        try {
            const t0 = Date.now();
            await c.write('GET /track?data=x HTTP/1.1\r\nHost: x\r\n');
            const r = await c.response({ timeout: slow(HEADER_TIMEOUT_MS + 3000) });
            assert.equal(r.status, 408, `got ${r.status}`);
            assert.ok(Date.now() - t0 >= HEADER_TIMEOUT_MS - 100, 'not before the timeout');
            assert.ok(await c.waitClosed(slow(2000)), 'connection closed after 408');
        } finally {
            c.close();
        }
    });

    it('a head trickling in byte by byte still times out as a whole (slowloris)', async () => {
        const c = await RawConn.open(srv.port);
        const head = `GET /track?data=x HTTP/1.1\r\nHost: x\r\n${'X-Slow: y\r\n'.repeat(40)}\r\n`;
        const t0 = Date.now();
        try {
            for (let i = 0; i < head.length && !c.ended; i++) {
                try {
                    await c.write(head[i]);
                } catch {
                    break;
                }
                await sleep(HEADER_TIMEOUT_MS / 8);
                if (Date.now() - t0 > slow(HEADER_TIMEOUT_MS * 4)) break;
            }
            const r = await c.response({ timeout: slow(3000) });
            assert.equal(r.status, 408, `got ${r.status}`);
            assert.ok(Date.now() - t0 < slow(HEADER_TIMEOUT_MS * 4), 'the whole head timed out, not each byte');
            assert.ok(await c.waitClosed(slow(2000)), 'connection closed after 408');
        } finally {
            c.close();
        }
    });

    it('a body that stops arriving -> 408 and the connection is closed', async () => {
        const c = await RawConn.open(srv.port);
        try {
            await c.write(`POST /track HTTP/1.1\r\nHost: x\r\nContent-Type: ${FORM}\r\nContent-Length: 100\r\n\r\ndata=abc`);
            const r = await c.response({ timeout: slow(BODY_TIMEOUT_MS + 3000) });
            assert.equal(r.status, 408, `got ${r.status}`);
            assert.ok(await c.waitClosed(slow(2000)), 'connection closed after 408');
        } finally {
            c.close();
        }
    });

    it('a body arriving slowly but steadily (gaps under the timeout) is accepted', async () => {
        const ev = trackEvent();
        const body = Buffer.from(`data=${encodeURIComponent(b64json(ev))}`);
        const c = await RawConn.open(srv.port);
        try {
            await c.write(`POST /track HTTP/1.1\r\nHost: x\r\nContent-Type: ${FORM}\r\nContent-Length: ${body.length}\r\n\r\n`);
            const step = Math.ceil(body.length / 4);
            for (let i = 0; i < body.length; i += step) {
                await sleep(BODY_TIMEOUT_MS / 3);
                await c.write(body.subarray(i, i + step));
            }
            const r = await c.response({ timeout: slow(3000) });
            assert.equal(r.status, 200, `got ${r.status} ${r.text}`);
        } finally {
            c.close();
        }
        oneByInsertId(readRecords(srv.dataDir), ev.properties.$insert_id);
    });
});

describe('framing attacks: 400 and close', () => {
    const data = () => `data=${goodData()}`;
    const cases = {
        'Content-Length with Transfer-Encoding: chunked': () => {
            const b = data();
            return `POST /track HTTP/1.1\r\nHost: x\r\nContent-Type: ${FORM}\r\nContent-Length: ${b.length}\r\nTransfer-Encoding: chunked\r\n\r\n${b.length.toString(16)}\r\n${b}\r\n0\r\n\r\n`;
        },
        'Transfer-Encoding: chunked then Content-Length': () => {
            const b = data();
            return `POST /track HTTP/1.1\r\nHost: x\r\nContent-Type: ${FORM}\r\nTransfer-Encoding: chunked\r\nContent-Length: ${b.length}\r\n\r\n${b.length.toString(16)}\r\n${b}\r\n0\r\n\r\n`;
        },
        'two equal Content-Length headers': () => {
            const b = data();
            return `POST /track HTTP/1.1\r\nHost: x\r\nContent-Type: ${FORM}\r\nContent-Length: ${b.length}\r\nContent-Length: ${b.length}\r\n\r\n${b}`;
        },
        'two different Content-Length headers': () => {
            const b = data();
            return `POST /track HTTP/1.1\r\nHost: x\r\nContent-Type: ${FORM}\r\nContent-Length: ${b.length}\r\nContent-Length: 5\r\n\r\n${b}`;
        },
        'a Content-Length that is not a number': () => `POST /track HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n1x`,
        'a negative Content-Length': () => `POST /track HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n`,
        'bare LF line endings': () => `GET /track?${data()} HTTP/1.1\nHost: x\n\n`,
        'a bare LF inside the head': () => `GET /track?${data()} HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n`,
        'an obs-fold continuation line': () => `GET /track?${data()} HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\n\r\n`,
        'an invalid chunk size': () => `POST /track HTTP/1.1\r\nHost: x\r\nContent-Type: ${FORM}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n`,
        'a chunk size overflowing 64 bits': () => `POST /track HTTP/1.1\r\nHost: x\r\nContent-Type: ${FORM}\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nabc\r\n0\r\n\r\n`,
        'a NUL byte in a header value': () => `GET /track?${data()} HTTP/1.1\r\nHost: x\r\nX-Nul: a\u0000b\r\n\r\n`,
        'a NUL byte in a header name': () => `GET /track?${data()} HTTP/1.1\r\nHost: x\r\nX-N\u0000ul: ab\r\n\r\n`,
        'a space before the colon': () => `GET /track?${data()} HTTP/1.1\r\nHost : x\r\n\r\n`,
        'a garbage request line': () => `HELLO\r\n\r\n`,
        'an unknown HTTP version': () => `GET /track?${data()} HTTP/9.7\r\nHost: x\r\n\r\n`,
        'a control character in the request target': () => `GET /track?a=\u0001b HTTP/1.1\r\nHost: x\r\n\r\n`,
    };
    for (const [what, make] of Object.entries(cases)) {
        it(`${what} -> 400, connection closed`, async () => {
            await expectStatusAndClose(Buffer.from(make(), 'latin1'), 400, what);
        });
    }

    it('nothing of a request refused for its framing is stored', async () => {
        const ev = trackEvent();
        const b = `data=${encodeURIComponent(b64json(ev))}`;
        await expectStatusAndClose(
            Buffer.from(`POST /track HTTP/1.1\r\nHost: x\r\nContent-Type: ${FORM}\r\nContent-Length: ${b.length}\r\nTransfer-Encoding: chunked\r\n\r\n${b.length.toString(16)}\r\n${b}\r\n0\r\n\r\n`),
            400, 'CL+TE',
        );
        const recs = readRecords(srv.dataDir);
        assert.equal(recs.filter((r) => r.properties && r.properties.$insert_id === ev.properties.$insert_id).length, 0);
    });
});

describe('pipelining and fragmentation', () => {
    it('several requests in one write are answered in order', async () => {
        const evs = Array.from({ length: 6 }, () => trackEvent());
        const reqs = evs.map((ev, i) =>
            i % 2 === 0
                ? buildRequest({ path: `/track?callback=cb${i}&data=${encodeURIComponent(b64json(ev))}` })
                : buildRequest({ method: 'POST', path: `/track?callback=cb${i}`, headers: { 'Content-Type': FORM }, body: `data=${b64json(ev)}` }),
        );
        const c = await RawConn.open(srv.port);
        try {
            await c.write(Buffer.concat(reqs));
            for (let i = 0; i < reqs.length; i++) {
                const r = await c.response({ timeout: slow(5000) });
                assert.equal(r.status, 200, `response ${i}`);
                assert.equal(r.text, `cb${i}(1)`, `response ${i} out of order or wrong`);
            }
        } finally {
            c.close();
        }
        const recs = readRecords(srv.dataDir);
        for (const ev of evs) assertStored(oneByInsertId(recs, ev.properties.$insert_id), ev);
    });

    it('a pipelined error after good requests: the good ones are answered first', async () => {
        const ev = trackEvent();
        const c = await RawConn.open(srv.port);
        try {
            await c.write(Buffer.concat([
                buildRequest({ path: `/track?callback=first&data=${encodeURIComponent(b64json(ev))}` }),
                buildRequest({ path: '/nope' }),
                Buffer.from('GARBAGE\r\n\r\n'),
            ]));
            const r1 = await c.response({ timeout: slow(5000) });
            assert.equal(r1.text, 'first(1)');
            const r2 = await c.response({ timeout: slow(5000) });
            assert.equal(r2.status, 404);
            const r3 = await c.response({ timeout: slow(5000) });
            assert.equal(r3.status, 400);
            assert.ok(await c.waitClosed(slow(3000)));
        } finally {
            c.close();
        }
        oneByInsertId(readRecords(srv.dataDir), ev.properties.$insert_id);
    });

    it('a request split at every byte boundary is parsed the same', async () => {
        const sent = [];
        const base = trackEvent();
        const sample = buildRequest({ method: 'POST', path: '/track/?verbose=1', headers: { 'Content-Type': FORM }, body: `data=${b64json(base)}` });
        // Split points: every byte of the head and around the head/body boundary, then a stride.
        const headEnd = sample.indexOf('\r\n\r\n') + 4;
        const cuts = new Set();
        for (let k = 1; k < sample.length; k++) if (k <= headEnd + 8 || k % 7 === 0) cuts.add(k);
        const conns = [];
        for (const k of cuts) {
            const ev = trackEvent();
            sent.push(ev);
            const bytes = buildRequest({ method: 'POST', path: '/track/?verbose=1', headers: { 'Content-Type': FORM }, body: `data=${b64json(ev)}` });
            const c = await RawConn.open(srv.port);
            conns.push(c);
            await c.write(bytes.subarray(0, Math.min(k, bytes.length - 1)));
            await sleep(2);
            await c.write(bytes.subarray(Math.min(k, bytes.length - 1)));
            const r = await c.response({ timeout: slow(5000) });
            assert.equal(r.status, 200, `split at ${k}: ${r.status} ${r.text}`);
            assert.deepStrictEqual(r.json(), { status: 1, error: null }, `split at ${k}`);
            c.close();
        }
        const recs = readRecords(srv.dataDir);
        for (const ev of sent) assertStored(oneByInsertId(recs, ev.properties.$insert_id), ev);
    });

    it('pipelined requests arriving a few bytes at a time', async () => {
        const evs = Array.from({ length: 4 }, () => trackEvent());
        const bytes = Buffer.concat(evs.map((ev, i) => buildRequest({
            method: 'POST', path: `/track?callback=p${i}`,
            headers: { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' },
            body: (() => {
                const j = JSON.stringify(ev);
                return `${Buffer.byteLength(j).toString(16)}\r\n${j}\r\n0\r\n\r\n`;
            })(),
        })));
        const c = await RawConn.open(srv.port);
        try {
            for (let i = 0; i < bytes.length; i += 13) {
                await c.write(bytes.subarray(i, i + 13));
                if (i % 130 === 0) await sleep(1);
            }
            for (let i = 0; i < evs.length; i++) {
                const r = await c.response({ timeout: slow(5000) });
                assert.equal(r.text, `p${i}(1)`);
            }
        } finally {
            c.close();
        }
        const recs = readRecords(srv.dataDir);
        for (const ev of evs) assertStored(oneByInsertId(recs, ev.properties.$insert_id), ev);
    });

    it('HTTP/1.0 and Connection: close end the connection after the response', async () => {
        for (const [version, headers] of [['1.0', {}], ['1.1', { Connection: 'close' }]]) {
            const c = await RawConn.open(srv.port);
            try {
                await c.write(buildRequest({ version, path: `/track?data=${goodData()}`, headers }));
                const r = await c.response({ timeout: slow(5000) });
                assert.equal(r.status, 200);
                assert.ok(await c.waitClosed(slow(3000)), `HTTP/${version} ${JSON.stringify(headers)} left open`);
            } finally {
                c.close();
            }
        }
    });
});

describe('isolation', () => {
    it('bad requests never harm a good connection open at the same time', async () => {
        const good = await RawConn.open(srv.port);
        const bads = [];
        const stored = [];
        const okOnGood = async (what) => {
            const ev = trackEvent();
            stored.push(ev);
            await good.write(buildRequest({ path: `/track?data=${encodeURIComponent(b64json(ev))}` }));
            const r = await good.response({ timeout: slow(5000) });
            assert.equal(r.status, 200, `good connection after ${what}`);
            assert.equal(r.text, '1', `good connection after ${what}`);
        };
        try {
            await okOnGood('nothing');
            // A slow request hanging on the header timeout, another on the body timeout.
            const slowHead = await RawConn.open(srv.port);
            bads.push(slowHead);
            await slowHead.write('POST /track HTTP/1.1\r\nHost: x\r\n');
            const slowBody = await RawConn.open(srv.port);
            bads.push(slowBody);
            await slowBody.write(`POST /track HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\ndata=`);
            await okOnGood('two stalled connections');
            for (const garbage of [
                'GET /track HTTP/1.1\nHost: x\n\n',
                'POST /track HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc',
                `POST /track HTTP/1.1\r\nHost: x\r\nContent-Length: ${MAX_BODY * 4}\r\n\r\n`,
                '\u0000\u0001\u0002\u00ff\r\n\r\n',
                `GET /${'x'.repeat(20000)} HTTP/1.1\r\n\r\n`,
            ]) {
                const b = await RawConn.open(srv.port);
                bads.push(b);
                try {
                    await b.write(Buffer.from(garbage, 'latin1'));
                } catch {
                    /* closed early */
                }
                await okOnGood(JSON.stringify(garbage.slice(0, 30)));
            }
            // A client that connects and resets mid-request.
            const rst = await RawConn.open(srv.port);
            await rst.write(`POST /track HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\ndata=`);
            rst.socket.resetAndDestroy();
            await okOnGood('a reset connection');
            // The stalled ones end with 408 while the good connection keeps working.
            for (const s of [slowHead, slowBody]) {
                const r = await s.response({ timeout: slow(HEADER_TIMEOUT_MS + 3000) });
                assert.equal(r.status, 408);
            }
            await okOnGood('the 408s');
        } finally {
            good.close();
            for (const b of bads) b.close();
        }
        const recs = readRecords(srv.dataDir);
        for (const ev of stored) assertStored(oneByInsertId(recs, ev.properties.$insert_id), ev);
    });

    it('the worker is the same process after everything (no crash), the log verifies', async () => {
        assert.deepStrictEqual(srv.workerPids(), workersAtStart, 'worker pid changed: a worker died and was restarted');
        const r = await send({ path: '/healthz' });
        assert.equal(r.status, 200);
        srv.assertClean();
        await srv.stop();
        assertVerifies(srv.dataDir);
        srv = null;
    });
});
