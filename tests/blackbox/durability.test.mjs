// Durability: an acknowledged event survives whatever happens to trackd afterwards.
//   - workers killed with SIGKILL again and again under load: every acknowledged $insert_id is
//     in the log exactly once, and the log verifies;
//   - torn and damaged tails: a segment cut (or spoiled) inside its last records still starts,
//     keeps every whole record before the damage, and appends after it;
//   - disk full: 503 with Retry-After while the filesystem is full, nothing acknowledged lost,
//     writing resumes once space is freed (needs root to mount a small tmpfs);
//   - fsync failure (LD_PRELOAD shim build/fault_shim.so): nothing of a batch whose fdatasync
//     failed is acknowledged, and trackd recovers once fsync works again.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';

import { trackEvent } from './lib/events.mjs';
import { RawConn, buildRequest, request } from './lib/http.mjs';
import {
    REPO_ROOT,
    SANITIZED,
    TRACKCTL,
    assertVerifies,
    readRecords,
    segments,
    sleep,
    slow,
    startTrackd,
    tempDir,
    verify,
} from './lib/trackd.mjs';

const SEGMENT_HEADER_SIZE = 40;
const RECORD_HEADER_SIZE = 20;

/** Count stored records per $insert_id. */
function idCounts(records) {
    const m = new Map();
    for (const r of records) {
        const id = r.properties && r.properties.$insert_id;
        if (id) m.set(id, (m.get(id) || 0) + 1);
    }
    return m;
}

/** POST one JSON batch on connection `c`; true if trackd acknowledged it (200 and body 1). */
async function sendBatch(c, evs, timeout = slow(8000)) {
    await c.write(buildRequest({
        method: 'POST', path: '/track',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(evs),
    }));
    const r = await c.response({ timeout });
    return { acked: r.status === 200 && r.text === '1', r };
}

/** One request on a fresh connection; resolves {status, text, headers} or {error}. */
async function trackOnce(port, evs, timeout = slow(8000)) {
    try {
        const r = await request(port, {
            method: 'POST', path: '/track',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify(evs), timeout,
        });
        return r;
    } catch (e) {
        return { status: 0, text: '', headers: {}, error: e };
    }
}

