// trackbench, trackd's load-test harness, run for real: against a small node HTTP server that
// decodes every payload, counts what it sees and answers `1` (or 503 with Retry-After), so that
// what trackbench reports can be compared with what the server saw; and, end to end, against
// bin/trackd, where `trackbench verify` must find every acknowledged $insert_id in the log.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import zlib from 'node:zlib';

import { BIN_DIR, REPO_ROOT, TRACKCTL, TRACKD, freePort, slow, startTrackd, tempDir } from './lib/trackd.mjs';

// The sanitized build directory has no trackbench: the optimised one loads it just as well.
const TRACKBENCH = [path.join(BIN_DIR, 'trackbench'), path.join(REPO_ROOT, 'bin', 'trackbench')].find((p) =>
    fs.existsSync(p),
);
const ID_RE = /^[A-Za-z0-9-]{1,36}$/;

/** Run trackbench with `args`; resolves {code, stdout, stderr, json (if --json)}. */
function bench(args, { timeoutMs = 60000 } = {}) {
    assert.ok(TRACKBENCH, `no trackbench binary in ${BIN_DIR} or bin/ (build it with make)`);
    return new Promise((resolve, reject) => {
        const p = spawn(TRACKBENCH, args, { stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        p.stdout.setEncoding('utf8');
        p.stderr.setEncoding('utf8');
        p.stdout.on('data', (d) => (stdout += d));
        p.stderr.on('data', (d) => (stderr += d));
        const t = setTimeout(() => {
            p.kill('SIGKILL');
            reject(new Error(`trackbench ${args.join(' ')} ran past ${timeoutMs} ms\n${stderr}`));
        }, timeoutMs);
        p.on('error', reject);
        p.on('close', (code) => {
            clearTimeout(t);
            let json;
            if (args.includes('--json') && stdout.trim() !== '') {
                try {
                    json = JSON.parse(stdout);
                } catch (e) {
                    reject(new Error(`--json output is not JSON: ${e.message}\n${stdout.slice(0, 500)}`));
                    return;
                }
            }
            resolve({ code, stdout, stderr, json });
        });
    });
}

/** Decode a request the way API.md says trackd does; returns {shape, events}. */
function decodeRequest(req, body) {
    const url = new URL(req.url, 'http://x');
    let text;
    let shape;
    const fromData = (v) => {
        if (v === null) throw new Error('no data');
        if (v.startsWith('{') || v.startsWith('[')) {
            shape = shape === 'form' ? 'form-json' : shape;
            return v;
        }
        return Buffer.from(v.replace(/ /g, '+'), 'base64').toString('utf8');
    };
    if (req.method === 'GET') {
        shape = 'get';
        text = fromData(url.searchParams.get('data'));
    } else if (req.headers['content-encoding'] === 'gzip') {
        shape = 'gzip';
        text = zlib.gunzipSync(body).toString('utf8');
    } else if ((req.headers['content-type'] || '').startsWith('application/json')) {
        shape = 'json';
        text = body.toString('utf8');
    } else {
        const raw = body.toString('latin1');
        const beacon = (req.headers['content-type'] || '').startsWith('text/plain');
        shape = 'form';
        text = fromData(new URLSearchParams(raw).get('data'));
        if (shape === 'form') shape = beacon ? 'beacon' : /%[0-9A-F]{2}/.test(raw) ? 'form-b64' : 'form-b64-raw';
    }
    const parsed = JSON.parse(text);
    return { shape, events: Array.isArray(parsed) ? parsed : [parsed] };
}

/**
 * A counting HTTP server. every503: answer every Nth request 503 + Retry-After: 3 (not stored);
 * hang: never answer.
 */
async function startCounter({ every503 = 0, hang = false } = {}) {
    const s = {
        requests: 0,
        connections: 0,
        connTimes: [],
        clientAddrs: new Set(),
        maxOpen: 0,
        open: 0,
        status: {},
        events: 0,
        eventsAcked: 0,
        acked: [],
        seenIds: new Set(),
        duplicateIds: 0,
        badIds: 0,
        paths: {},
        shapes: {},
        sizes: [],
        decodeErrors: 0,
    };
    const answer = (res, code, body, headers = {}) => {
        s.status[code] = (s.status[code] || 0) + 1;
        res.writeHead(code, { 'Content-Length': Buffer.byteLength(body), ...headers });
        res.end(body);
    };
    const server = http.createServer((req, res) => {
        const chunks = [];
        req.on('data', (c) => chunks.push(c));
        req.on('end', () => {
            s.requests++;
            if (hang) return;
            let decoded;
            try {
                decoded = decodeRequest(req, Buffer.concat(chunks));
            } catch (e) {
                s.decodeErrors++;
                answer(res, 400, '0');
                return;
            }
            const p = new URL(req.url, 'http://x').pathname;
            s.paths[p] = (s.paths[p] || 0) + 1;
            s.shapes[decoded.shape] = (s.shapes[decoded.shape] || 0) + 1;
            s.events += decoded.events.length;
            const ids = [];
            for (const ev of decoded.events) {
                s.sizes.push(JSON.stringify(ev).length);
                const id = ev.properties && ev.properties.$insert_id;
                if (id === undefined) continue;
                if (!ID_RE.test(id)) s.badIds++;
                if (s.seenIds.has(id)) s.duplicateIds++;
                s.seenIds.add(id);
                ids.push(id);
            }
            if (every503 && s.requests % every503 === 0) {
                answer(res, 503, '0', { 'Retry-After': '3' });
                return;
            }
            s.eventsAcked += decoded.events.length;
            s.acked.push(...ids);
            answer(res, 200, '1');
        });
    });
    server.on('connection', (sock) => {
        s.connections++;
        s.open++;
        s.maxOpen = Math.max(s.maxOpen, s.open);
        s.connTimes.push(Date.now());
        s.clientAddrs.add(sock.remoteAddress);
        sock.on('close', () => s.open--);
    });
    server.keepAliveTimeout = 60000;
    const port = await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
    return {
        port,
        url: `http://127.0.0.1:${port}`,
        stats: s,
        close: () =>
            new Promise((resolve) => {
                server.closeAllConnections();
                server.close(() => resolve());
            }),
    };
}

function readLedger(file) {
    return fs
        .readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l.length > 0);
}

describe('trackbench closed loop against a counting server', () => {
    let srv;
    let run;
    let ledger;
    before(async () => {
        srv = await startCounter({ every503: 7 });
        ledger = path.join(tempDir('trackbench-'), 'ledger');
        run = await bench([
            '--target', srv.url, '-c', '4', '-d', '2', '--batch', '3', '--event-bytes', '400',
            '--mix', 'track=4,engage=1',
            '--shape', 'get,form-b64,form-b64-raw,form-json,json,gzip,beacon',
            '--ledger', ledger, '--json', '-q',
        ]);
    });
    after(async () => srv && srv.close());

    it('exits 0 with one JSON object holding the command line and every section', () => {
        assert.equal(run.code, 0, run.stderr);
        const j = run.json;
        assert.ok(j.command.includes('--ledger'));
        assert.equal(j.options.mode, 'closed');
        for (const k of ['requests', 'events', 'bytes', 'rates', 'latency_ms', 'status', 'errors', 'retry_after'])
            assert.ok(j[k] !== undefined, `missing ${k}`);
        for (const k of ['p50', 'p90', 'p99', 'p99.9', 'max'])
            assert.equal(typeof j.latency_ms[k], 'number', k);
        assert.ok(j.latency_ms.p50 <= j.latency_ms.p99 && j.latency_ms.p99 <= j.latency_ms.max);
        assert.ok(j.elapsed_s > 1.8 && j.elapsed_s < 4, `elapsed ${j.elapsed_s}`);
    });

    it('reports exactly the requests, statuses and events the server saw', () => {
        const j = run.json;
        const s = srv.stats;
        assert.ok(s.requests > 100, `only ${s.requests} requests in 2 s`);
        assert.equal(s.decodeErrors, 0);
        assert.equal(j.requests.completed, s.requests);
        assert.equal(j.requests.sent, s.requests);
        assert.equal(j.status['200'], s.status[200]);
        assert.equal(j.status['503'], s.status[503]);
        assert.equal(j.errors.status['503'], s.status[503]);
        assert.equal(j.errors.total, s.status[503]);
        assert.equal(j.requests.ok, s.status[200]);
        assert.equal(j.events.sent, s.events);
        assert.equal(j.events.ok, s.eventsAcked);
        assert.ok(Math.abs(j.rates.requests_per_s - s.requests / j.elapsed_s) < 1);
    });

    it('counts the Retry-After of the 503s', () => {
        const j = run.json;
        assert.equal(j.retry_after.count, srv.stats.status[503]);
        assert.equal(j.retry_after.min_s, 3);
        assert.equal(j.retry_after.max_s, 3);
    });

    it('ledger lists exactly the acknowledged ids, once each', () => {
        const lines = readLedger(ledger);
        assert.equal(new Set(lines).size, lines.length, 'an id is listed twice');
        assert.deepEqual([...lines].sort(), [...srv.stats.acked].sort());
        assert.equal(run.json.ledger.ids, lines.length);
    });

    it('sends unique ids of the API alphabet, every shape, the mix and the event size', () => {
        const s = srv.stats;
        assert.equal(s.badIds, 0);
        assert.equal(s.duplicateIds, 0);
        for (const shape of ['get', 'form-b64', 'form-b64-raw', 'form-json', 'json', 'gzip', 'beacon'])
            assert.ok(s.shapes[shape] > 0, `shape ${shape} never sent: ${JSON.stringify(s.shapes)}`);
        const engage = (s.paths['/engage'] || 0) / s.requests;
        assert.ok(engage > 0.1 && engage < 0.3, `engage share ${engage}`);
        const mean = s.sizes.reduce((a, b) => a + b, 0) / s.sizes.length;
        assert.ok(Math.abs(mean - 400) < 20, `mean event size ${mean}`);
    });
});

describe('trackbench modes', () => {
    it('open loop sends rate x duration requests and measures from the intended time', async () => {
        const srv = await startCounter();
        try {
            const r = await bench(['--target', srv.url, '--rate', '150', '-d', '2', '-c', '4', '--batch', '2', '--json', '-q']);
            assert.equal(r.code, 0, r.stderr);
            const j = r.json;
            assert.equal(j.options.mode, 'open');
            // 300 requests are due; an unsaturated open loop sends every one of them.
            assert.equal(j.requests.sent + j.requests.unsent, 300);
            assert.ok(j.requests.sent >= 290, `sent ${j.requests.sent}`);
            assert.equal(srv.stats.requests, j.requests.sent);
            assert.equal(j.requests.completed, j.requests.sent);
            assert.ok(j.rates.requests_per_s > 150 * 0.7 && j.rates.requests_per_s < 150 * 1.3);
        } finally {
            await srv.close();
        }
    });

    it('open loop against a stalled server counts the backlog in the latency', async () => {
        const srv = await startCounter({ hang: true });
        try {
            const r = await bench([
                '--target', srv.url, '--rate', '100', '-d', '1', '-c', '2', '--timeout-ms', '400', '--json', '-q',
            ]);
            assert.equal(r.code, 0, r.stderr);
            // Two connections, each stuck 400 ms per request: most of the 100 due are never sent.
            assert.ok(r.json.requests.unsent > 50, JSON.stringify(r.json.requests));
            assert.equal(r.json.requests.sent + r.json.requests.unsent, 100);
            assert.equal(r.json.errors.timeout, r.json.requests.sent);
        } finally {
            await srv.close();
        }
    });

    it('--procs 2 merges both processes and their ledgers', async () => {
        const srv = await startCounter({ every503: 5 });
        const ledger = path.join(tempDir('trackbench-'), 'ledger');
        try {
            const r = await bench(['--target', srv.url, '--procs', '2', '-c', '4', '-d', '1.5', '--batch', '5', '--ledger', ledger, '--json', '-q']);
            assert.equal(r.code, 0, r.stderr);
            assert.equal(r.json.procs, 2);
            assert.equal(r.json.requests.completed, srv.stats.requests);
            assert.equal(r.json.status['503'], srv.stats.status[503]);
            const lines = readLedger(ledger);
            assert.equal(new Set(lines).size, lines.length);
            assert.deepEqual(lines.sort(), [...srv.stats.acked].sort());
            // Each process draws its own random id prefix.
            assert.equal(new Set(lines.map((l) => l.split('-')[0])).size, 2);
        } finally {
            await srv.close();
        }
    });

    it('--no-keepalive opens one connection per request', async () => {
        const srv = await startCounter();
        try {
            const r = await bench(['--target', srv.url, '--no-keepalive', '-c', '3', '-n', '60', '--batch', '1', '--json', '-q']);
            assert.equal(r.code, 0, r.stderr);
            assert.equal(r.json.requests.completed, 60);
            assert.equal(srv.stats.requests, 60);
            assert.equal(srv.stats.connections, 60);
            assert.equal(r.json.connections.established, 60);
        } finally {
            await srv.close();
        }
    });

    it('--requests stops after exactly that many, split over processes', async () => {
        const srv = await startCounter();
        try {
            const r = await bench(['--target', srv.url, '--procs', '2', '-c', '4', '-n', '101', '--json', '-q']);
            assert.equal(r.code, 0, r.stderr);
            assert.equal(r.json.requests.completed, 101);
            assert.equal(srv.stats.requests, 101);
        } finally {
            await srv.close();
        }
    });

    it('round-robins over several targets', async () => {
        const a = await startCounter();
        const b = await startCounter();
        try {
            const r = await bench(['--target', a.url, '--target', b.url, '-c', '4', '-n', '200', '--json', '-q']);
            assert.equal(r.code, 0, r.stderr);
            assert.equal(a.stats.requests + b.stats.requests, 200);
            assert.equal(a.stats.connections, 2);
            assert.equal(b.stats.connections, 2);
        } finally {
            await a.close();
            await b.close();
        }
    });

    it('spreads loopback connections over 127.0.0.1..N (--source-addrs)', async () => {
        const srv = await startCounter();
        try {
            let r = await bench(['--target', srv.url, '-c', '20', '-n', '100', '--json', '-q']);
            assert.equal(r.code, 0, r.stderr);
            assert.equal(srv.stats.connections, 20);
            assert.equal(srv.stats.clientAddrs.size, 16);
            for (const a of srv.stats.clientAddrs) assert.match(a, /^127\.0\.0\.([1-9]|1[0-6])$/);
            srv.stats.clientAddrs.clear();
            r = await bench(['--target', srv.url, '-c', '5', '-n', '20', '--source-addrs', '1', '--json', '-q']);
            assert.equal(r.code, 0, r.stderr);
            assert.deepEqual([...srv.stats.clientAddrs], ['127.0.0.1']);
        } finally {
            await srv.close();
        }
    });

    it('--ramp raises the connections from FROM to TO over the given seconds', async () => {
        const srv = await startCounter();
        try {
            const r = await bench(['--target', srv.url, '--ramp', '2:20:1', '-d', '1.5', '--batch', '1', '--json', '-q']);
            assert.equal(r.code, 0, r.stderr);
            assert.equal(srv.stats.connections, 20);
            assert.equal(srv.stats.maxOpen, 20);
            const t = srv.stats.connTimes;
            const spread = t[t.length - 1] - t[0];
            assert.ok(spread > 600 && spread < 1500, `connections opened over ${spread} ms`);
        } finally {
            await srv.close();
        }
    });
});

describe('trackbench errors', () => {
    it('counts requests without an answer as timeouts', async () => {
        const srv = await startCounter({ hang: true });
        try {
            const r = await bench(['--target', srv.url, '-c', '3', '-d', '1', '--timeout-ms', '300', '--json', '-q']);
            assert.equal(r.code, 0, r.stderr);
            assert.equal(r.json.requests.completed, 0);
            assert.ok(r.json.errors.timeout >= 6, JSON.stringify(r.json.errors));
            assert.equal(r.json.errors.timeout, srv.stats.requests);
        } finally {
            await srv.close();
        }
    });

    it('counts refused connections as connect errors', async () => {
        const port = await freePort();
        const r = await bench(['--target', `http://127.0.0.1:${port}`, '-c', '2', '-d', '0.5', '--json', '-q']);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.json.requests.completed, 0);
        assert.ok(r.json.errors.connect >= 2, JSON.stringify(r.json.errors));
        assert.equal(r.json.connections.established, 0);
    });

    it('rejects bad options with status 2', async () => {
        for (const args of [['--batch', '2001'], ['--mix', 'nosuch=1'], ['--ramp', '10:5:1'], ['--target', 'https://x'], ['--shape', '']]) {
            const r = await bench(args);
            assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
        }
        const h = await bench(['--help']);
        assert.equal(h.code, 0);
        assert.match(h.stdout, /--ledger FILE/);
    });
});

