// The master process, seen from outside: real trackd processes, real signals, real sockets.
//   - a worker killed with SIGKILL is restarted at once and the restart is logged;
//   - a worker that cannot start makes the master give up (restart_intensity) instead of looping;
//   - SIGTERM stops everything with status 0 and removes the pidfile;
//   - a second trackd on the same pidfile refuses to start;
//   - SIGHUP re-reads the config and replaces the workers one at a time, no request failing;
//   - SIGUSR2 starts the binary now on disk on the same sockets, the old master leaves, no
//     request failing; a new binary that cannot start leaves the old one serving;
//   - the command line and config file errors, -t and --help, and conf/trackd.conf itself;
//   - nginx in front (conf/nginx.conf.in via scripts/gen-nginx.sh): API proxied to the worker
//     ports with the client address passed on unforgeably, static files served by nginx alone.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';

import { b64json, oneByInsertId, trackEvent } from './lib/events.mjs';
import { request } from './lib/http.mjs';
import {
    REPO_ROOT,
    SANITIZED,
    TRACKD,
    Trackd,
    childPids,
    freePort,
    readRecords,
    sleep,
    slow,
    startTrackd,
    tempDir,
} from './lib/trackd.mjs';

/** Is `pid` a live process (not gone, not a zombie)? */
function alive(pid) {
    try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
    } catch {
        return false;
    }
}

/** Poll `cond` every few ms until it is truthy; returns its value, or throws `what` after `ms`. */
async function waitFor(cond, what, ms = slow(10000), every = 5) {
    const deadline = Date.now() + ms;
    for (;;) {
        const v = await cond();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        await sleep(every);
    }
}