describe('crash: SIGKILL of workers under load', () => {
    // write mode too: its small batches are written by the event loop itself (docs/log-format.md).
    for (const durability of ['fsync', 'write']) it(`every acknowledged event is stored exactly once after 24 worker kills (durability ${durability})`, { timeout: slow(120000) }, async (t) => {
        const srv = await startTrackd({
            workers: 2,
            durability,
            args: ['--restart-intensity', '1000', '--restart-period-s', '1'],
        });
        const acked = [];
        const unacked = [];
        let stop = false;
        let requests = 0;
        let failures = 0;

        async function clientLoop(n) {
            let c = null;
            while (!stop) {
                const evs = Array.from({ length: 1 + (requests % 4) }, () => trackEvent({ loop: n }));
                requests++;
                try {
                    if (!c || c.ended) {
                        if (c) c.close();
                        c = await RawConn.open(srv.port, { timeout: 2000 });
                    }
                    const { acked: ok } = await sendBatch(c, evs);
                    (ok ? acked : unacked).push(...evs.map((e) => e.properties.$insert_id));
                    if (!ok) failures++;
                } catch {
                    failures++;
                    unacked.push(...evs.map((e) => e.properties.$insert_id));
                    if (c) c.close();
                    c = null;
                    await sleep(10);
                }
            }
            if (c) c.close();
        }

        const KILLS = 24;
        const killed = [];
        try {
            const clients = [0, 1, 2, 3].map(clientLoop);
            await sleep(300);
            for (let k = 0; k < KILLS; k++) {
                // Wait for both workers to be up (the master restarts the killed one).
                let pids = [];
                const deadline = Date.now() + slow(10000);
                while (Date.now() < deadline) {
                    pids = srv.workerPids().filter((p) => !killed.includes(p));
                    if (pids.length >= 2) break;
                    if (srv.exited) break;
                    await sleep(20);
                }
                assert.ok(!srv.exited, `the master exited during the kills: ${JSON.stringify(srv.exited)}\n${srv.stderr.slice(-3000)}`);
                assert.ok(pids.length >= 1, `no worker came back after kill ${k}`);
                const victim = pids[k % pids.length];
                try {
                    process.kill(victim, 'SIGKILL');
                    killed.push(victim);
                } catch {
                    k--; // raced with an exit: pick again
                }
                await sleep(100 + ((k * 37) % 200));
            }
            await sleep(300);
            stop = true;
            await Promise.all(clients);
            assert.equal(killed.length, KILLS);
            await srv.waitHealthy();
            // After the storm, the server works normally.
            const after = trackEvent();
            const r = await trackOnce(srv.port, [after]);
            assert.equal(r.status, 200, `after the kills: ${r.status} ${r.error || ''}`);
            acked.push(after.properties.$insert_id);
            await srv.stop();
        } finally {
            stop = true;
            if (!srv.exited) await srv.kill();
        }
        t.diagnostic(`${requests} requests, ${acked.length} events acknowledged, ${unacked.length} not (${failures} failed requests), ${killed.length} kills`);
        assert.ok(acked.length > 100, `too few acknowledged events to mean anything: ${acked.length} of ${requests} requests`);
        assertVerifies(srv.dataDir);
        const counts = idCounts(readRecords(srv.dataDir));
        const missing = acked.filter((id) => counts.get(id) !== 1);
        assert.deepStrictEqual(
            missing.map((id) => [id, counts.get(id) || 0]).slice(0, 20), [],
            `${missing.length} of ${acked.length} acknowledged events not stored exactly once`,
        );
        for (const id of unacked) assert.ok((counts.get(id) || 0) <= 1, `unacknowledged ${id} stored ${counts.get(id)} times`);
    });
});

describe('write mode: batches written by the event loop', () => {
    it('small batches are written by the loop, large ones by the writer thread, all stored in order', { timeout: slow(30000) }, async () => {
        const srv = await startTrackd({ durability: 'write' });
        const sent = [];
        try {
            const c = await RawConn.open(srv.port);
            for (let i = 0; i < 40; i++) {
                // Mostly single events; every tenth request a batch of 1000 (over 64 KiB).
                const evs = Array.from({ length: i % 10 === 9 ? 1000 : 1 }, () => trackEvent({ i }));
                const { acked, r } = await sendBatch(c, evs);
                assert.ok(acked, `request ${i}: ${r.status} ${r.text}`);
                sent.push(...evs.map((e) => e.properties.$insert_id));
            }
            c.close();
            const m = (await request(srv.port, { path: '/metrics' })).text;
            const value = (name) => Number(new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, 'm').exec(m)[1]);
            const batches = value('trackd_log_batches_total');
            const inline = value('trackd_log_inline_batches_total');
            assert.ok(inline > 0, `no batch was written by the loop (${batches} batches)`);
            assert.ok(batches - inline >= 4, `the large batches should go to the writer thread: ${batches} batches, ${inline} inline`);
            assert.ok(Number.isInteger(value('trackd_log_inline_slow_total')));
            await srv.stop();
        } finally {
            if (!srv.exited) await srv.kill();
        }
        assertVerifies(srv.dataDir);
        const ids = readRecords(srv.dataDir).map((r) => r.properties.$insert_id);
        assert.deepStrictEqual(ids, sent);
    });
});

