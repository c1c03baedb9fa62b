// trackd behind a real nginx (Debian's), configured by the project's generator
// (scripts/gen-nginx.sh from conf/nginx.conf.in) with one upstream server per worker port
// (--worker-listen). What a deployment relies on:
//   - every payload shape goes through nginx and is stored with the address nginx saw (ip=1),
//     never one the client wrote into X-Forwarded-For / X-Real-IP, whether nginx overwrites
//     the header (the project's config) or appends to it (a chain of proxies);
//   - kill -9 of a worker under load: the master restarts it at once; at most the requests in
//     flight on that worker fail (counted and reported), nothing acknowledged is lost;
//   - a rolling restart (SIGHUP) and a binary upgrade (SIGUSR2) under load: no request fails,
//     nothing acknowledged is lost, and afterwards the new workers (the new binary) serve;
//   - a graceful stop (SIGTERM) under load, directly and through nginx: everything acknowledged
//     is stored, the master exits 0 within shutdown_timeout_ms, and what comes after the stop
//     fails cleanly (connection refused, or 502 from nginx), never with a 200.
// Load comes from bin/trackbench (keep-alive, unique $insert_ids, a ledger of what trackd
// acknowledged); `trackbench verify` then checks every acknowledged id against the log. Every
// address is on the loopback; every process a test starts is stopped by it.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { describe, it } from 'node:test';

import { assertStored, b64json, oneByInsertId, trackEvent } from './lib/events.mjs';
import { request } from './lib/http.mjs';
import { freePorts, nginxUnavailable, startNginx } from './lib/nginx.mjs';
import {
    BIN_DIR,
    REPO_ROOT,
    SANITIZED,
    TRACKD,
    Trackd,
    childPids,
    readRecords,
    sleep,
    slow,
    startTrackd,
    tempDir,
} from './lib/trackd.mjs';

// The sanitized build directory has no trackbench: the optimised one loads it just as well.
const TRACKBENCH = [path.join(BIN_DIR, 'trackbench'), path.join(REPO_ROOT, 'bin', 'trackbench')].find((p) => fs.existsSync(p));
const SKIP = nginxUnavailable() || (!TRACKBENCH && 'no trackbench binary (build it with make)');

/** Open-loop rate of the steady load (requests/s, 5 events each): well within what 2 cores serve. */
const RATE = SANITIZED ? 300 : 1500;
const FORM = 'application/x-www-form-urlencoded';

/** Is `pid` a live process (not gone, not a zombie)? */
function alive(pid) {
    try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
    } catch {
        return false;
    }
}

/** The pid in `file`, or 0 (missing: it is renamed while an upgrade is under way). */
function readPid(file) {
    try {
        return Number(fs.readFileSync(file, 'utf8').trim()) || 0;
    } catch {
        return 0;
    }
}

/** Poll `cond` until it is truthy; returns its value, or throws `what` after `ms`. */
async function waitFor(cond, what, ms = slow(10000), every = 10) {
    const deadline = Date.now() + ms;
    for (;;) {
        const v = await cond();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        await sleep(every);
    }
}

/**
 * The port a worker serves alone, from its process title "worker N [HOST:PORT]"; 0 while it
 * still has the master's title (just forked).
 */
function workerPort(pid) {
    try {
        const title = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
        const m = /worker \d+ \[[^\]]*:(\d+)\]/.exec(title);
        return m ? Number(m[1]) : 0;
    } catch {
        return 0;
    }
}

/**
 * Run trackbench against 127.0.0.1:`port` for `seconds`, writing `ledger`: closed loop over
 * `connections` keep-alive connections, or open loop at `rate` requests/s over at most that
 * many. POST bodies only (form base64, raw JSON, gzip; nginx may not retry a POST it has sent),
 * 5 events each. Returns {finish(): the parsed --json report once it exits 0, kill()}.
 */