function portFree(port) {
    return new Promise((resolve) => {
        const srv = net.createServer();
        srv.unref();
        srv.once('error', () => resolve(false));
        srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
}

/**
 * `n` consecutive free ports (for --worker-listen, worker i on PORT+i-1). Chosen below the
 * kernel's ephemeral range, where outgoing connections (of load running alongside) take ports.
 */
async function freePorts(n) {
    const [lo] = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    const top = Math.min(lo || 32768, 65536) - n;
    for (let tries = 0; tries < 200; tries++) {
        const p = 10000 + Math.floor(Math.random() * (top - 10000));
        let ok = true;
        for (let i = 0; i < n && ok; i++) ok = await portFree(p + i);
        if (ok) return p;
    }
    throw new Error(`no ${n} consecutive free ports`);
}

function readPid(file) {
    try {
        return Number(fs.readFileSync(file, 'utf8').trim()) || 0;
    } catch {
        return 0;
    }
}

async function healthz(port) {
    try {
        return (await request(port, { path: '/healthz', timeout: slow(2000) })).status;
    } catch (e) {
        return e.message;
    }
}

/**
 * Clients sending POST /track, each request on a new connection, until stop(). Every answer
 * must be 200 with body 1; anything else (refused connection, reset, timeout, other status) is
 * a failure. Resolves with {ok, failed: [why...], acked: [$insert_id...]}.
 */
function steadyLoad(port, clients = 4) {
    const stats = { ok: 0, failed: [], acked: [] };
    let stopping = false;
    const loops = Array.from({ length: clients }, async () => {
        while (!stopping) {
            const ev = trackEvent({ load: 'supervisor' });
            try {
                const r = await request(port, {
                    method: 'POST',
                    path: '/track',
                    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
                    body: `data=${encodeURIComponent(b64json(ev))}`,
                    timeout: slow(10000),
                });
                if (r.status === 200 && r.text === '1') {
                    stats.ok++;
                    stats.acked.push(ev.properties.$insert_id);
                } else {
                    stats.failed.push(`status ${r.status} body ${JSON.stringify(r.text.slice(0, 200))}`);
                }
            } catch (e) {
                stats.failed.push(e.message);
            }
        }
    });
    return {
        stats,
        async stop() {
            stopping = true;
            await Promise.all(loops);
            return stats;
        },
    };
}

/** Every acknowledged $insert_id is in the log of `dataDir`. */
function assertAllStored(dataDir, acked) {
    const stored = new Set();
    for (const r of readRecords(dataDir)) if (r.properties && r.properties.$insert_id) stored.add(r.properties.$insert_id);
    const missing = acked.filter((id) => !stored.has(id));
    assert.equal(missing.length, 0, `${missing.length} of ${acked.length} acknowledged events are not in the log`);
}

/** Wall-clock times (ms) of the master's log lines matching `re`. */
function logTimes(stderr, re) {
    const out = [];
    for (const line of stderr.split('\n')) {
        if (!re.test(line)) continue;
        const t = Date.parse(line.split(' ')[0]);
        if (!Number.isNaN(t)) out.push(t);
    }
    return out;
}

describe('supervision', () => {
    it('a worker killed with SIGKILL is restarted at once, logged, and serves again; the other keeps its pid', { timeout: slow(60000) }, async () => {
        const base = await freePorts(2);
        const srv = await startTrackd({ workers: 2, args: ['--worker-listen', `127.0.0.1:${base}`] });
        try {
            const before = await waitFor(() => {
                const p = srv.workerPids();
                return p.length === 2 && p;
            }, 'two workers');
            const victim = before[0];
            const survivor = before[1];
            const killedAt = Date.now();
            process.kill(victim, 'SIGKILL');
            const after = await waitFor(() => {
                const p = srv.workerPids();
                return p.length === 2 && !p.includes(victim) && p;
            }, 'a new worker pid', slow(2000), 1);
            const seenAt = Date.now();
            assert.ok(after.includes(survivor), 'the surviving worker was not restarted');
            const fresh = after.find((p) => p !== survivor);
            assert.ok(seenAt - killedAt < slow(1000), `new worker seen ${seenAt - killedAt} ms after the kill`);
            // Both per-worker ports and the shared one answer again.
            for (const port of [srv.port, base, base + 1]) {
                await waitFor(async () => (await healthz(port)) === 200, `/healthz on ${port}`, slow(5000), 10);
            }
            await waitFor(() => new RegExp(`killed by signal 9 .*restarted as pid ${fresh}`).test(srv.stderr), 'the restart log line', slow(2000));
            // The master's own clock says how long the restart took: well under 100 ms.
            const [restartAt] = logTimes(srv.stderr, /restarted as pid/);
            assert.ok(restartAt - killedAt < (SANITIZED ? 300 : 100), `restart logged ${restartAt - killedAt} ms after the kill`);
            await srv.stop();
        } finally {
            await srv.kill();
        }
    });

    it('a worker that cannot start trips restart_intensity: the master stops and exits non-zero', { timeout: slow(60000) }, async () => {
        // data_dir below a regular file: the master cannot create it either, but only the
        // workers need it (the pidfile is elsewhere), so every worker fails at start-up.
        const dir = tempDir();
        fs.writeFileSync(path.join(dir, 'not-a-dir'), 'x');
        const pidfile = path.join(dir, 'trackd.pid');
        const port = await freePort();
        const started = Date.now();
        const srv = new Trackd(
            spawn(TRACKD, [
                '--listen', `127.0.0.1:${port}`, '--workers', '2',
                '--data-dir', path.join(dir, 'not-a-dir', 'data'), '--pidfile', pidfile,
                '--restart-intensity', '3', '--restart-period-s', '30',
            ], { stdio: ['ignore', 'pipe', 'pipe'] }),
            { port, host: '127.0.0.1', dataDir: dir, args: [] },
        );
        const e = await srv.waitExit(slow(20000));
        assert.ok(e, `the master is still running after 20 s:\n${srv.stderr.slice(-3000)}`);
        assert.equal(e.code, 1, `exit ${JSON.stringify(e)}\n${srv.stderr.slice(-3000)}`);
        assert.match(srv.stderr, /4 restarts within 30 s exceed restart_intensity 3/);
        // Exactly restart_intensity restarts happened before it gave up.
        assert.equal((srv.stderr.match(/restarted as pid/g) || []).length, 3, srv.stderr.slice(-3000));
        assert.ok(Date.now() - started < slow(10000), 'gave up quickly');
        assert.ok(!fs.existsSync(pidfile), 'pidfile removed');
        srv.assertClean();
    });

    it('SIGTERM stops the workers and the master with status 0 and removes the pidfile', { timeout: slow(60000) }, async () => {
        const srv = await startTrackd({ workers: 2 });
        const pidfile = path.join(srv.dataDir, 'trackd.pid');
        assert.equal(readPid(pidfile), srv.pid, 'the pidfile holds the master pid');
        const workers = srv.workerPids();
        assert.equal(workers.length, 2);
        await srv.stop();
        assert.ok(!fs.existsSync(pidfile), 'pidfile removed');
        for (const w of workers) assert.ok(!alive(w), `worker ${w} still alive`);
        assert.match(srv.stderr, /stopping 2 worker/);
    });

    it('a second trackd on the same pidfile refuses to start and names the running pid', { timeout: slow(60000) }, async () => {
        const first = await startTrackd({ workers: 1 });
        try {
            const port = await freePort();
            const r = spawnSync(TRACKD, ['--listen', `127.0.0.1:${port}`, '--workers', '1', '--data-dir', first.dataDir], {
                encoding: 'utf8',
                timeout: slow(10000),
            });
            assert.equal(r.status, 1, `second instance: status ${r.status}\n${r.stderr}`);
            assert.match(r.stderr, new RegExp(`already running .*\\(pid ${first.pid}\\)`));
            assert.notEqual(await healthz(port), 200, 'the second instance never listened');
            assert.equal(readPid(path.join(first.dataDir, 'trackd.pid')), first.pid, 'pidfile untouched');
            assert.equal(await healthz(first.port), 200);
            await first.stop();
        } finally {
            await first.kill();
        }
    });
});

describe('reload (SIGHUP)', () => {
    it('replaces every worker one at a time with no failed request under load', { timeout: slow(90000) }, async () => {
        const dataDir = tempDir();
        const conf = path.join(dataDir, 'trackd.conf');
        fs.writeFileSync(conf, '# reload test\nmax_headers 64\n');
        const srv = await startTrackd({ workers: 2, dataDir, args: ['--config', conf] });
        try {
            const old = srv.workerPids();
            assert.equal(old.length, 2);
            const load = steadyLoad(srv.port);
            await sleep(300);
            fs.writeFileSync(conf, '# reload test, changed\nmax_headers 80\n');
            process.kill(srv.pid, 'SIGHUP');
            const fresh = await waitFor(() => {
                const p = srv.workerPids();
                return p.length === 2 && p.every((x) => !old.includes(x)) && p;
            }, 'two new workers', slow(20000));
            await waitFor(() => /reload done/.test(srv.stderr), 'reload done');
            await sleep(300);
            const stats = await load.stop();
            assert.deepEqual(stats.failed, [], `${stats.failed.length} failed of ${stats.ok + stats.failed.length}`);
            assert.ok(stats.ok > 20, `only ${stats.ok} requests went through`);
            for (const w of old) await waitFor(() => !alive(w), `old worker ${w} to exit`);
            assert.equal((srv.stderr.match(/reload: worker \d replaced/g) || []).length, 2);
            assert.deepEqual(srv.workerPids(), fresh);
            await srv.stop();
            assertAllStored(dataDir, stats.acked);
        } finally {
            await srv.kill();
        }
    });

    it('a config file that fails to parse keeps the running workers and logs the error with its line', { timeout: slow(60000) }, async () => {
        const dataDir = tempDir();
        const conf = path.join(dataDir, 'trackd.conf');
        fs.writeFileSync(conf, 'max_headers 64\n');
        const srv = await startTrackd({ workers: 2, dataDir, args: ['--config', conf] });
        try {
            const before = srv.workerPids();
            fs.writeFileSync(conf, 'max_headers 64\n\nlisen 127.0.0.1:1\n');
            process.kill(srv.pid, 'SIGHUP');
            await waitFor(() => /reload failed/.test(srv.stderr), 'the reload error');
            assert.match(srv.stderr, new RegExp(`${conf.replace(/[.]/g, '\\.')}:3: unknown option 'lisen'`));
            await sleep(200);
            assert.deepEqual(srv.workerPids(), before, 'workers were replaced by a failed reload');
            assert.equal(await healthz(srv.port), 200);
            await srv.stop();
        } finally {
            await srv.kill();
        }
    });
});

describe('binary upgrade (SIGUSR2)', () => {
    /** Start trackd from a copy of the binary in its own directory (which the test may replace). */
    async function startCopy(dir, workers = 2) {
        const bin = path.join(dir, 'trackd');
        fs.copyFileSync(TRACKD, bin);
        fs.chmodSync(bin, 0o755);
        const port = await freePort();
        const dataDir = path.join(dir, 'data');
        const args = ['--listen', `127.0.0.1:${port}`, '--workers', String(workers), '--data-dir', dataDir];
        const srv = new Trackd(spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] }), { port, host: '127.0.0.1', dataDir, args });
        await srv.waitHealthy();
        return { srv, bin, pidfile: path.join(dataDir, 'trackd.pid') };
    }

    /** Replace the file at `bin` by a new file (new inode) with `content`, as an install does. */
    function replaceFile(bin, content) {
        const tmp = `${bin}.new`;
        fs.writeFileSync(tmp, content, { mode: 0o755 });
        fs.renameSync(tmp, bin);
    }

    it('the binary now on disk takes over the sockets, the old master exits 0, no request fails', { timeout: slow(90000) }, async () => {
        const dir = tempDir();
        const { srv, bin, pidfile } = await startCopy(dir);
        let newPid = 0;
        try {
            const oldWorkers = srv.workerPids();
            replaceFile(bin, fs.readFileSync(TRACKD));
            const newIno = fs.statSync(bin).ino;
            const load = steadyLoad(srv.port);
            await sleep(300);
            process.kill(srv.pid, 'SIGUSR2');
            newPid = await waitFor(() => {
                const p = readPid(pidfile);
                return p && p !== srv.pid && p;
            }, 'the new master to own the pidfile', slow(20000));
            // The old master drains its workers and leaves with status 0.
            await waitFor(() => srv.exited, 'the old master to exit', slow(20000));
            assert.deepEqual(srv.exited, { code: 0, signal: null }, srv.stderr.slice(-3000));
            await sleep(300);
            const stats = await load.stop();
            assert.deepEqual(stats.failed, [], `${stats.failed.length} failed of ${stats.ok + stats.failed.length}`);
            assert.ok(stats.ok > 20, `only ${stats.ok} requests went through`);
            for (const w of oldWorkers) await waitFor(() => !alive(w), `old worker ${w} to exit`);
            // The new master runs the replaced file and serves through the same socket.
            assert.ok(alive(newPid));
            assert.equal(fs.statSync(`/proc/${newPid}/exe`).ino, newIno, 'the new master runs the new file');
            assert.equal(childPids(newPid).length, 2, 'the new master has its two workers');
            assert.equal(await healthz(srv.port), 200);
            assert.ok(!fs.existsSync(`${pidfile}.oldbin`), 'the .oldbin pidfile is gone');
            assert.match(srv.stderr, /socket inherited from the old master/);
            // The new master stops cleanly too (it is not our child: watch its pidfile).
            process.kill(newPid, 'SIGTERM');
            await waitFor(() => !alive(newPid), 'the new master to exit', slow(20000));
            assert.ok(!fs.existsSync(pidfile), 'the new master removed the pidfile');
            newPid = 0;
            srv.assertClean();
            assertAllStored(path.join(dir, 'data'), stats.acked);
        } finally {
            if (newPid && alive(newPid)) process.kill(newPid, 'SIGKILL');
            await srv.kill();
        }
    });

    it('a new binary that fails to start leaves the old master serving with its pidfile back', { timeout: slow(60000) }, async () => {
        const dir = tempDir();
        const { srv, bin, pidfile } = await startCopy(dir, 1);
        try {
            const workers = srv.workerPids();
            replaceFile(bin, '#!/bin/sh\necho "broken build" >&2\nexit 3\n');
            process.kill(srv.pid, 'SIGUSR2');
            await waitFor(() => /upgrade failed/.test(srv.stderr), 'the upgrade failure');
            assert.match(srv.stderr, /upgrade failed: the new master \(pid \d+\) exited with status 3 before it was ready/);
            assert.equal(readPid(pidfile), srv.pid, 'pidfile renamed back');
            assert.ok(!fs.existsSync(`${pidfile}.oldbin`));
            assert.deepEqual(srv.workerPids(), workers);
            assert.equal(await healthz(srv.port), 200);
            await srv.stop();
        } finally {
            await srv.kill();
        }
    });
});