/** The records of a segment file, read from its bytes: [{offset, end}]. */
function segmentRecords(file) {
    const buf = fs.readFileSync(file);
    const out = [];
    let off = SEGMENT_HEADER_SIZE;
    while (off + RECORD_HEADER_SIZE <= buf.length) {
        const len = buf.readUInt32LE(off);
        if (len === 0 && buf.readUInt32LE(off + 4) === 0) break; // zero tail (preallocation)
        const end = off + RECORD_HEADER_SIZE + len;
        if (end > buf.length) break;
        out.push({ offset: off, end });
        off = end;
    }
    return out;
}

describe('torn and damaged tails', () => {
    it('a segment cut or spoiled inside its last records restarts, keeps every whole record before, appends after', { timeout: slow(120000) }, async () => {
        // A log of single-event records of varied sizes over several small segments: big ones
        // first (they fill earlier segments), then small ones (several in the last segment).
        const srv = await startTrackd({ args: ['--segment-max-bytes', '4096'] });
        const sent = [];
        for (let i = 0; i < 14; i++) {
            const ev = trackEvent({ i, pad: 'x'.repeat(i < 6 ? 1500 + i * 37 : (i - 6) * 11) });
            const r = await trackOnce(srv.port, [ev]);
            assert.equal(r.status, 200);
            sent.push(ev);
        }
        await srv.stop();
        const base = srv.dataDir;
        const segs = segments(base);
        const last = segs[segs.length - 1];
        const lastSeq = Number(path.basename(last, '.seg'));
        const onDisk = segmentRecords(last);
        assert.ok(segs.length >= 2, `a 4096-byte segment limit gave ${segs.length} segment(s)`);
        assert.ok(onDisk.length >= 3, `the last segment holds ${onDisk.length} records`);
        const recs = readRecords(base);
        // Map each stored record to its byte extent in the last segment (others are earlier segments).
        const where = new Map(onDisk.map((d) => [d.offset, d]));
        const extent = (rec) => (rec._trackd.segment === lastSeq ? where.get(rec._trackd.offset) : null);
        for (const rec of recs) {
            if (rec._trackd.segment === lastSeq) assert.ok(extent(rec), `record at offset ${rec._trackd.offset} is not where the segment says`);
        }

        const [r3, r2, r1] = onDisk.slice(-3);
        const cases = [];
        for (const cut of [
            r1.offset + 1, r1.offset + 4, r1.offset + RECORD_HEADER_SIZE - 1, r1.offset + RECORD_HEADER_SIZE,
            r1.offset + RECORD_HEADER_SIZE + 1, Math.floor((r1.offset + r1.end) / 2), r1.end - 1,
            r2.offset + 9, r2.end - 2, r3.offset + RECORD_HEADER_SIZE + 3,
        ]) {
            cases.push({ name: `cut at ${cut}`, keepBefore: cut, apply: (f) => fs.truncateSync(f, cut) });
        }
        cases.push({
            name: 'a flipped byte in the last payload',
            keepBefore: r1.offset,
            apply: (f) => {
                const fd = fs.openSync(f, 'r+');
                const b = Buffer.alloc(1);
                fs.readSync(fd, b, 0, 1, r1.end - 3);
                b[0] ^= 0x55;
                fs.writeSync(fd, b, 0, 1, r1.end - 3);
                fs.closeSync(fd);
            },
        });
        cases.push({
            name: 'a flipped byte in the last record header length',
            keepBefore: r1.offset,
            apply: (f) => {
                const fd = fs.openSync(f, 'r+');
                fs.writeSync(fd, Buffer.from([0xff]), 0, 1, r1.offset + 2);
                fs.closeSync(fd);
            },
        });
        cases.push({ name: 'zeros after the last record', keepBefore: r1.end, apply: (f) => fs.appendFileSync(f, Buffer.alloc(4096)) });
        // fsync mode zero-fills ahead of the data: what a crash leaves of a batch written there.
        for (const cut of [r1.offset + 3, r1.offset + RECORD_HEADER_SIZE + 2, r1.end - 1]) {
            cases.push({
                name: `cut at ${cut}, then zeros`,
                keepBefore: cut,
                apply: (f) => {
                    fs.truncateSync(f, cut);
                    fs.appendFileSync(f, Buffer.alloc(65536));
                },
            });
        }
        cases.push({
            name: 'a page of records after the zero end marker',
            keepBefore: r1.end,
            apply: (f) => {
                const tail = fs.readFileSync(f).subarray(r2.offset, r1.end);
                fs.appendFileSync(f, Buffer.alloc(4096));
                fs.appendFileSync(f, tail);
                fs.appendFileSync(f, Buffer.alloc(8192));
            },
        });
        cases.push({
            name: 'garbage after the last record',
            keepBefore: r1.end,
            apply: (f) => fs.appendFileSync(f, Buffer.from('\x07\x00\x00\x00garbage-garbage-garbage-garbage', 'latin1')),
        });

        const failures = [];
        for (const cs of cases) {
            const dir = tempDir('trackd-torn-');
            fs.cpSync(base, dir, { recursive: true });
            fs.rmSync(path.join(dir, 'trackd.pid'), { force: true });
            cs.apply(path.join(dir, path.relative(base, last)));
            const wantKept = recs
                .filter((rec) => {
                    const e = extent(rec);
                    return !e || e.end <= cs.keepBefore;
                })
                .map((rec) => rec.properties.$insert_id);
            const wantGone = recs
                .filter((rec) => {
                    const e = extent(rec);
                    return e && e.end > cs.keepBefore;
                })
                .map((rec) => rec.properties.$insert_id);
            let s2;
            try {
                s2 = await startTrackd({ dataDir: dir });
            } catch (e) {
                failures.push(`${cs.name}: trackd did not start: ${e.message.slice(0, 1500)}`);
                continue;
            }
            const fresh = trackEvent({ after: cs.name });
            const r = await trackOnce(s2.port, [fresh]);
            try {
                await s2.stop();
            } catch (e) {
                failures.push(`${cs.name}: ${e.message.slice(0, 1500)}`);
                continue;
            }
            if (r.status !== 200) {
                failures.push(`${cs.name}: appending after recovery answered ${r.status} ${r.text || r.error}`);
                continue;
            }
            const v = verify(dir);
            if (v.status !== 0) failures.push(`${cs.name}: trackctl verify exited ${v.status}: ${v.stdout} ${v.stderr}`);
            let counts;
            try {
                counts = idCounts(readRecords(dir));
            } catch (e) {
                failures.push(`${cs.name}: ${e.message}`);
                continue;
            }
            for (const id of wantKept) if (counts.get(id) !== 1) failures.push(`${cs.name}: whole record ${id} before the damage: ${counts.get(id) || 0} copies`);
            for (const id of wantGone) if (counts.has(id)) failures.push(`${cs.name}: damaged record ${id} still read back`);
            if (counts.get(fresh.properties.$insert_id) !== 1) failures.push(`${cs.name}: the event appended after recovery is not stored once`);
        }
        assert.deepStrictEqual(failures, []);
        assert.equal(sent.length, 14);
    });
});

