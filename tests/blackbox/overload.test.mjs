// trackd under fire, with real processes: thousands of slow clients against one worker while a
// normal client keeps sending, then an offered load several times what the worker can store.
// What must hold: the normal client never sees an error; slow clients are closed at their
// timeouts; the worker's memory stays within its budget (VmHWM from /proc/PID/status); the excess
// of an overload gets 503 + Retry-After quickly, while goodput stays near capacity; trackd
// recovers by itself within seconds; and nothing it acknowledged is missing from the log.
//
// The figures each test measured are printed (diagnostic lines), so a run documents itself.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';

import { b64json, byInsertId, oneByInsertId, trackEvent } from './lib/events.mjs';
import { RawConn, buildRequest, request } from './lib/http.mjs';
import { BIN_DIR, REPO_ROOT, SANITIZED, freePort, readRecords, sleep, slow, startTrackd, tempDir } from './lib/trackd.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const TRACKBENCH = [path.join(BIN_DIR, 'trackbench'), path.join(REPO_ROOT, 'bin', 'trackbench')].find((p) => fs.existsSync(p));
const MIB = 1024 * 1024;

const servers = [];
after(async () => {
    for (const s of servers) await s.kill();
});

/** VmRSS and VmHWM (bytes) of `pid`. */
function memOf(pid) {
    const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(text)[1]) * 1024;
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** One sample's value from a worker's /metrics text. */
function metric(text, name) {
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
    return m ? Number(m[1]) : NaN;
}

function sum(text, name) {
    let t = 0;
    for (const m of text.matchAll(new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, 'gm'))) t += Number(m[1]);
    return t;
}

async function scrape(port) {
    const r = await request(port, { path: '/metrics', timeout: slow(10000) });
    assert.equal(r.status, 200);
    return r.text;
}

