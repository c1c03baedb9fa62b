// Black-box tests of bin/trackctl: the real binary on data directories written segment by segment
// with lib/segfile.mjs (an independent writer of the documented format), plus one run against a
// live bin/trackd. Output is checked the way a consumer uses it: NDJSON parsed line by line,
// cursors fed back, exit statuses, files moved aside.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { TOKEN, trackEvent } from './lib/events.mjs';
import { request } from './lib/http.mjs';
import {
    appendRecords,
    flipByte,
    record,
    RECORD_HEADER_SIZE,
    segmentPath,
    slotName,
    writeSegment,
} from './lib/segfile.mjs';
import {
    TRACKCTL,
    TRACKD,
    sanitizerReport,
    sleep,
    slow,
    startTrackd,
    tempDir,
    trackctl,
} from './lib/trackd.mjs';

const T0 = Date.parse('2026-11-25T10:00:00Z');

function ev(id, props = {}, name = `e${id}`) {
    return { event: name, properties: { token: 'tok-a', distinct_id: `u${id}`, id, text: 'café ✓', ...props } };
}

/**
 * Three slots:
 *   w001: segment 1 [e0 @+0, e1 @+3], segment 2 [e2 @+10]
 *   w002: segment 1 [e3 @+1, e4 @+3 (ties e1: slot 1 first), e5 @+20 token tok-b]
 *   w003: segment 1 [an /engage update @+5 with $token tok-b]
 * Merged order: e0 e3 e1 e4 engage e2 e5.
 */
function fixture() {
    const dd = tempDir('trackctl-bb-');
    const segs = {
        s1a: writeSegment(dd, 1, 1, [
            { event: ev(0), time: T0 },
            { event: ev(1), time: T0 + 3 },
        ]),
        s1b: writeSegment(dd, 1, 2, [{ event: ev(2, {}, 'Purchase'), time: T0 + 10 }]),
        s2a: writeSegment(dd, 2, 1, [
            { event: ev(3), time: T0 + 1 },
            { event: ev(4), time: T0 + 3 },
            { event: ev(5, { token: 'tok-b' }), time: T0 + 20 },
        ]),
        s3a: writeSegment(dd, 3, 1, [
            { event: { $token: 'tok-b', $distinct_id: 'p1', $set: { plan: 'pro' } }, time: T0 + 5, endpoint: 'engage' },
        ]),
    };
    return { dd, segs };
}

const MERGED = ['e0', 'e3', 'e1', 'e4', 'engage', 'e2', 'e5'];

/** Parse NDJSON strictly: every line one JSON object, the text ending in a newline. */
function ndjson(text) {
    if (text === '') return [];
    assert.ok(text.endsWith('\n'), 'output ends with a newline');
    return text
        .slice(0, -1)
        .split('\n')
        .map((line) => {
            const o = JSON.parse(line);
            assert.equal(typeof o, 'object');
            assert.ok(!Array.isArray(o) && o !== null, `not an object: ${line}`);
            return o;
        });
}

function label(o) {
    return o.event !== undefined ? (o.event === 'Purchase' ? `e${o.properties.id}` : o.event) : 'engage';
}

function cat(dd, ...args) {
    const r = trackctl(['cat', '--data-dir', dd, ...args]);
    return { ...r, recs: r.status === 0 || r.status === 1 ? ndjson(r.stdout) : [] };
}

/** The cursor a consumer keeps after consuming `recs`: the last position of each slot. */
function cursorOf(recs) {
    const last = new Map();
    for (const r of recs) last.set(r._trackd.slot, r._trackd.pos);
    return [...last.entries()]
        .sort((a, b) => a[0] - b[0])
        .map(([, pos]) => pos)
        .join(',');
}

test('cat prints every record as one JSON object per line, merged by receive time, with _trackd metadata', () => {
    const { dd, segs } = fixture();
    const r = cat(dd);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.deepEqual(r.recs.map(label), MERGED);
    const e1 = r.recs[2];
    assert.deepEqual(e1._trackd, {
        endpoint: 'track',
        received_ms: T0 + 3,
        slot: 1,
        segment: 1,
        offset: segs.s1a.offsets[1],
        pos: `1:1:${segs.s1a.offsets[1]}`,
    });
    const { _trackd, ...stored } = e1;
    assert.deepEqual(stored, ev(1));
    assert.equal(r.recs[4]._trackd.endpoint, 'engage');
    assert.equal(r.recs[4].$token, 'tok-b');
    // Non-ASCII text comes out as the stored UTF-8, not escaped.
    assert.ok(r.stdout.includes('café ✓'));
});