/** Mount a tmpfs of `size` on a new directory; returns the path, or a reason it cannot. */
function mountSmallFs(size) {
    if (typeof process.getuid === 'function' && process.getuid() !== 0) return { why: 'not root: cannot mount a small filesystem' };
    const dir = tempDir('trackd-full-');
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { encoding: 'utf8' });
    if (r.status !== 0) return { why: `mount -t tmpfs is not permitted here: ${(r.stderr || r.error || '').toString().trim()}` };
    return { dir };
}

function umount(dir) {
    spawnSync('umount', ['-l', dir]);
}

/** Write a filler file until the filesystem says ENOSPC. Returns its path. */
function fillUp(dir) {
    const f = path.join(dir, 'filler');
    const fd = fs.openSync(f, 'w');
    const block = Buffer.alloc(16384, 0x66);
    try {
        for (;;) {
            try {
                fs.writeSync(fd, block);
            } catch (e) {
                if (e.code !== 'ENOSPC') throw e;
                // Fill the last partial block too.
                let small = 4096;
                while (small >= 1) {
                    try {
                        fs.writeSync(fd, block, 0, small);
                    } catch {
                        small >>= 1;
                    }
                }
                break;
            }
        }
    } finally {
        fs.closeSync(fd);
    }
    return f;
}