describe('command line', () => {
    function run(args) {
        return spawnSync(TRACKD, args, { encoding: 'utf8', timeout: slow(10000) });
    }

    it('an unknown option or a bad config line exits 2 naming it', () => {
        let r = run(['--lisen', '127.0.0.1:1']);
        assert.equal(r.status, 2);
        assert.match(r.stderr, /unknown option '--lisen'/);
        const dir = tempDir();
        const conf = path.join(dir, 'bad.conf');
        fs.writeFileSync(conf, '# comment\nworkers 1\nmax_body_bytes x\n');
        r = run(['--config', conf, '-t']);
        assert.equal(r.status, 2);
        assert.ok(r.stderr.includes(`${conf}:3: bad size 'x'`), r.stderr);
        r = run(['-t', '--worker-listen', '127.0.0.1:65535', '--workers', '2']);
        assert.equal(r.status, 2);
        assert.match(r.stderr, /65536/);
    });

    it('-t checks a valid config and exits 0 without starting; --help documents every option', () => {
        const dir = tempDir();
        const conf = path.join(dir, 'ok.conf');
        fs.writeFileSync(conf, 'listen 127.0.0.1:1\nworkers 3\ntrusted_proxy 127.0.0.1/32, ::1\n');
        let r = run(['-c', conf, '-t', '--data-dir', dir]);
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stdout, /configuration OK \(3 workers/);
        assert.ok(!fs.existsSync(path.join(dir, 'trackd.pid')));
        r = run(['--help']);
        assert.equal(r.status, 0);
        for (const opt of ['--listen', '--worker-listen', '--workers', '--data-dir', '--durability', '--max-body-bytes',
            '--token', '--trusted-proxy', '--restart-intensity', '--shutdown-timeout-ms', '--config', '--test-config']) {
            assert.ok(r.stdout.includes(`${opt} `), `--help lacks ${opt}`);
        }
        r = run(['--version']);
        assert.equal(r.status, 0);
        assert.match(r.stdout, /^trackd \d+\.\d+\.\d+/);
    });
});