test('cat output feeds jq line by line', { skip: spawnSync('jq', ['--version']).status !== 0 && 'jq not installed' }, () => {
    const { dd } = fixture();
    const r = spawnSync('sh', ['-c', `"${TRACKCTL}" cat --data-dir "${dd}" | jq -r '._trackd.pos'`], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim().split('\n').length, MERGED.length);
    assert.match(r.stdout, /^1:1:40$/m);
});

test('cat filters by slot, event, token, endpoint and receive time', () => {
    const { dd } = fixture();
    assert.deepEqual(cat(dd, '--worker', '2').recs.map(label), ['e3', 'e4', 'e5']);
    assert.deepEqual(cat(dd, '--slot', '3').recs.map(label), ['engage']);
    assert.deepEqual(cat(dd, '--event', 'Purchase').recs.map(label), ['e2']);
    // properties.token for events, $token for profile updates.
    assert.deepEqual(cat(dd, '--token', 'tok-b').recs.map(label), ['engage', 'e5']);
    assert.deepEqual(cat(dd, '--endpoint', 'engage').recs.map(label), ['engage']);
    // --since is inclusive, --until exclusive; ISO-8601 and milliseconds both work.
    const since = new Date(T0 + 3).toISOString();
    assert.deepEqual(cat(dd, '--since', since, '--until', String(T0 + 10)).recs.map(label), ['e1', 'e4', 'engage']);
    assert.deepEqual(cat(dd, '--since', '2026-11-25T11:00:00+01:00', '--until', '2026-11-25T10:00:00.002Z').recs.map(label), ['e0', 'e3']);
    const bad = trackctl(['cat', '--data-dir', dd, '--since', 'yesterday']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--since/);
    assert.equal(trackctl(['cat', '--data-dir', dd, '--worker', '9']).status, 1);
});

test('cat --after resumes strictly after a per-slot cursor taken at any point', () => {
    const { dd } = fixture();
    const all = cat(dd).recs;
    for (let k = 0; k <= all.length; k++) {
        const cursor = cursorOf(all.slice(0, k));
        const rest = cat(dd, '--after', cursor);
        assert.equal(rest.status, 0, rest.stderr);
        assert.deepEqual(rest.recs.map((o) => o._trackd.pos), all.slice(k).map((o) => o._trackd.pos), `cut at ${k}: ${cursor}`);
    }
    // A position that is not the start of a record, and a malformed cursor.
    const inside = cat(dd, '--after', '1:1:41');
    assert.equal(inside.status, 1);
    assert.match(inside.stderr, /1:1:41/);
    assert.equal(trackctl(['cat', '--data-dir', dd, '--after', '1:1']).status, 2);
    assert.equal(trackctl(['cat', '--data-dir', dd, '--after', '1:1:40,1:2:40']).status, 2);
});

test('cat --save-cursor checkpoints what was read, and time windows neither skip nor repeat', () => {
    const { dd } = fixture();
    // A slot whose clock stepped back: its record at +4 comes after one at +50.
    writeSegment(dd, 4, 1, [
        { event: ev(40), time: T0 + 2 },
        { event: ev(41), time: T0 + 50 },
        { event: ev(42), time: T0 + 4 },
    ]);
    const all = cat(dd).recs;
    const cur = path.join(dd, 'cursor');
    fs.writeFileSync(cur, '');
    const seen = [];
    // Three exports by time window, each resuming from the previous cursor.
    for (const until of [T0 + 3, T0 + 11, T0 + 1000]) {
        const r = cat(dd, '--after', fs.readFileSync(cur, 'utf8'), '--until', String(until), '--save-cursor', cur);
        assert.equal(r.status, 0, r.stderr);
        seen.push(...r.recs);
    }
    assert.deepEqual(seen.map((o) => o._trackd.pos).sort(), all.map((o) => o._trackd.pos).sort());
    // The record after the step came in the window that printed the one before it.
    assert.deepEqual(seen.filter((o) => o._trackd.slot === 4).map(label), ['e40', 'e41', 'e42']);
    // Filtered-out records are consumed too: the cursor ends at each slot's last record.
    const r = cat(dd, '--event', 'nothing-matches', '--save-cursor', cur);
    assert.equal(r.status, 0);
    assert.equal(r.recs.length, 0);
    assert.equal(fs.readFileSync(cur, 'utf8').trim(), cursorOf(all));
    assert.equal(cat(dd, '--after', fs.readFileSync(cur, 'utf8')).recs.length, 0);
});