describe('disk full', () => {
    it('503 with Retry-After while full, nothing acknowledged lost, resumes when space is freed', { timeout: slow(120000) }, async (t) => {
        const m = mountSmallFs('4m');
        if (m.why) {
            t.skip(m.why);
            return;
        }
        const acked = [];
        let srv;
        try {
            const dataDir = path.join(m.dir, 'data');
            fs.mkdirSync(dataDir);
            srv = await startTrackd({ dataDir, args: ['--segment-max-bytes', '1048576'] });
            const big = () => trackEvent({ blob: 'z'.repeat(8000) });
            for (let i = 0; i < 5; i++) {
                const ev = big();
                const r = await trackOnce(srv.port, [ev]);
                assert.equal(r.status, 200, 'before the disk fills');
                acked.push(ev.properties.$insert_id);
            }
            const filler = fillUp(m.dir);

            // Keep sending until trackd notices; every answer is either an acknowledgement or 503.
            let first503 = null;
            for (let i = 0; i < 300 && !first503; i++) {
                const ev = big();
                const r = await trackOnce(srv.port, [ev]);
                if (r.status === 200 && r.text === '1') acked.push(ev.properties.$insert_id);
                else if (r.status === 503) first503 = r;
                else assert.fail(`while the disk is full: ${r.status} ${r.text || r.error}`);
            }
            assert.ok(first503, 'trackd never answered 503 with the disk full');
            t.diagnostic(`${acked.length} events acknowledged before the first 503`);
            assert.ok(/^\d+$/.test(first503.headers['retry-after'] || ''), `Retry-After on 503: ${first503.headers['retry-after']}`);
            // Still full: still 503, promptly.
            for (let i = 0; i < 3; i++) {
                const t0 = Date.now();
                const r = await trackOnce(srv.port, [big()]);
                assert.equal(r.status, 503, `still full, request ${i}: ${r.status} ${r.text || r.error}`);
                assert.ok(Date.now() - t0 < slow(5000), '503 comes promptly');
            }
            const health = await request(srv.port, { path: '/healthz' });
            assert.ok(health.status === 200 || health.status === 503, `/healthz while full: ${health.status}`);

            fs.unlinkSync(filler);
            let resumed = false;
            const deadline = Date.now() + slow(20000);
            while (Date.now() < deadline) {
                const ev = big();
                const r = await trackOnce(srv.port, [ev]);
                if (r.status === 200 && r.text === '1') {
                    acked.push(ev.properties.$insert_id);
                    resumed = true;
                    break;
                }
                await sleep(200);
            }
            assert.ok(resumed, 'trackd did not resume writing after space was freed');
            for (let i = 0; i < 5; i++) {
                const ev = big();
                const r = await trackOnce(srv.port, [ev]);
                assert.equal(r.status, 200, 'after space was freed');
                acked.push(ev.properties.$insert_id);
            }
            await srv.stop();
            assertVerifies(srv.dataDir);
            const counts = idCounts(readRecords(srv.dataDir));
            for (const id of acked) assert.equal(counts.get(id), 1, `acknowledged ${id} stored ${counts.get(id) || 0} times`);
        } finally {
            if (srv && !srv.exited) await srv.kill();
            umount(m.dir);
        }
    });
});

const SHIM = path.join(REPO_ROOT, 'build', 'fault_shim.so');