describe('trackbench verify', () => {
    // A stand-in for trackctl that prints DIR/log.ndjson: the NDJSON `trackctl cat` prints.
    function fakeLog(lines) {
        const dir = tempDir('trackbench-verify-');
        const ctl = path.join(dir, 'fake-trackctl');
        fs.writeFileSync(ctl, '#!/bin/sh\n[ "$1" = cat ] && [ "$2" = --data-dir ] || exit 9\nexec cat "$3/log.ndjson"\n');
        fs.chmodSync(ctl, 0o755);
        fs.writeFileSync(path.join(dir, 'log.ndjson'), lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
        return { dir, ctl };
    }
    const ev = (id) => ({ event: 'e', properties: { token: 't', $insert_id: id }, _trackd: { pos: '1:1:40' } });

    it('passes when every acknowledged id is in the log, and names what is missing otherwise', async () => {
        const { dir, ctl } = fakeLog([ev('a-1'), ev('a-2'), ev('a-3'), ev('a-3'), ev('x-9'), { $token: 't', $set: {} }]);
        const ok = path.join(dir, 'ok.ledger');
        fs.writeFileSync(ok, 'a-1\na-2\n');
        let r = await bench(['verify', '--ledger', ok, '--data-dir', dir, '--trackctl', ctl, '--json']);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.json.acknowledged, 2);
        assert.equal(r.json.found, 2);
        assert.equal(r.json.missing, 0);
        assert.equal(r.json.unacknowledged, 3); // records a-3, a-3 and x-9
        assert.equal(r.json.without_id, 1);

        const bad = path.join(dir, 'bad.ledger');
        fs.writeFileSync(bad, 'a-1\na-3\nb-1\nb-2\n');
        r = await bench(['verify', '--ledger', bad, '--data-dir', dir, '--trackctl', ctl, '--json']);
        assert.equal(r.code, 1);
        assert.equal(r.json.acknowledged, 4);
        assert.equal(r.json.found, 2);
        assert.equal(r.json.missing, 2);
        assert.equal(r.json.duplicated, 1);
        assert.deepEqual(r.json.first_missing, ['b-1', 'b-2']);
        assert.deepEqual(r.json.first_duplicated, ['a-3']);
        assert.equal(r.json.ok, false);

        r = await bench(['verify', '--ledger', bad, '--data-dir', dir, '--trackctl', ctl]);
        assert.equal(r.code, 1);
        assert.match(r.stdout, /missing: b-1/);
        assert.match(r.stdout, /FAIL/);
    });

    it('fails with status 2 when the log cannot be read', async () => {
        const { dir } = fakeLog([]);
        const l = path.join(dir, 'l');
        fs.writeFileSync(l, 'a-1\n');
        const r = await bench(['verify', '--ledger', l, '--data-dir', dir, '--trackctl', '/bin/false']);
        assert.equal(r.code, 2);
        const r2 = await bench(['verify', '--ledger', path.join(dir, 'none'), '--data-dir', dir]);
        assert.equal(r2.code, 2);
    });
});

