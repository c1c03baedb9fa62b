// Starting and stopping the real trackd binary for black-box tests.
//
// Every server gets a free loopback port and a fresh temporary data directory, runs in the
// foreground as a child of the test process, and is polled on GET /healthz until a worker
// answers. Its stderr is kept: a sanitizer report there fails the test that stops the server,
// because an ASan/UBSan build prints its findings and may still exit 0 when they are recoverable.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { request } from './http.mjs';

/** Repository root (tests/blackbox/lib/../../..). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Where bin/trackd and bin/trackctl live: TRACKD_BIN_DIR (relative to the repo root) or bin/. */
export const BIN_DIR = path.resolve(REPO_ROOT, process.env.TRACKD_BIN_DIR || 'bin');
export const TRACKD = path.join(BIN_DIR, 'trackd');
export const TRACKCTL = path.join(BIN_DIR, 'trackctl');

/** True when the binaries under test were built with sanitizers (slower: wider timeouts). */
export const SANITIZED = /san/.test(BIN_DIR) || Boolean(process.env.ASAN_OPTIONS);

/** Multiply a timeout for the sanitized build. */
export function slow(ms) {
    return SANITIZED ? ms * 3 : ms;
}

const SANITIZER_MARKERS = [
    'ERROR: AddressSanitizer',
    'ERROR: LeakSanitizer',
    'runtime error:',
    'WARNING: ThreadSanitizer',
];

/** The sanitizer finding in `text`, or null. */
export function sanitizerReport(text) {
    for (const m of SANITIZER_MARKERS) {
        const i = text.indexOf(m);
        if (i >= 0) return text.slice(Math.max(0, i - 200), i + 3000);
    }
    return null;
}

const tempDirs = [];
const liveServers = new Set();

/** A fresh temporary directory, removed when the test process exits (TRACKD_KEEP_DATA=1 keeps). */
export function tempDir(prefix = 'trackd-bb-') {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    tempDirs.push(d);
    return d;
}

process.on('exit', () => {
    for (const s of liveServers) {
        try {
            process.kill(s.pid, 'SIGKILL');
        } catch {
            /* already gone */
        }
    }
    if (process.env.TRACKD_KEEP_DATA === '1') return;
    for (const d of tempDirs) {
        try {
            fs.rmSync(d, { recursive: true, force: true });
        } catch {
            /* a mount point still mounted, or busy: leave it */
        }
    }
});