/** Environment that loads the fault shim into trackd (workers inherit it). */
function shimEnv(extra) {
    const env = { LD_PRELOAD: SHIM, ...extra };
    if (SANITIZED || process.env.ASAN_OPTIONS) {
        // ASan wants to be first in the library list; the shim comes before it here.
        env.ASAN_OPTIONS = [process.env.ASAN_OPTIONS, 'verify_asan_link_order=0'].filter(Boolean).join(':');
    }
    return env;
}

function shimMissing() {
    return fs.existsSync(SHIM) ? null : `${path.relative(REPO_ROOT, SHIM)} is missing (build it with make build/fault_shim.so)`;
}

describe('write failure (ENOSPC injected by the fault shim)', () => {
    it('503 while writes fail, nothing acknowledged lost, no partial record left, resumes', { timeout: slow(120000) }, async (t) => {
        const why = shimMissing();
        if (why) {
            t.skip(why);
            return;
        }
        const flag = path.join(tempDir('trackd-fault-'), 'enospc');
        const srv = await startTrackd({ env: shimEnv({ TRACKD_FAULT_ENOSPC_FILE: flag }) });
        const acked = [];
        try {
            for (let i = 0; i < 5; i++) {
                const ev = trackEvent();
                const r = await trackOnce(srv.port, [ev]);
                assert.equal(r.status, 200, `before the fault: ${r.status}`);
                acked.push(ev.properties.$insert_id);
            }
            fs.writeFileSync(flag, '');
            const answers = await Promise.all(Array.from({ length: 4 }, () => trackOnce(srv.port, [trackEvent(), trackEvent()])));
            for (const r of answers) {
                assert.equal(r.status, 503, `while writes fail: ${r.status} ${r.text || r.error}`);
                assert.ok(/^\d+$/.test(r.headers['retry-after'] || ''), 'Retry-After on 503');
            }
            fs.rmSync(flag);
            let resumed = false;
            const deadline = Date.now() + slow(20000);
            while (Date.now() < deadline && !resumed) {
                const ev = trackEvent();
                const r = await trackOnce(srv.port, [ev]);
                if (r.status === 200 && r.text === '1') {
                    acked.push(ev.properties.$insert_id);
                    resumed = true;
                } else await sleep(200);
            }
            assert.ok(resumed, 'trackd did not resume after writes work again');
            await srv.stop();
        } finally {
            if (!srv.exited) await srv.kill();
        }
        assertVerifies(srv.dataDir);
        const counts = idCounts(readRecords(srv.dataDir));
        for (const id of acked) assert.equal(counts.get(id), 1, `acknowledged ${id} stored ${counts.get(id) || 0} times`);
    });
});