function startBench(port, { seconds, connections = 16, rate = 0, ledger }) {
    const args = [
        '--target', `http://127.0.0.1:${port}`, '-d', String(seconds), '-c', String(connections),
        '--shape', 'form-b64=3,json=1,gzip=1', '--batch', '5', '--event-bytes', '200',
        '--timeout-ms', String(slow(5000)), '--ledger', ledger, '--json', '-q',
    ];
    if (rate) args.push('--rate', String(rate));
    const proc = spawn(TRACKBENCH, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.setEncoding('utf8');
    proc.stderr.setEncoding('utf8');
    proc.stdout.on('data', (d) => (stdout += d));
    proc.stderr.on('data', (d) => (stderr += d));
    const done = new Promise((resolve) => {
        proc.on('close', (code) => {
            let report = null;
            try {
                report = JSON.parse(stdout);
            } catch {
                /* reported below */
            }
            resolve({ code, report, stderr });
        });
    });
    return {
        async finish() {
            const r = await done;
            assert.equal(r.code, 0, `trackbench exited ${r.code}: ${r.stderr.slice(-2000)}`);
            assert.ok(r.report, `trackbench printed no JSON report: ${r.stderr.slice(-2000)}`);
            return r.report;
        },
        kill() {
            if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
        },
    };
}

/** `trackbench verify` of `ledger` against `dataDir`: its --json report and exit status. */
function verifyLedger(ledger, dataDir) {
    const r = spawnSync(TRACKBENCH, ['verify', '--ledger', ledger, '--data-dir', dataDir, '--json'], {
        encoding: 'utf8',
        timeout: slow(60000),
    });
    let report;
    try {
        report = JSON.parse(r.stdout);
    } catch {
        throw new Error(`trackbench verify printed no JSON (status ${r.status}): ${r.stdout}\n${r.stderr}`);
    }
    return { status: r.status, ...report };
}

/** Nothing acknowledged is missing and nothing is stored twice; returns the verify report. */
function assertLedgerStored(ledger, dataDir, what) {
    const v = verifyLedger(ledger, dataDir);
    assert.ok(v.acknowledged > 0, `${what}: nothing was acknowledged`);
    assert.equal(v.missing, 0, `${what}: ${v.missing} of ${v.acknowledged} acknowledged events are not in the log ` +
        `(first: ${v.first_missing.join(' ')})`);
    assert.equal(v.duplicated, 0, `${what}: ${v.duplicated} acknowledged events are stored twice`);
    assert.equal(v.status, 0, `${what}: trackbench verify exited ${v.status}`);
    return v;
}

/** "N ok, M failed (502: k, ...)" for a trackbench report (a refused connect sent nothing). */
function describeErrors(rep) {
    const e = rep.errors;
    const kinds = ['connect', 'timeout', 'read', 'write', 'parse'].filter((k) => e[k]).map((k) => `${k}: ${e[k]}`);
    for (const [code, n] of Object.entries(e.status)) kinds.push(`${code}: ${n}`);
    return `${rep.requests.ok} ok, ${e.total} failed${kinds.length ? ` (${kinds.join(', ')})` : ''}`;
}

/** nginx's error log, each distinct message once with its count (for a failure's message). */
function nginxErrors(ngx) {
    const counts = new Map();
    for (const line of ngx.errorLog().split('\n')) {
        const m = /\[(error|warn|crit|alert)\] \d+#\d+: (?:\*\d+ )?(.*?)(?:, client: .*)?$/.exec(line);
        if (m) counts.set(m[2], (counts.get(m[2]) || 0) + 1);
    }
    return [...counts].map(([msg, n]) => `${n} x ${msg}`).join('\n') || '(nginx logged no error)';
}

/** trackd with 2 workers on their own ports behind nginx; {srv, ngx, base, workerBase}. */
async function startPair({ args = [], trackd } = {}) {
    const base = await freePorts(3);
    const workerBase = base + 1;
    const all = ['--worker-listen', `127.0.0.1:${workerBase}`, '--trusted-proxy', '127.0.0.1/32', ...args];
    const srv = trackd ? await trackd(base, all) : await startTrackd({ workers: 2, port: base, args: all });
    let ngx;
    try {
        ngx = await startNginx({ upstreamPort: workerBase, workers: 2 });
        await waitFor(async () => (await request(ngx.port, { path: '/healthz' }).catch(() => ({}))).status === 200,
            'trackd /healthz through nginx');
    } catch (e) {
        if (ngx) await ngx.stop();
        await srv.kill();
        throw e;
    }
    return { srv, ngx, base, workerBase };
}

/** Events through nginx after a restart still land: one request, acknowledged and stored. */
async function sendOne(port) {
    const ev = trackEvent({ after: 'restart' });
    const r = await request(port, {
        method: 'POST', path: '/track', headers: { 'Content-Type': FORM },
        body: `data=${encodeURIComponent(b64json(ev))}`, timeout: slow(5000),
    });
    assert.equal(r.status, 200, `after the restart: ${r.status} ${r.text}`);
    assert.equal(r.text, '1');
    return ev;
}

describe('nginx in front: payloads and the client address', () => {
    /** An event whose base64 holds a '+' (a raw '+' in an unescaped form must stay one). */
    function eventWithPlus() {
        const ev = trackEvent({ note: '' });
        for (let i = 0; i < 64 && !b64json(ev).includes('+'); i++) ev.properties.note += '>';
        assert.ok(b64json(ev).includes('+'));
        return ev;
    }

    /** Each shape of API.md: name, the events it sends, and the request (without the address). */
    function shapes() {
        const one = () => [trackEvent()];
        const chunked = (buf) => {
            const cuts = [0, 1, 17, Math.floor(buf.length / 2), buf.length];
            let out = '';
            for (let i = 0; i + 1 < cuts.length; i++) {
                const part = buf.subarray(cuts[i], cuts[i + 1]);
                out += `${part.length.toString(16)}\r\n${part.toString('latin1')}\r\n`;
            }
            return Buffer.from(`${out}0\r\n\r\n`, 'latin1');
        };
        return [
            ['GET ?data= base64', one(), (evs) => ({ path: `/track/?ip=1&data=${encodeURIComponent(b64json(evs[0]))}` })],
            ['POST form base64, escaped', [trackEvent(), trackEvent()], (evs) => ({
                method: 'POST', path: '/track/?ip=1', headers: { 'Content-Type': FORM },
                body: `data=${encodeURIComponent(b64json(evs))}`,
            })],
            ['POST form base64, not escaped', [eventWithPlus()], (evs) => ({
                method: 'POST', path: '/track?ip=1', headers: { 'Content-Type': FORM }, body: `data=${b64json(evs[0])}`,
            })],
            ['POST form JSON, ip=1 in the body', one(), (evs) => ({
                method: 'POST', path: '/track', headers: { 'Content-Type': FORM },
                body: `data=${encodeURIComponent(JSON.stringify(evs[0]))}&ip=1`,
            })],
            ['POST raw JSON object', one(), (evs) => ({
                method: 'POST', path: '/track?ip=1', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(evs[0]),
            })],
            ['POST raw JSON array', [trackEvent(), trackEvent(), trackEvent()], (evs) => ({
                method: 'POST', path: '/track?ip=1', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(evs),
            })],
            ['sendBeacon text/plain body', [trackEvent(), eventWithPlus()], (evs) => ({
                method: 'POST', path: '/track/?ip=1', headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
                body: `data=${encodeURIComponent(b64json(evs))}`,
            })],
            ['gzip JSON body', [trackEvent(), trackEvent()], (evs) => ({
                method: 'POST', path: '/track?ip=1', headers: { 'Content-Type': 'application/json', 'Content-Encoding': 'gzip' },
                body: zlib.gzipSync(JSON.stringify(evs)),
            })],
            ['gzip form body', one(), (evs) => ({
                method: 'POST', path: '/track?ip=1', headers: { 'Content-Type': FORM, 'Content-Encoding': 'gzip' },
                body: zlib.gzipSync(`data=${encodeURIComponent(b64json(evs[0]))}`),
            })],
            ['chunked form body', [trackEvent(), trackEvent()], (evs) => ({
                method: 'POST', path: '/track/?ip=1', headers: { 'Content-Type': FORM, 'Transfer-Encoding': 'chunked' },
                body: chunked(Buffer.from(`data=${encodeURIComponent(b64json(evs))}`)),
            })],
        ];
    }

    it('every payload shape is stored with the address nginx saw; forged X-Forwarded-For and X-Real-IP are not believed', { skip: SKIP, timeout: slow(60000) }, async (t) => {
        const { srv, ngx, workerBase } = await startPair();
        // The same pool behind a variant that appends to X-Forwarded-For, as a chain of proxies
        // does: trackd must take the rightmost address that is not a trusted proxy.
        let appending;
        try {
            appending = await startNginx({
                upstreamPort: workerBase,
                workers: 2,
                edit: (text) => text.replace('proxy_set_header X-Forwarded-For $remote_addr;',
                    'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;'),
            });
            const sent = []; // {what, events, ip}
            const forged = [
                ['X-Forwarded-For', '6.6.6.6'],
                ['X-Forwarded-For', '6.6.6.6, 127.0.0.1'],
                ['X-Real-IP', '7.7.7.7'],
                ['Forwarded', 'for=8.8.8.8'],
            ];
            let n = 0;
            for (const [proxy, how] of [[ngx, 'overwriting'], [appending, 'appending']]) {
                for (const [what, events, build] of shapes()) {
                    const from = n++ % 2 ? '127.0.0.3' : '127.0.0.2';
                    const req = build(events);
                    // Every other request carries forged address headers as well.
                    if (n % 2 === 0) req.headers = [...Object.entries(req.headers || {}), ...forged];
                    const r = await request(proxy.port, { ...req, localAddress: from, timeout: slow(5000) });
                    assert.equal(r.status, 200, `${how} nginx, ${what}: ${r.status} ${r.text}`);
                    assert.equal(r.text, '1', `${how} nginx, ${what}`);
                    sent.push({ what: `${how} nginx, ${what}${n % 2 === 0 ? ', forged headers' : ''}`, events, ip: from });
                }
            }
            // The control: trackd believes these headers from 127.0.0.1 (nginx) and nobody else.
            const trusted = trackEvent();
            let r = await request(workerBase, {
                method: 'POST', path: '/track?ip=1', localAddress: '127.0.0.1',
                headers: { 'Content-Type': FORM, 'X-Forwarded-For': '6.6.6.6' }, body: `data=${encodeURIComponent(b64json(trusted))}`,
            });
            assert.equal(r.status, 200);
            sent.push({ what: 'direct from the trusted proxy address', events: [trusted], ip: '6.6.6.6' });
            const untrusted = trackEvent();
            r = await request(workerBase + 1, {
                method: 'POST', path: '/track?ip=1', localAddress: '127.0.0.2',
                headers: { 'Content-Type': FORM, 'X-Forwarded-For': '6.6.6.6', 'X-Real-IP': '6.6.6.6' },
                body: `data=${encodeURIComponent(b64json(untrusted))}`,
            });
            assert.equal(r.status, 200);
            sent.push({ what: 'direct from an untrusted address', events: [untrusted], ip: '127.0.0.2' });

            // nginx saw the client's own address and passed each request to a worker port.
            const viaNginx = ngx.accessRecords().filter((a) => a.request.includes('/track'));
            assert.equal(viaNginx.length, shapes().length);
            for (const a of viaNginx) {
                assert.equal(a.status, 200);
                assert.match(a.upstreamAddr, new RegExp(`^127\\.0\\.0\\.1:(${workerBase}|${workerBase + 1})$`));
                assert.match(a.client, /^127\.0\.0\.[23]$/);
            }

            await srv.stop();
            const recs = readRecords(srv.dataDir);
            let checked = 0;
            for (const s of sent) {
                for (const ev of s.events) {
                    const rec = oneByInsertId(recs, ev.properties.$insert_id);
                    assert.equal(rec.properties.ip, s.ip, `${s.what}: recorded ip`);
                    assertStored(rec, ev, { endpoint: 'track', ip: s.ip });
                    checked++;
                }
            }
            t.diagnostic(`${sent.length} requests, ${checked} events stored with the client address nginx saw`);
        } finally {
            if (appending) await appending.stop();
            await ngx.stop();
            await srv.kill();
        }
    });
});

describe('nginx in front: failures and restarts under load', () => {
    it('kill -9 of one worker: the master restarts it, at most the requests in flight on it fail, nothing acknowledged is lost', { skip: SKIP, timeout: slow(60000) }, async (t) => {
        const { srv, ngx } = await startPair();
        const ledger = path.join(tempDir(), 'ledger');
        const connections = 16;
        let load;
        try {
            const before = await waitFor(() => {
                const p = srv.workerPids();
                return p.length === 2 && p.every(workerPort) && p;
            }, 'two workers with their titles');
            const victim = before[0];
            const survivor = before[1];
            const victimPort = workerPort(victim);
            load = startBench(ngx.port, { seconds: 4, connections, ledger });
            await sleep(1500);
            const killedAt = Date.now();
            process.kill(victim, 'SIGKILL');
            const after = await waitFor(() => {
                const p = srv.workerPids();
                return p.length === 2 && !p.includes(victim) && p;
            }, 'the restarted worker', slow(2000), 1);
            const restartMs = Date.now() - killedAt;
            assert.ok(after.includes(survivor), 'the other worker was restarted too');
            const fresh = after.find((p) => p !== survivor);
            assert.equal(await waitFor(() => workerPort(fresh), 'the new worker\'s title'), victimPort, 'the new worker serves the same port');
            const rep = await load.finish();
            await waitFor(() => new RegExp(`killed by signal 9 .*restarted as pid ${fresh}`).test(srv.stderr), 'the restart log line');

            // Every request got an answer; those that failed were on the killed worker: nginx
            // had sent them over a connection that died with it. A closed loop has at most one
            // request per client connection outstanding, so at most `connections` were in flight.
            const failed = rep.errors.total;
            assert.equal(rep.requests.rejected_2xx, 0, 'a 2xx answer without "1"');
            assert.equal(failed, rep.errors.status['502'] || 0, `only 502s from nginx: ${describeErrors(rep)}`);
            assert.ok(failed <= connections, `more failures than requests in flight: ${describeErrors(rep)}\n${nginxErrors(ngx)}`);
            assert.ok(rep.requests.ok > 100, `only ${rep.requests.ok} requests went through`);
            const bad = ngx.accessRecords().filter((a) => a.request.startsWith('POST /track') && a.status !== 200);
            assert.equal(bad.length, failed, 'nginx logged as many failures as trackbench saw');
            for (const a of bad) {
                assert.equal(a.upstreamAddr, `127.0.0.1:${victimPort}`, `a failure elsewhere than on the killed worker: ${JSON.stringify(a)}`);
            }
            // After the restart both workers serve through nginx again.
            await sendOne(ngx.port);
            await ngx.stop();
            await srv.stop();
            const v = assertLedgerStored(ledger, srv.dataDir, 'kill -9');
            t.diagnostic(`kill -9 under load: ${describeErrors(rep)}; worker back in ${restartMs} ms; ` +
                `${v.acknowledged} events acknowledged, ${v.found} of them stored, ${v.unacknowledged} stored unacknowledged`);
        } finally {
            if (load) load.kill();
            await ngx.stop();
            await srv.kill();
        }
    });

    it('rolling restarts (SIGHUP) under steady load: no failed request, nothing acknowledged lost, new workers serve', { skip: SKIP, timeout: slow(60000) }, async (t) => {
        const { srv, ngx } = await startPair();
        const ledger = path.join(tempDir(), 'ledger');
        const reloads = 3;
        let load;
        try {
            assert.equal(srv.workerPids().length, 2);
            load = startBench(ngx.port, { seconds: 5, rate: RATE, connections: 32, ledger });
            await sleep(800);
            // A few in a row: each replaces both workers while nginx holds keep-alive
            // connections to them, busy or idle.
            for (let i = 1; i <= reloads; i++) {
                const old = srv.workerPids();
                process.kill(srv.pid, 'SIGHUP');
                await waitFor(() => {
                    const p = srv.workerPids().filter((x) => !old.includes(x));
                    return p.length === 2 && p;
                }, `two new workers (reload ${i})`, slow(20000));
                await waitFor(() => (srv.stderr.match(/reload done/g) || []).length === i, `reload ${i} done`);
                for (const w of old) await waitFor(() => !alive(w), `old worker ${w} to exit`);
                await sleep(600);
            }
            const rep = await load.finish();
            assert.equal(rep.errors.total, 0, `rolling restarts: ${describeErrors(rep)}\n${nginxErrors(ngx)}`);
            assert.equal(rep.requests.rejected_2xx, 0);
            assert.ok(rep.requests.ok > 100, `only ${rep.requests.ok} requests went through`);
            assert.equal((srv.stderr.match(/reload: worker \d replaced/g) || []).length, 2 * reloads);
            const ev = await sendOne(ngx.port);
            await ngx.stop();
            await srv.stop();
            const v = assertLedgerStored(ledger, srv.dataDir, 'SIGHUP');
            oneByInsertId(readRecords(srv.dataDir), ev.properties.$insert_id);
            t.diagnostic(`${reloads} x SIGHUP under ${RATE} req/s: ${describeErrors(rep)}; ${v.acknowledged} events acknowledged, ` +
                `${v.found} stored, ${v.missing} missing`);
        } finally {
            if (load) load.kill();
            await ngx.stop();
            await srv.kill();
        }
    });

    it('binary upgrade (SIGUSR2) under steady load: no failed request, nothing acknowledged lost, the new binary serves', { skip: SKIP, timeout: slow(90000) }, async (t) => {
        const dir = tempDir();
        const bin = path.join(dir, 'trackd');
        fs.copyFileSync(TRACKD, bin);
        fs.chmodSync(bin, 0o755);
        const dataDir = path.join(dir, 'data');
        const pidfile = path.join(dataDir, 'trackd.pid');
        const { srv, ngx } = await startPair({
            trackd: async (port, args) => {
                const argv = ['--listen', `127.0.0.1:${port}`, '--workers', '2', '--data-dir', dataDir, ...args];
                const s = new Trackd(spawn(bin, argv, { stdio: ['ignore', 'pipe', 'pipe'] }), { port, host: '127.0.0.1', dataDir, args: argv });
                await s.waitHealthy();
                return s;
            },
        });
        const ledger = path.join(dir, 'ledger');
        let load;
        let newPid = 0;
        try {
            const oldWorkers = srv.workerPids();
            assert.equal(oldWorkers.length, 2);
            // The new build: the same program with a marker appended (an ELF file runs the same
            // with trailing bytes), installed as a new file under the old name, as an install does.
            const marker = `trackd-upgrade-test-${process.pid}-${Date.now()}`;
            fs.writeFileSync(`${bin}.new`, Buffer.concat([fs.readFileSync(TRACKD), Buffer.from(marker)]), { mode: 0o755 });
            load = startBench(ngx.port, { seconds: 5, rate: RATE, connections: 32, ledger });
            await sleep(1000);
            fs.renameSync(`${bin}.new`, bin);
            const newIno = fs.statSync(bin).ino;
            process.kill(srv.pid, 'SIGUSR2');
            newPid = await waitFor(() => {
                const p = readPid(pidfile);
                return p && p !== srv.pid && p;
            }, 'the new master to own the pidfile', slow(20000));
            await waitFor(() => srv.exited, 'the old master to exit', slow(20000));
            assert.deepEqual(srv.exited, { code: 0, signal: null }, srv.stderr.slice(-3000));
            for (const w of oldWorkers) await waitFor(() => !alive(w), `old worker ${w} to exit`);
            const rep = await load.finish();
            assert.equal(rep.errors.total, 0, `binary upgrade: ${describeErrors(rep)}\n${nginxErrors(ngx)}`);
            assert.equal(rep.requests.rejected_2xx, 0);
            assert.ok(rep.requests.ok > 100, `only ${rep.requests.ok} requests went through`);

            // The new master and its workers run the file now on disk, and they alone serve.
            assert.ok(alive(newPid));
            const newWorkers = childPids(newPid);
            assert.equal(newWorkers.length, 2, 'the new master has its two workers');
            for (const p of [newPid, ...newWorkers]) {
                assert.equal(fs.statSync(`/proc/${p}/exe`).ino, newIno, `pid ${p} runs the new file`);
                assert.ok(fs.readFileSync(`/proc/${p}/exe`).subarray(-marker.length).toString() === marker, `pid ${p}'s binary has the marker`);
            }
            const ev = await sendOne(ngx.port);

            process.kill(newPid, 'SIGTERM');
            await waitFor(() => !alive(newPid), 'the new master to exit', slow(20000));
            newPid = 0;
            await ngx.stop();
            srv.assertClean();
            const v = assertLedgerStored(ledger, dataDir, 'SIGUSR2');
            oneByInsertId(readRecords(dataDir), ev.properties.$insert_id);
            t.diagnostic(`SIGUSR2 under ${RATE} req/s: ${describeErrors(rep)}; ${v.acknowledged} events acknowledged, ` +
                `${v.found} stored, ${v.missing} missing`);
        } finally {
            if (load) load.kill();
            // The new master is not our child: found by its pidfile even if the test failed
            // before it saw it (it holds our stderr pipe, which would keep this process alive).
            newPid = newPid || readPid(pidfile) || readPid(`${pidfile}.oldbin`);
            if (newPid && newPid !== srv.pid && alive(newPid)) process.kill(newPid, 'SIGKILL');
            await ngx.stop();
            await srv.kill();
        }
    });

    /**
     * SIGTERM to the master while trackbench runs against `port` (trackd's own, or nginx's), in
     * open loop so that what is sent after the stop stays bounded: returns {rep, stopMs, v}. The
     * load goes on for a while after the master exited.
     */
    async function stopUnderLoad(srv, port, ledger, timeoutMs) {
        const load = startBench(port, { seconds: 4, rate: RATE, connections: 32, ledger });
        try {
            await sleep(1500);
            const t0 = Date.now();
            process.kill(srv.pid, 'SIGTERM');
            const e = await srv.waitExit(slow(timeoutMs + 5000));
            const stopMs = Date.now() - t0;
            assert.ok(e, `the master has not exited ${timeoutMs + 5000} ms after SIGTERM`);
            assert.deepEqual(e, { code: 0, signal: null }, srv.stderr.slice(-3000));
            assert.ok(stopMs < timeoutMs, `the master took ${stopMs} ms to stop (shutdown_timeout_ms ${timeoutMs})`);
            assert.doesNotMatch(srv.stderr, /killing it/);
            srv.assertClean();
            const rep = await load.finish();
            assert.equal(rep.requests.rejected_2xx, 0, 'a 2xx answer without "1"');
            assert.ok(rep.requests.ok > 100, `only ${rep.requests.ok} requests went through`);
            return { rep, stopMs, v: assertLedgerStored(ledger, srv.dataDir, 'SIGTERM') };
        } finally {
            load.kill();
        }
    }

    it('graceful stop (SIGTERM) under direct load: everything acknowledged is stored, exit 0 in time, then connections are refused', { skip: SKIP, timeout: slow(60000) }, async (t) => {
        const timeoutMs = slow(5000);
        const port = await freePorts(1);
        const srv = await startTrackd({ workers: 2, port, args: ['--shutdown-timeout-ms', String(timeoutMs)] });
        const ledger = path.join(tempDir(), 'ledger');
        try {
            const { rep, stopMs, v } = await stopUnderLoad(srv, port, ledger, timeoutMs);
            // Failures are refused connections and connections closed before an answer; no
            // status but 503 (with Retry-After) could come from trackd itself.
            for (const code of Object.keys(rep.errors.status)) assert.equal(code, '503', describeErrors(rep));
            await assert.rejects(request(port, { path: '/healthz', timeout: 2000 }), /ECONNREFUSED/);
            t.diagnostic(`SIGTERM under direct load: stopped in ${stopMs} ms; ${describeErrors(rep)}; ` +
                `${v.acknowledged} events acknowledged, ${v.found} stored, ${v.missing} missing`);
        } finally {
            await srv.kill();
        }
    });

    it('graceful stop (SIGTERM) under load through nginx: everything acknowledged is stored, then nginx answers 502', { skip: SKIP, timeout: slow(60000) }, async (t) => {
        const timeoutMs = slow(5000);
        const { srv, ngx, base, workerBase } = await startPair({ args: ['--shutdown-timeout-ms', String(timeoutMs)] });
        const ledger = path.join(tempDir(), 'ledger');
        try {
            const { rep, stopMs, v } = await stopUnderLoad(srv, ngx.port, ledger, timeoutMs);
            // Through nginx every failure is an answer: 502 once no worker takes the request.
            for (const code of Object.keys(rep.errors.status)) assert.ok(['502', '503'].includes(code), describeErrors(rep));
            assert.equal(rep.errors.total, Object.values(rep.errors.status).reduce((a, b) => a + b, 0), describeErrors(rep));
            const after = await request(ngx.port, {
                method: 'POST', path: '/track', headers: { 'Content-Type': FORM },
                body: `data=${encodeURIComponent(b64json(trackEvent()))}`,
            });
            assert.equal(after.status, 502, 'after the stop');
            for (const p of [base, workerBase, workerBase + 1]) {
                await assert.rejects(request(p, { path: '/healthz', timeout: 2000 }), /ECONNREFUSED/, `port ${p}`);
            }
            t.diagnostic(`SIGTERM under load through nginx: stopped in ${stopMs} ms; ${describeErrors(rep)}; ` +
                `${v.acknowledged} events acknowledged, ${v.found} stored, ${v.missing} missing`);
        } finally {
            await ngx.stop();
            await srv.kill();
        }
    });
});