function pct(sorted, p) {
    if (sorted.length === 0) return NaN;
    return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** Start a slowclients.mjs child; resolves {opened: Promise, done: Promise<summary>}. */
function slowClients(opts) {
    const p = spawn(process.execPath, [path.join(HERE, 'lib', 'slowclients.mjs'), JSON.stringify(opts)], {
        stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    let openedResolve;
    const opened = new Promise((r) => (openedResolve = r));
    const done = new Promise((resolve, reject) => {
        p.stdout.setEncoding('utf8');
        p.stdout.on('data', (d) => {
            out += d;
            const m = /^opened (\d+)$/m.exec(out);
            if (m) openedResolve(Number(m[1]));
        });
        p.on('error', reject);
        p.on('close', (code) => {
            const line = out.trim().split('\n').pop();
            try {
                resolve(JSON.parse(line));
            } catch {
                reject(new Error(`slowclients exited ${code} without a summary: ${out.slice(-300)}`));
            }
        });
    });
    return { opened, done };
}

/** A client that keeps sending valid events on a keep-alive connection until stopped. */
function normalClient(port) {
    const sent = [];
    const statuses = {};
    const latencies = [];
    let stop = false;
    const run = (async () => {
        let c = await RawConn.open(port);
        while (!stop) {
            const ev = trackEvent();
            const t0 = performance.now();
            let st;
            try {
                await c.write(buildRequest({ path: `/track?data=${encodeURIComponent(b64json(ev))}` }));
                const r = await c.response({ timeout: slow(10000) });
                st = r.status;
                if (r.status === 200 && r.text === '1') sent.push(ev);
            } catch (e) {
                st = `error: ${e.message.slice(0, 60)}`;
                c.close();
                c = await RawConn.open(port);
            }
            latencies.push(performance.now() - t0);
            statuses[st] = (statuses[st] || 0) + 1;
            await sleep(20);
        }
        c.close();
    })();
    return {
        async stop() {
            stop = true;
            await run;
            latencies.sort((a, b) => a - b);
            return { sent, statuses, latencies };
        },
    };
}

describe('slow clients against one worker', { timeout: 240000 }, () => {
    const SLOWLORIS = SANITIZED ? 2000 : 10000;
    const SLOW_POSTS = SANITIZED ? 200 : 500;
    const TIMEOUT_MS = 2000;
    const BUDGET = 48 * MIB;

    it(`${SLOWLORIS} slowloris heads and ${SLOW_POSTS} slow bodies are closed at their timeouts, a normal client sees no error, memory stays in budget`, async () => {
        const srv = await startTrackd({
            durability: 'write',
            args: [
                '--header-timeout-ms', String(TIMEOUT_MS), '--body-timeout-ms', String(TIMEOUT_MS),
                '--max-connections', String(SLOWLORIS + SLOW_POSTS + 1000),
                '--memory-budget-bytes', String(BUDGET),
            ],
        });
        servers.push(srv);
        const [worker] = srv.workerPids();
        const before = memOf(worker);
        const normal = normalClient(srv.port);

        // Spread the slow connections over child processes (each may hold only so many files).
        const per = 2500;
        const kids = [];
        for (let left = SLOWLORIS; left > 0; left -= per) {
            kids.push(slowClients({ port: srv.port, count: Math.min(per, left), mode: 'head', intervalMs: 400, maxMs: 15000 }));
        }
        kids.push(slowClients({ port: srv.port, count: SLOW_POSTS, mode: 'body', intervalMs: 400, maxMs: 15000 }));
        const opened = await Promise.all(kids.map((k) => k.opened));
        const mid = await scrape(srv.port);
        const results = await Promise.all(kids.map((k) => k.done));
        const afterMem = memOf(worker);
        const end = await scrape(srv.port);
        const n = await normal.stop();

        const heads = results.slice(0, -1);
        const bodies = results[results.length - 1];
        const headClose = heads.flatMap((r) => r.closeMs).sort((a, b) => a - b);
        const bodyClose = bodies.closeMs.slice().sort((a, b) => a - b);
        const headStatus = {};
        for (const r of heads) for (const [k, v] of Object.entries(r.statuses)) headStatus[k] = (headStatus[k] || 0) + v;
        const openedHeads = heads.reduce((t, r) => t + r.opened, 0);
        const peakReq = metric(end, 'trackd_request_memory_peak_bytes');
        const figures = {
            opened, connOpenMid: metric(mid, 'trackd_connections_open'),
            headCloseMs: { p1: pct(headClose, 1), p50: pct(headClose, 50), p99: pct(headClose, 99), max: headClose.at(-1) },
            bodyCloseMs: { p1: pct(bodyClose, 1), p50: pct(bodyClose, 50), p99: pct(bodyClose, 99), max: bodyClose.at(-1) },
            headStatus, bodyStatus: bodies.statuses,
            workerRssBeforeMiB: +(before.rss / MIB).toFixed(1), workerHwmAfterMiB: +(afterMem.hwm / MIB).toFixed(1),
            requestMemoryPeakMiB: +(peakReq / MIB).toFixed(1),
            normal: { statuses: n.statuses, p50ms: +pct(n.latencies, 50).toFixed(1), p99ms: +pct(n.latencies, 99).toFixed(1), max: +n.latencies.at(-1).toFixed(1) },
            timeouts: { header: metric(end, 'trackd_timeouts_total\\{worker="1",phase="header"\\}'), body: metric(end, 'trackd_timeouts_total\\{worker="1",phase="body"\\}') },
            shed: sum(end, 'trackd_shed_total'), loopLagMaxS: metric(end, 'trackd_loop_lag_max_seconds'),
        };
        console.log(`# slow clients: ${JSON.stringify(figures)}`);

        // Every slow connection was opened and held at the same time.
        assert.equal(openedHeads, SLOWLORIS, 'all slowloris connections opened');
        assert.equal(bodies.opened, SLOW_POSTS, 'all slow POST connections opened');
        assert.ok(figures.connOpenMid >= (SLOWLORIS + SLOW_POSTS) * 0.9, `connections open at once: ${figures.connOpenMid}`);
        // ... and closed by the server at its timeouts, with 408.
        for (const r of results) assert.equal(r.stillOpen, 0, 'a slow connection was never closed');
        assert.ok(headClose[0] >= TIMEOUT_MS - 150, `a head closed before its timeout: ${headClose[0]} ms`);
        assert.ok(pct(headClose, 99) < slow(TIMEOUT_MS + 4000), `heads closed late: p99 ${pct(headClose, 99)} ms`);
        // The whole body's deadline: twice body_timeout_ms plus 4096 bytes at 16 KiB/s (0.25 s).
        assert.ok(bodyClose[0] >= 2 * TIMEOUT_MS + 100, `a body closed before its deadline: ${bodyClose[0]} ms`);
        assert.ok(pct(bodyClose, 99) < slow(2 * TIMEOUT_MS + 4250), `bodies closed late: p99 ${pct(bodyClose, 99)} ms`);
        assert.ok((headStatus['408'] || 0) >= SLOWLORIS * 0.99, `heads answered 408: ${JSON.stringify(headStatus)}`);
        assert.ok((bodies.statuses['408'] || 0) >= SLOW_POSTS * 0.99, `bodies answered 408: ${JSON.stringify(bodies.statuses)}`);
        assert.ok(figures.timeouts.header >= SLOWLORIS * 0.99 && figures.timeouts.body >= SLOW_POSTS * 0.99);

        // The normal client: only successes, and every one of them stored.
        assert.deepStrictEqual(Object.keys(n.statuses), ['200'], `normal client saw ${JSON.stringify(n.statuses)}`);
        assert.ok(n.sent.length >= 20, `normal client got ${n.sent.length} answers`);
        // Memory: request buffers within the budget; the whole worker within budget + what a
        // connection costs outside it (its struct and handles, under 1 KiB) + slack for libc.
        assert.ok(peakReq <= BUDGET, `request memory peaked at ${peakReq}`);
        if (!SANITIZED) {
            const bound = before.rss + BUDGET + (SLOWLORIS + SLOW_POSTS) * 1024 + 16 * MIB;
            assert.ok(afterMem.hwm <= bound, `worker VmHWM ${afterMem.hwm} over ${bound}`);
        }
        await srv.stop();
        const recs = readRecords(srv.dataDir);
        for (const ev of n.sent) oneByInsertId(recs, ev.properties.$insert_id);
    });
});

/** Run trackbench; resolves the parsed --json report. */
function bench(args, timeoutMs) {
    return new Promise((resolve, reject) => {
        const p = spawn(TRACKBENCH, [...args, '--json', '-q'], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        p.stdout.on('data', (d) => (out += d));
        p.stderr.on('data', (d) => (err += d));
        const t = setTimeout(() => {
            p.kill('SIGKILL');
            reject(new Error(`trackbench ${args.join(' ')} ran past ${timeoutMs} ms\n${err}`));
        }, timeoutMs);
        p.on('close', (code) => {
            clearTimeout(t);
            try {
                resolve({ code, json: JSON.parse(out), stderr: err });
            } catch {
                reject(new Error(`trackbench exited ${code}: ${err.slice(-500)}`));
            }
        });
    });
}

describe('overload at several times capacity', { skip: !TRACKBENCH && 'no trackbench binary', timeout: 240000 }, () => {
    it('the excess gets 503 quickly, goodput stays near capacity, memory bounded, recovery in seconds, nothing acknowledged lost', async () => {
        const BUDGET = 32 * MIB;
        const QUEUE = 32 * MIB;
        const BATCH = 2000;
        // jansson only. With the single-pass validator a worker stores ~930k events/s of these
        // 2000-event batches using both cores of this machine (its loop, and its log writer
        // checksumming and writing ~280 MB/s: 1.2-1.6 CPU seconds per second measured), while
        // the light closed-loop client of the capacity run needs little. Offering 4x that
        // (~1 GB/s of bodies) takes the load generator most of a core, so the worker's capacity
        // during the overload is not what was measured: goodput read 0.52 x. With jansson the
        // capacity (~200k events/s) is one core's, the generator has the other, and the test
        // measures what it means to (goodput 1.01 x). bench/README.md, "Open questions".
        const srv = await startTrackd({
            args: ['--memory-budget-bytes', String(BUDGET), '--queue-max-bytes', String(QUEUE), '--json-fast-path', 'off'],
        });
        servers.push(srv);
        const [worker] = srv.workerPids();
        const target = `http://127.0.0.1:${srv.port}`;
        const dir = tempDir('trackd-overload-');
        const ledger = path.join(dir, 'ledger');
        const before = memOf(worker);

        // Capacity: closed loop with enough connections to keep the worker busy.
        const cap = await bench(['--target', target, '-c', '16', '--batch', String(BATCH), '-d', String(slow(4)), '--ledger', ledger], slow(60000));
        const capacity = cap.json.rates.events_per_s;
        assert.ok(capacity > 0, 'capacity measured');

        // Overload: open loop at 4x the requests per second the worker stored, each request
        // sent once (the load a real population of clients offers, whatever the server does).
        const rate = (4 * capacity) / BATCH;
        const probe = { statuses: {}, ms503: [], ms200: [] };
        let probing = true;
        const probeRun = (async () => {
            while (probing) {
                const t0 = performance.now();
                try {
                    const r = await request(srv.port, { path: `/track?data=${encodeURIComponent(b64json(trackEvent()))}`, timeout: slow(10000) });
                    probe.statuses[r.status] = (probe.statuses[r.status] || 0) + 1;
                    if (r.status === 503) {
                        probe.ms503.push(performance.now() - t0);
                        assert.equal(r.headers['retry-after'], '1');
                    } else if (r.status === 200) probe.ms200.push(performance.now() - t0);
                } catch (e) {
                    probe.statuses.error = (probe.statuses.error || 0) + 1;
                }
                await sleep(50);
            }
        })();
        const over = await bench(['--target', target, '-c', '400', '--rate', String(rate), '--batch', String(BATCH), '-d', String(slow(8)), '--timeout-ms', '15000', '--ledger', ledger], slow(120000));
        probing = false;
        await probeRun;
        const overMem = memOf(worker);
        const m = await scrape(srv.port);

        // Recovery: /readyz back to 200, then a normal load sees no error at all.
        const t0 = Date.now();
        let ready = null;
        while (Date.now() - t0 < slow(15000)) {
            const r = await request(srv.port, { path: '/readyz', timeout: slow(5000) });
            if (r.status === 200) {
                ready = Date.now() - t0;
                break;
            }
            await sleep(100);
        }
        const calm = await bench(['--target', target, '-c', '4', '--batch', '50', '-d', String(slow(2)), '--ledger', ledger], slow(60000));

        const o = over.json;
        probe.ms503.sort((a, b) => a - b);
        probe.ms200.sort((a, b) => a - b);
        const figures = {
            capacityEventsPerS: Math.round(capacity),
            offeredRequestsPerS: +rate.toFixed(1),
            overload: { status: o.status, goodputEventsPerS: Math.round(o.rates.events_per_s), goodputOfCapacity: +(o.rates.events_per_s / capacity).toFixed(2), errors: o.errors, unsent: o.requests.unsent, latencyP50ms: o.latency_ms.p50 },
            probe: { statuses: probe.statuses, ms503: { p50: pct(probe.ms503, 50), p90: pct(probe.ms503, 90), max: probe.ms503.at(-1) }, ms200p50: pct(probe.ms200, 50) },
            shed: { queue: metric(m, 'trackd_shed_total\\{worker="1",reason="queue"\\}'), memory: metric(m, 'trackd_shed_total\\{worker="1",reason="memory"\\}'), cpu: metric(m, 'trackd_shed_total\\{worker="1",reason="cpu"\\}') },
            requestMemoryPeakMiB: +(metric(m, 'trackd_request_memory_peak_bytes') / MIB).toFixed(1),
            workerRssBeforeMiB: +(before.rss / MIB).toFixed(1), workerHwmMiB: +(overMem.hwm / MIB).toFixed(1),
            readyAfterMs: ready,
            calm: { status: calm.json.status, errors: calm.json.errors.total },
        };
        console.log(`# overload: ${JSON.stringify(figures)}`);

        const s503 = o.status['503'] || 0;
        assert.ok(s503 > 0, 'the excess was refused with 503');
        assert.equal(o.retry_after.count, s503, 'every 503 carried Retry-After');
        // Nothing but 200 and 503: no timeouts, resets or other statuses.
        assert.deepStrictEqual(Object.keys(o.status).sort(), ['200', '503'], JSON.stringify(o.status));
        assert.equal(o.errors.total, s503, `errors besides 503: ${JSON.stringify(o.errors)}`);
        assert.ok(o.rates.events_per_s >= capacity * 0.6, `goodput ${o.rates.events_per_s} events/s, capacity ${capacity}`);
        // 503s come quickly (the probe's small requests): a fraction of what a stored request takes.
        if (probe.ms503.length > 0) {
            assert.ok(pct(probe.ms503, 50) < slow(500), `median 503 after ${pct(probe.ms503, 50)} ms`);
            assert.ok(probe.ms503.at(-1) < slow(3000), `slowest 503 after ${probe.ms503.at(-1)} ms`);
        }
        assert.equal(probe.statuses.error || 0, 0, 'the probe saw no connection error');
        // Memory stays bounded: request buffers within their budget, the worker within budget
        // plus the writer queue plus slack.
        assert.ok(metric(m, 'trackd_request_memory_peak_bytes') <= BUDGET);
        if (!SANITIZED) assert.ok(overMem.hwm <= before.rss + BUDGET + QUEUE + 32 * MIB, `worker VmHWM ${overMem.hwm}`);
        // It recovers by itself.
        assert.ok(ready !== null && ready < slow(10000), `/readyz 200 after ${ready} ms`);
        assert.equal(calm.json.errors.total, 0, `errors after the overload: ${JSON.stringify(calm.json.errors)}`);

        await srv.stop();
        // Every acknowledged event of all three runs is in the log.
        const v = await new Promise((resolve) => {
            const p = spawn(TRACKBENCH, ['verify', '--ledger', ledger, '--data-dir', srv.dataDir, '--trackctl', path.join(BIN_DIR, 'trackctl')], { stdio: ['ignore', 'pipe', 'pipe'] });
            let out = '';
            p.stdout.on('data', (d) => (out += d));
            p.stderr.on('data', (d) => (out += d));
            p.on('close', (code) => resolve({ code, out }));
        });
        assert.equal(v.code, 0, `trackbench verify: ${v.out}`);
        console.log(`# overload verify: ${v.out.trim().split('\n').pop()}`);
    });
});

describe('at max_connections', () => {
    it('a connection over the limit gets a whole 503 with Retry-After and is closed; the refusal is counted, nothing stored', async () => {
        const LIMIT = 3;
        const srv = await startTrackd({ args: ['--max-connections', String(LIMIT), '--retry-after-s', '2'] });
        servers.push(srv);
        const held = [];
        try {
            // Fill the limit with connections that have been answered once (so they are surely accepted).
            for (let i = 0; i < LIMIT; i++) {
                const c = await RawConn.open(srv.port);
                held.push(c);
                await c.write(buildRequest({ path: '/healthz' }));
                assert.equal((await c.response({ timeout: slow(5000) })).status, 200);
            }
            // The next one is refused on accept; its request (with a body) arrives after the 503 was sent.
            const over = await RawConn.open(srv.port);
            held.push(over);
            await sleep(300);
            const ev = trackEvent();
            const body = 'data=' + encodeURIComponent(b64json(ev)) + '&pad=' + 'x'.repeat(64 * 1024);
            try {
                await over.write(buildRequest({ method: 'POST', path: '/track', body, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } }));
            } catch {
                /* a reset makes the write fail: the assertions below say so */
            }
            await sleep(300);
            const r = await over.response({ timeout: slow(5000) });
            assert.equal(r.status, 503, `got ${r.status} ${r.text}`);
            assert.equal(r.headers['retry-after'], '2');
            assert.ok(await over.waitClosed(slow(5000)), 'the refused connection is closed by the server');
            held.shift().close(); // a free slot for the scrape
            await sleep(200);
            const text = await scrape(srv.port);
            assert.ok(metric(text, 'trackd_connections_rejected_total') >= 1, 'the refusal is counted');
            // Nothing of the refused request was stored.
            assert.equal(byInsertId(readRecords(srv.dataDir), ev.properties.$insert_id).length, 0);
        } finally {
            for (const c of held) c.close();
        }
    });
});