describe('fsync failure', () => {
    it('a batch whose fdatasync failed is not acknowledged; trackd recovers; acknowledged events all present', { timeout: slow(120000) }, async (t) => {
        const why = shimMissing();
        if (why) {
            t.skip(why);
            return;
        }
        const flag = path.join(tempDir('trackd-fault-'), 'fail-fsync');
        const srv = await startTrackd({ durability: 'fsync', env: shimEnv({ TRACKD_FAULT_FSYNC_FILE: flag }) });
        const acked = [];
        const refused = [];
        try {
            for (let i = 0; i < 5; i++) {
                const ev = trackEvent();
                const r = await trackOnce(srv.port, [ev]);
                assert.equal(r.status, 200, `before the fault: ${r.status}`);
                acked.push(ev.properties.$insert_id);
            }
            fs.writeFileSync(flag, '');
            // Several requests at once (likely one group commit), then one at a time.
            const batch = Array.from({ length: 6 }, () => [trackEvent(), trackEvent()]);
            const answers = await Promise.all(batch.map((evs) => trackOnce(srv.port, evs)));
            for (let i = 0; i < 3; i++) {
                const evs = [trackEvent()];
                batch.push(evs);
                answers.push(await trackOnce(srv.port, evs));
            }
            answers.forEach((r, i) => {
                const ids = batch[i].map((e) => e.properties.$insert_id);
                if (r.status === 200) acked.push(...ids);
                else refused.push(...ids);
            });
            const wrongly = answers.filter((r) => r.status === 200).length;
            assert.equal(wrongly, 0, `${wrongly} requests acknowledged while fdatasync fails`);
            const statuses = [...new Set(answers.map((r) => r.status))];
            t.diagnostic(`answers while fdatasync fails: ${answers.map((r) => r.status).join(' ')}`);
            assert.ok(answers.some((r) => r.status === 503), `some fdatasync failure answered 503; statuses ${statuses}`);
            for (const r of answers.filter((x) => x.status === 503)) {
                assert.ok(/^\d+$/.test(r.headers['retry-after'] || ''), 'Retry-After on 503');
            }

            fs.rmSync(flag);
            let recovered = false;
            const deadline = Date.now() + slow(20000);
            while (Date.now() < deadline) {
                const ev = trackEvent();
                const r = await trackOnce(srv.port, [ev]);
                if (r.status === 200 && r.text === '1') {
                    acked.push(ev.properties.$insert_id);
                    recovered = true;
                    break;
                }
                await sleep(200);
            }
            assert.ok(recovered, 'trackd did not recover after fdatasync works again');
            for (let i = 0; i < 5; i++) {
                const ev = trackEvent();
                const r = await trackOnce(srv.port, [ev]);
                assert.equal(r.status, 200, 'after recovery');
                acked.push(ev.properties.$insert_id);
            }
            await srv.stop();
        } finally {
            if (!srv.exited) await srv.kill();
        }
        assertVerifies(srv.dataDir);
        const counts = idCounts(readRecords(srv.dataDir));
        for (const id of acked) assert.equal(counts.get(id), 1, `acknowledged ${id} stored ${counts.get(id) || 0} times`);
        for (const id of refused) assert.ok((counts.get(id) || 0) <= 1, `refused ${id} stored ${counts.get(id)} times`);
    });
});

describe('zero-filled space ahead of the data (durability fsync)', () => {
    it('the live segment has zeros after its data, which trackctl reads as the end; a clean stop cuts them off', { timeout: slow(30000) }, async () => {
        const srv = await startTrackd({ durability: 'fsync' });
        let last;
        try {
            for (let i = 0; i < 20; i++) {
                const r = await trackOnce(srv.port, [trackEvent({ i })]);
                assert.equal(r.status, 200);
            }
            const segs = segments(srv.dataDir);
            last = segs[segs.length - 1];
            const end = segmentRecords(last).at(-1).end;
            let size = fs.statSync(last).size;
            for (let k = 0; k < 200 && size <= end; k++) {
                await sleep(10);
                size = fs.statSync(last).size;
            }
            assert.ok(size > end, `file ${size} bytes, data ${end}: no zero-filled space`);
            const buf = fs.readFileSync(last);
            assert.ok(buf.subarray(end).every((b) => b === 0), 'the space after the data is not all zeros');
            const v = verify(srv.dataDir);
            assert.equal(v.status, 0, v.stdout + v.stderr);
            assert.match(v.stdout, /torn tails 0/);
            assert.doesNotMatch(v.stdout, /torn tail:|\(torn tail\)/);
            assert.equal(readRecords(srv.dataDir).length, 20);
            // stats counts data bytes: the zeros are not data.
            const st = spawnSync(TRACKCTL, ['stats', '--json', '--data-dir', srv.dataDir], { encoding: 'utf8' });
            assert.equal(st.status, 0, st.stderr);
            assert.equal(JSON.parse(st.stdout).total.bytes, segs.reduce((n, f) => n + (f === last ? end : fs.statSync(f).size), 0));
            await srv.stop();
        } finally {
            if (!srv.exited) await srv.kill();
        }
        assert.equal(fs.statSync(last).size, segmentRecords(last).at(-1).end);
    });
});