test('cat into a pipe that closes early ends quietly with status 0', () => {
    const dd = tempDir('trackctl-bb-');
    const recs = [];
    for (let i = 0; i < 20000; i++) recs.push({ event: ev(i), time: T0 + i });
    writeSegment(dd, 1, 1, recs);
    const r = spawnSync('bash', ['-c', `"${TRACKCTL}" cat --data-dir "${dd}" | head -n 1; echo "status=\${PIPESTATUS[0]}" >&2`], {
        encoding: 'utf8',
    });
    assert.equal(ndjson(r.stdout).length, 1);
    assert.match(r.stderr, /status=0/);
    assert.ok(!/trackctl:/.test(r.stderr), r.stderr);
    assert.equal(sanitizerReport(r.stderr), null);
});

test('verify passes a clean log, and names file and offset of a bad checksum in a closed segment', () => {
    const { dd, segs } = fixture();
    const ok = trackctl(['verify', '--data-dir', dd]);
    assert.equal(ok.status, 0, ok.stdout);
    assert.match(ok.stdout, /w001: ok: segments 2, records 3/);
    assert.match(ok.stdout, /verify: ok/);

    const bad = segs.s1a.offsets[1];
    flipByte(segs.s1a.path, bad + RECORD_HEADER_SIZE + 5);
    const v = trackctl(['verify', '--data-dir', dd]);
    assert.equal(v.status, 1);
    assert.ok(v.stdout.includes(segs.s1a.path), v.stdout);
    assert.match(v.stdout, new RegExp(`DAMAGE: .*offset ${bad}\\b`));
    assert.match(v.stdout, /w001: DAMAGED/);
    // cat still prints everything readable, reports the damage, and fails.
    const c = cat(dd);
    assert.equal(c.status, 1);
    assert.deepEqual(c.recs.map(label), MERGED.filter((l) => l !== 'e1'));
    assert.match(c.stderr, new RegExp(`DAMAGE: ${segs.s1a.path.replace(/[.]/g, '\\.')}: .*offset ${bad}`));
});

test('verify reports a torn tail of the newest segment as unacknowledged, damage only with --strict', () => {
    const { dd, segs } = fixture();
    const half = record(ev(99), T0 + 30).subarray(0, 30);
    fs.appendFileSync(segs.s2a.path, half);
    const v = trackctl(['verify', '--data-dir', dd]);
    assert.equal(v.status, 0, v.stdout);
    assert.match(v.stdout, /torn tail .*\(unacknowledged, will be truncated at next start\)/);
    assert.ok(v.stdout.includes(segs.s2a.path));
    assert.equal(trackctl(['verify', '--strict', '--data-dir', dd]).status, 1);
    assert.equal(cat(dd).status, 0);
    // The same bytes at the end of a closed segment are damage.
    fs.appendFileSync(segs.s1a.path, half);
    assert.equal(trackctl(['verify', '--data-dir', dd]).status, 1);
});