/** A TCP port nobody listens on right now (bound then released). */
export function freePort(host = '127.0.0.1') {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.unref();
        srv.on('error', reject);
        srv.listen(0, host, () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

export function sleep(ms) {
    return new Promise((r) => setTimeout(r, ms));
}

/** A running trackd (see startTrackd). */
export class Trackd {
    constructor(proc, { port, host, dataDir, args }) {
        this.proc = proc;
        this.pid = proc.pid;
        this.port = port;
        this.host = host;
        this.dataDir = dataDir;
        this.args = args;
        this.stderr = '';
        this.stdout = '';
        this.exited = null; // {code, signal} once the process ended
        this._exitWaiters = [];
        proc.stderr.setEncoding('utf8');
        proc.stdout.setEncoding('utf8');
        proc.stderr.on('data', (d) => {
            this.stderr += d;
            if (process.env.TRACKD_BB_VERBOSE === '1') process.stderr.write(d);
        });
        proc.stdout.on('data', (d) => (this.stdout += d));
        proc.on('exit', (code, signal) => {
            this.exited = { code, signal };
            liveServers.delete(this);
        });
        // 'close' comes after the stdio streams are drained: stderr is then complete.
        proc.on('close', () => {
            for (const w of this._exitWaiters.splice(0)) w(this.exited);
        });
        liveServers.add(this);
    }

    /** Resolve with {code, signal} when the process has exited, or null after `ms`. */
    waitExit(ms = slow(20000)) {
        if (this.exited && this.proc.stderr.readableEnded) return Promise.resolve(this.exited);
        return new Promise((resolve) => {
            const t = setTimeout(() => resolve(null), ms);
            this._exitWaiters.push((e) => {
                clearTimeout(t);
                resolve(e);
            });
        });
    }

    /** Poll GET /healthz until it answers 200. Throws with stderr if trackd exits or never does. */
    async waitHealthy(ms = slow(15000)) {
        const deadline = Date.now() + ms;
        let last = 'no answer';
        while (Date.now() < deadline) {
            if (this.exited) {
                await this.waitExit(2000);
                throw new Error(
                    `trackd exited (${JSON.stringify(this.exited)}) before /healthz answered; ` +
                        `args ${this.args.join(' ')}\nstderr:\n${this.stderr.slice(-4000)}`,
                );
            }
            try {
                const r = await request(this.port, { path: '/healthz', timeout: 1000, host: this.host });
                if (r.status === 200) return;
                last = `status ${r.status}`;
            } catch (e) {
                last = e.message;
            }
            await sleep(50);
        }
        throw new Error(`trackd /healthz not ready after ${ms} ms (${last})\nstderr:\n${this.stderr.slice(-4000)}`);
    }

    /** Pids of the master's children (the workers), from /proc or pgrep. */
    workerPids() {
        return childPids(this.pid);
    }

    /** Throw if stderr holds a sanitizer report. */
    assertClean() {
        const rep = sanitizerReport(this.stderr);
        if (rep) throw new Error(`sanitizer report on trackd's stderr:\n${rep}`);
    }

    /** SIGTERM, wait, require exit status 0 and a clean stderr. */
    async stop({ timeout = slow(20000) } = {}) {
        if (!this.exited) this.proc.kill('SIGTERM');
        const e = await this.waitExit(timeout);
        if (!e) {
            this.proc.kill('SIGKILL');
            await this.waitExit(5000);
            throw new Error(`trackd did not exit within ${timeout} ms of SIGTERM\nstderr:\n${this.stderr.slice(-4000)}`);
        }
        this.assertClean();
        if (e.code !== 0) {
            throw new Error(
                `trackd exited with ${JSON.stringify(e)} after SIGTERM, want code 0\nstderr:\n${this.stderr.slice(-4000)}`,
            );
        }
    }

    /** Kill without any check (cleanup after a failed test). */
    async kill() {
        if (!this.exited) this.proc.kill('SIGKILL');
        await this.waitExit(5000);
    }
}

/** Pids of the direct children of `pid`. */
export function childPids(pid) {
    const out = new Set();
    let viaProc = false;
    try {
        for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
            let text;
            try {
                text = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8');
            } catch {
                continue;
            }
            viaProc = true;
            for (const p of text.split(/\s+/)) if (p) out.add(Number(p));
        }
    } catch {
        /* process gone */
    }
    if (!viaProc) {
        const r = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' });
        for (const p of (r.stdout || '').split(/\s+/)) if (p) out.add(Number(p));
    }
    return [...out].sort((a, b) => a - b);
}

/**
 * Start trackd in the foreground and wait until /healthz answers.
 *   workers: --workers (default 1); dataDir: default a fresh temp dir; args: extra CLI options;
 *   durability: --durability; env: extra environment; wait: false to skip the /healthz poll.
 */
export async function startTrackd({
    workers = 1,
    dataDir,
    args = [],
    durability,
    env = {},
    port,
    host = '127.0.0.1',
    wait = true,
} = {}) {
    if (!fs.existsSync(TRACKD)) throw new Error(`${TRACKD} does not exist (build it with make)`);
    dataDir = dataDir || tempDir();
    port = port || (await freePort(host));
    const hostPort = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    const argv = ['--listen', hostPort, '--workers', String(workers), '--data-dir', dataDir];
    if (durability) argv.push('--durability', durability);
    argv.push(...args);
    const proc = spawn(TRACKD, argv, {
        env: { ...process.env, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
    });
    const t = new Trackd(proc, { port, host, dataDir, args: argv });
    await new Promise((resolve, reject) => {
        proc.once('spawn', resolve);
        proc.once('error', reject);
    });
    if (wait) {
        try {
            await t.waitHealthy();
        } catch (e) {
            await t.kill();
            throw e;
        }
    }
    return t;
}

/** Run trackctl with `args`; returns {status, stdout, stderr}. Fails on a sanitizer report. */
export function trackctl(args, { timeout = slow(60000) } = {}) {
    const r = spawnSync(TRACKCTL, args, { encoding: 'utf8', timeout, maxBuffer: 1 << 30 });
    if (r.error) throw r.error;
    const rep = sanitizerReport(r.stderr || '');
    if (rep) throw new Error(`sanitizer report from trackctl ${args.join(' ')}:\n${rep}`);
    return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Every stored record of `dataDir`, via `trackctl cat` (which must exit 0). */
export function readRecords(dataDir) {
    const r = trackctl(['cat', '--data-dir', dataDir]);
    if (r.status !== 0) {
        throw new Error(`trackctl cat --data-dir ${dataDir} exited ${r.status}:\n${r.stderr}`);
    }
    const recs = [];
    for (const line of r.stdout.split('\n')) {
        if (!line.trim()) continue;
        try {
            recs.push(JSON.parse(line));
        } catch (e) {
            throw new Error(`trackctl cat printed a line that is not JSON: ${line.slice(0, 300)}`);
        }
    }
    return recs;
}

/** `trackctl verify --data-dir DIR`: {status, stdout, stderr}. */
export function verify(dataDir) {
    return trackctl(['verify', '--data-dir', dataDir]);
}

/** Throw unless `trackctl verify` passes on `dataDir`. */
export function assertVerifies(dataDir) {
    const r = verify(dataDir);
    if (r.status !== 0) {
        throw new Error(`trackctl verify --data-dir ${dataDir} exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
    }
}

/** Segment files of one slot directory, sorted by name (= write order). */
export function segments(dataDir, slot = 'w001') {
    const dir = path.join(dataDir, slot);
    return fs
        .readdirSync(dir)
        .filter((n) => /^\d{20}\.seg$/.test(n))
        .sort()
        .map((n) => path.join(dir, n));
}