describe('conf/', () => {
    it('conf/trackd.conf passes -t and shows every option of --help', () => {
        const example = path.join(REPO_ROOT, 'conf', 'trackd.conf');
        const dir = tempDir();
        let r = spawnSync(TRACKD, ['-c', example, '-t', '--data-dir', dir], { encoding: 'utf8' });
        assert.equal(r.status, 0, r.stderr);
        // Uncommented, the examples are valid too.
        const all = fs.readFileSync(example, 'utf8').replace(/^#((?:token|import_secret|redirect_host|trusted_proxy|worker_listen|rate_limit_token) )/gm, '$1');
        fs.writeFileSync(path.join(dir, 'all.conf'), all);
        r = spawnSync(TRACKD, ['-c', path.join(dir, 'all.conf'), '-t', '--data-dir', dir], { encoding: 'utf8' });
        assert.equal(r.status, 0, r.stderr);
        const help = spawnSync(TRACKD, ['--help'], { encoding: 'utf8' }).stdout;
        const names = [...help.matchAll(/\[([a-z_]+)\]/g)].map((m) => m[1]);
        assert.ok(names.length >= 30, `--help names only ${names.length} options`);
        for (const n of names) assert.match(all, new RegExp(`^${n} `, 'm'), `conf/trackd.conf lacks ${n}`);
    });
});

describe('nginx in front (conf/nginx.conf.in)', () => {
    const haveNginx = spawnSync('nginx', ['-v']).status === 0;

    it('proxies the API to the worker ports, passes the client address unforgeably, serves web/ alone', { skip: !haveNginx && 'nginx is not installed', timeout: slow(60000) }, async () => {
        const dir = tempDir();
        fs.chmodSync(dir, 0o755); // nginx workers run as nobody when the test runs as root
        const web = path.join(dir, 'web');
        fs.mkdirSync(path.join(web, 'dist'), { recursive: true });
        fs.mkdirSync(path.join(web, 'demo'));
        const lib = '/* trackd test library */ window.trackd = 1;\n';
        fs.writeFileSync(path.join(web, 'dist', 'trackd-9.8.7.min.js'), lib);
        fs.writeFileSync(path.join(web, 'demo', 'index.html'), '<!doctype html><title>trackd demo</title>\n');
        const base = await freePorts(2);
        const nginxPort = await freePort();
        const prefix = path.join(dir, 'nginx');
        const gen = spawnSync(path.join(REPO_ROOT, 'scripts', 'gen-nginx.sh'), [
            '--listen', `127.0.0.1:${nginxPort}`, '--upstream', `127.0.0.1:${base}`, '--workers', '2', '--web', web, prefix,
        ], { encoding: 'utf8' });
        assert.equal(gen.status, 0, gen.stderr);
        const conf = fs.readFileSync(path.join(prefix, 'nginx.conf'), 'utf8');
        assert.match(conf, new RegExp(`server 127\\.0\\.0\\.1:${base} `));
        assert.match(conf, new RegExp(`server 127\\.0\\.0\\.1:${base + 1} `));
        assert.doesNotMatch(conf, /@[A-Z_]+@/, 'a placeholder was left in the generated config');

        const srv = await startTrackd({ workers: 2, args: ['--worker-listen', `127.0.0.1:${base}`, '--trusted-proxy', '127.0.0.1/32'] });
        const ngx = spawn('nginx', ['-p', prefix, '-c', path.join(prefix, 'nginx.conf'), '-e', 'stderr', '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] });
        let ngxErr = '';
        ngx.stderr.on('data', (d) => (ngxErr += d));
        const ngxExit = new Promise((resolve) => ngx.on('exit', resolve));
        try {
            await waitFor(async () => (await healthz(nginxPort)) === 200, `nginx on ${nginxPort} (${ngxErr})`);
            // The browser's /track/ and the Node library's /track, from another loopback address
            // than nginx's, with a forged X-Forwarded-For.
            const sent = [];
            for (const p of ['/track/', '/track', '/engage/']) {
                const ev = p.startsWith('/engage')
                    ? { $token: 'tok', $distinct_id: `d-${sent.length}`, $set: { a: 1 } }
                    : trackEvent();
                const r = await request(nginxPort, {
                    method: 'POST', path: `${p}?ip=1`, localAddress: '127.0.0.2',
                    headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'X-Forwarded-For': '6.6.6.6', 'X-Real-IP': '6.6.6.6' },
                    body: `data=${encodeURIComponent(b64json(ev))}`,
                });
                assert.equal(r.status, 200, `${p}: ${r.status} ${r.text}`);
                assert.equal(r.text, '1', p);
                sent.push(ev);
            }
            // Other paths never reach trackd.
            assert.equal((await request(nginxPort, { path: '/track/x' })).status, 404);
            // Over the body limit, nginx answers 413 itself, as trackd would.
            const big = await request(nginxPort, { method: 'POST', path: '/track', headers: { 'Content-Type': 'application/json' }, body: 'x'.repeat(2 * 1024 * 1024 + 1) });
            assert.equal(big.status, 413);

            await srv.stop();
            const recs = readRecords(srv.dataDir);
            for (const ev of sent.filter((e) => e.properties)) {
                assert.equal(oneByInsertId(recs, ev.properties.$insert_id).properties.ip, '127.0.0.2', 'the client address, not the forged one');
            }
            // With trackd gone, nginx still serves the library (immutable) and the demo page.
            const js = await request(nginxPort, { path: '/js/trackd-9.8.7.min.js' });
            assert.equal(js.status, 200);
            assert.equal(js.text, lib);
            assert.match(js.headers['cache-control'], /immutable/);
            assert.match(js.headers['cache-control'], /max-age=31536000/);
            assert.match(js.headers['content-type'], /javascript/);
            const demo = await request(nginxPort, { path: '/' });
            assert.equal(demo.status, 200);
            assert.match(demo.text, /trackd demo/);
            assert.equal(await healthz(nginxPort), 502, 'the API needs trackd, the static files do not');
        } finally {
            ngx.kill('SIGQUIT');
            await Promise.race([ngxExit, sleep(5000)]);
            if (ngx.exitCode === null) ngx.kill('SIGKILL');
            await srv.kill();
        }
    });
});