test('verify tells a missing segment from retention at the start', () => {
    const { dd, segs } = fixture();
    writeSegment(dd, 1, 3, [{ event: ev(7), time: T0 + 40 }]);
    fs.unlinkSync(segs.s1a.path); // retention removes the oldest: fine
    const v = trackctl(['verify', '--data-dir', dd]);
    assert.equal(v.status, 0, v.stdout);
    assert.match(v.stdout, /segment 1 is gone from the start of the slot \(retention/);
    fs.unlinkSync(segs.s1b.path); // now 3 alone: still the start
    assert.equal(trackctl(['verify', '--data-dir', dd]).status, 0);
    writeSegment(dd, 1, 5, []); // 4 missing between 3 and 5: a broken chain
    const gap = trackctl(['verify', '--data-dir', dd]);
    assert.equal(gap.status, 1);
    assert.match(gap.stdout, /segment 4 is missing/);
});

test('repair dry-runs by default, refuses a locked slot, and moves a damaged segment aside with --yes', async () => {
    const { dd, segs } = fixture();
    flipByte(segs.s1a.path, segs.s1a.offsets[0] + RECORD_HEADER_SIZE + 2);
    const dry = trackctl(['repair', '--data-dir', dd]);
    assert.equal(dry.status, 1);
    assert.ok(dry.stdout.includes(`would move ${segs.s1a.path} to ${segs.s1a.path}.damaged`), dry.stdout);
    assert.ok(fs.existsSync(segs.s1a.path));

    // A running writer holds the slot's lock: nothing may be touched.
    const lockFile = path.join(dd, slotName(1), 'lock');
    fs.writeFileSync(lockFile, '');
    // Its own process group, so that killing it also ends the `sleep` that inherits the lock.
    const holder = spawn('flock', [lockFile, 'sleep', '30'], { stdio: 'ignore', detached: true });
    try {
        await sleep(300);
        // The dry run sees the holder without taking the lock itself.
        assert.match(trackctl(['repair', '--data-dir', dd]).stdout, /REFUSED: a running trackd holds/);
        const refused = trackctl(['repair', '--yes', '--data-dir', dd]);
        assert.equal(refused.status, 1);
        assert.match(refused.stdout, /REFUSED: a running trackd holds/);
        assert.ok(fs.existsSync(segs.s1a.path));
    } finally {
        const gone = new Promise((r) => holder.once('exit', r));
        process.kill(-holder.pid, 'SIGKILL');
        await gone;
    }

    const done = trackctl(['repair', '--yes', '--data-dir', dd]);
    assert.equal(done.status, 0, done.stdout);
    assert.ok(done.stdout.includes(`moved ${segs.s1a.path} to ${segs.s1a.path}.damaged`), done.stdout);
    assert.ok(!fs.existsSync(segs.s1a.path));
    assert.ok(fs.existsSync(`${segs.s1a.path}.damaged`));
    const v = trackctl(['verify', '--data-dir', dd]);
    assert.equal(v.status, 0, v.stdout);
    assert.match(v.stdout, /moved aside by repair/);
    assert.deepEqual(cat(dd).recs.map(label), MERGED.filter((l) => l !== 'e0' && l !== 'e1'));
    // Nothing left to do: a second run changes nothing and succeeds.
    assert.equal(trackctl(['repair', '--yes', '--data-dir', dd]).status, 0);
});

test('tail -n prints the last records in merged order', () => {
    const { dd } = fixture();
    const last = (...a) => ndjson(trackctl(['tail', '--data-dir', dd, ...a]).stdout).map(label);
    assert.deepEqual(last('-n', '3'), MERGED.slice(-3));
    assert.deepEqual(last(), MERGED); // default 10, fewer exist
    assert.deepEqual(last('-n', '0'), []);
    assert.deepEqual(last('-n', '2', '--worker', '1'), ['e1', 'e2']);
    assert.deepEqual(last('-n', '1', '--token', 'tok-a'), ['e2']);
});

test('tail -f follows appends, segment rolls and new slots until it is killed', async () => {
    const { dd, segs } = fixture();
    const p = spawn(TRACKCTL, ['tail', '-f', '-n', '1', '--interval', '50', '--data-dir', dd], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    p.stderr.setEncoding('utf8').on('data', (d) => (err += d));
    const exited = new Promise((r) => p.once('exit', (code, signal) => r({ code, signal })));
    const lines = () => (out.endsWith('\n') ? ndjson(out) : ndjson(out.slice(0, out.lastIndexOf('\n') + 1)));
    async function waitFor(n) {
        const deadline = Date.now() + slow(10000);
        while (lines().length < n) {
            if (Date.now() > deadline) throw new Error(`tail -f printed ${lines().length} lines, want ${n}:\n${out}\n${err}`);
            await sleep(20);
        }
    }
    try {
        await waitFor(1);
        assert.deepEqual(lines().map(label), ['e5']);
        appendRecords(segs.s1b.path, [{ event: ev(10), time: T0 + 50 }]);
        await waitFor(2);
        writeSegment(dd, 1, 3, [{ event: ev(11), time: T0 + 60 }]); // a roll
        await waitFor(3);
        writeSegment(dd, 7, 1, [{ event: ev(12), time: T0 + 70 }]); // a slot that appeared later
        await waitFor(4);
        // Half a record waits, unreported, until the rest arrives.
        const rec = record(ev(13), T0 + 80);
        fs.appendFileSync(segmentPath(dd, 7, 1), rec.subarray(0, 25));
        await sleep(300);
        assert.equal(lines().length, 4);
        fs.appendFileSync(segmentPath(dd, 7, 1), rec.subarray(25));
        await waitFor(5);
        assert.deepEqual(lines().map(label), ['e5', 'e10', 'e11', 'e12', 'e13']);
        assert.equal(lines()[3]._trackd.pos, '7:1:40');
    } finally {
        p.kill('SIGTERM');
    }
    const e = await Promise.race([exited, sleep(5000).then(() => null)]);
    assert.ok(e, 'tail -f did not exit after SIGTERM');
    assert.ok(e.code === 0 || e.signal === 'SIGTERM', JSON.stringify(e));
    assert.equal(err, '');
});

test('stats counts records, bytes, segments and time range per slot and in total', () => {
    const { dd } = fixture();
    const r = trackctl(['stats', '--json', '--data-dir', dd]);
    assert.equal(r.status, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    assert.deepEqual(s.slots.map((x) => [x.slot, x.segments, x.records]), [
        [1, 2, 3],
        [2, 1, 3],
        [3, 1, 1],
    ]);
    assert.equal(s.total.records, 7);
    assert.equal(s.total.first_received_ms, T0);
    assert.equal(s.total.last_received_ms, T0 + 20);
    assert.equal(s.total.first_received, '2026-11-25T10:00:00.000Z');
    let bytes = 0;
    for (const slot of [1, 2, 3]) for (const f of fs.readdirSync(path.join(dd, slotName(slot)))) bytes += fs.statSync(path.join(dd, slotName(slot), f)).size;
    assert.equal(s.total.bytes, bytes);
    const table = trackctl(['stats', '--data-dir', dd]);
    assert.equal(table.status, 0);
    assert.match(table.stdout, /^total\s+4\s+7\s/m);
});

test('help, usage errors and exit statuses', () => {
    assert.equal(trackctl([]).status, 2);
    const h = trackctl(['--help']);
    assert.equal(h.status, 0);
    for (const c of ['cat', 'tail', 'verify', 'stats', 'repair']) assert.match(h.stdout, new RegExp(`^  ${c} `, 'm'));
    assert.match(trackctl(['help', 'tail']).stdout, /--follow/);
    assert.match(trackctl(['cat', '--help']).stdout, /--save-cursor/);
    assert.equal(trackctl(['frobnicate']).status, 2);
    assert.equal(trackctl(['cat', '--bogus']).status, 2);
    assert.equal(trackctl(['cat', '--yes']).status, 2); // an option of another command
    assert.equal(trackctl(['tail', '-n', 'many']).status, 2);
    const missing = trackctl(['cat', '--data-dir', path.join(tempDir(), 'nope')]);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /No such file/);
});

test('against a live trackd: tail -f sees acknowledged events, cat and verify read what it wrote', { skip: !fs.existsSync(TRACKD) && 'bin/trackd not built' }, async () => {
    const srv = await startTrackd({ workers: 2 });
    const tail = spawn(TRACKCTL, ['tail', '-f', '--interval', '50', '--data-dir', srv.dataDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    tail.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    const exited = new Promise((r) => tail.once('exit', r));
    const sent = [];
    try {
        for (let i = 0; i < 20; i++) {
            const e = trackEvent({ n: i });
            sent.push(e);
            const r = await request(srv.port, {
                method: 'POST',
                path: '/track',
                headers: { 'Content-Type': 'application/json' },
                body: JSON.stringify(e),
            });
            assert.equal(r.status, 200);
        }
        const deadline = Date.now() + slow(10000);
        while (out.split('\n').length - 1 < sent.length && Date.now() < deadline) await sleep(50);
        const seen = ndjson(out.slice(0, out.lastIndexOf('\n') + 1));
        assert.deepEqual(seen.map((o) => o.properties.$insert_id).sort(), sent.map((e) => e.properties.$insert_id).sort());
    } finally {
        tail.kill('SIGTERM');
        await exited;
        await srv.stop();
    }
    const all = cat(srv.dataDir);
    assert.equal(all.status, 0, all.stderr);
    assert.equal(all.recs.length, sent.length);
    for (const o of all.recs) {
        assert.equal(o.properties.token, TOKEN);
        assert.equal(o._trackd.endpoint, 'track');
    }
    const v = trackctl(['verify', '--data-dir', srv.dataDir]);
    assert.equal(v.status, 0, v.stdout);
});