describe('trackbench end to end against trackd', { skip: !fs.existsSync(TRACKD) && 'bin/trackd not built' }, () => {
    it('every event trackd acknowledged is in its log (logread and trackctl cat agree)', async () => {
        const t = await startTrackd({ workers: 2 });
        const ledger = path.join(tempDir('trackbench-e2e-'), 'ledger');
        let r;
        try {
            r = await bench([
                '--target', `http://127.0.0.1:${t.port}`, '-c', '8', '--procs', '2', '-d', String(slow(2000) / 1000),
                '--batch', '20', '--mix', 'track=8,engage=1,groups=1',
                '--shape', 'form-b64,form-b64-raw,form-json,json,gzip,beacon,get',
                '--ledger', ledger, '--json', '-q',
            ], { timeoutMs: slow(60000) });
        } finally {
            t.proc.kill('SIGTERM');
            await t.waitExit();
        }
        assert.equal(r.code, 0, r.stderr);
        assert.ok(r.json.requests.ok > 20, JSON.stringify(r.json.requests));
        // trackd may shed load (503) on a slow machine; what trackbench must never see is garbage.
        for (const k of ['parse', 'read', 'write', 'connect']) assert.equal(r.json.errors[k], 0, JSON.stringify(r.json.errors));
        const acked = readLedger(ledger).length;
        assert.ok(acked > 0);
        assert.equal(acked, r.json.ledger.ids);

        const direct = await bench(['verify', '--ledger', ledger, '--data-dir', t.dataDir, '--json']);
        assert.equal(direct.code, 0, direct.stderr + direct.stdout);
        assert.equal(direct.json.missing, 0);
        assert.equal(direct.json.duplicated, 0);
        assert.equal(direct.json.acknowledged, acked);
        assert.equal(direct.json.found, acked);

        const viaCtl = await bench(['verify', '--ledger', ledger, '--data-dir', t.dataDir, '--trackctl', TRACKCTL, '--json']);
        assert.equal(viaCtl.code, 0, viaCtl.stderr);
        assert.deepEqual({ ...viaCtl.json, log_damage: 0 }, { ...direct.json, log_damage: 0 });
    });
});
