// Debian's nginx in front of trackd, configured by the project's own generator.
//
// scripts/gen-nginx.sh writes the config from conf/nginx.conf.in: an upstream pool with one
// server per trackd worker port (--worker-listen), the API locations, and the static files.
// The only change made to the generated file is the access log, unbuffered, because tests read
// it while nginx runs; a test may pass `edit` to try a variant of the generated config.
// nginx runs in the foreground as a child of the test process and is stopped by it.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

import { request } from './http.mjs';
import { REPO_ROOT, sleep, slow, tempDir } from './trackd.mjs';

export const NGINX = process.env.NGINX_BIN || 'nginx';

/** Null if nginx can be run, else why not (for a test's `skip`). */
export function nginxUnavailable() {
    const r = spawnSync(NGINX, ['-v'], { encoding: 'utf8' });
    return r.status === 0 ? null : 'nginx is not installed';
}

function portFree(port, host = '127.0.0.1') {
    return new Promise((resolve) => {
        const srv = net.createServer();
        srv.unref();
        srv.once('error', () => resolve(false));
        srv.listen(port, host, () => srv.close(() => resolve(true)));
    });
}

/**
 * `n` consecutive free loopback ports below the kernel's ephemeral range: outgoing connections
 * (the load a test runs) take their local ports from that range, and a port that must stay
 * free or be refused while a server restarts must not be handed out meanwhile.
 */
export async function freePorts(n) {
    let lo = 32768;
    try {
        lo = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || lo;
    } catch {
        /* not Linux: the usual default */
    }
    const top = Math.min(lo, 65536) - n;
    for (let tries = 0; tries < 200; tries++) {
        const p = 10000 + Math.floor(Math.random() * (top - 10000));
        let ok = true;
        for (let i = 0; i < n && ok; i++) ok = await portFree(p + i);
        if (ok) return p;
    }
    throw new Error(`no ${n} consecutive free ports`);
}

/** A running nginx (see startNginx). */
export class Nginx {
    constructor(proc, prefix, port) {
        this.proc = proc;
        this.prefix = prefix;
        this.port = port;
        this.stderr = '';
        this.exited = null;
        proc.stderr.setEncoding('utf8');
        proc.stderr.on('data', (d) => (this.stderr += d));
        this.done = new Promise((resolve) => proc.on('exit', (code, signal) => resolve((this.exited = { code, signal }))));
    }

    /** The access log's lines so far (format `trackd` of conf/nginx.conf.in). */
    accessLog() {
        try {
            return fs.readFileSync(path.join(this.prefix, 'logs', 'access.log'), 'utf8').split('\n').filter(Boolean);
        } catch {
            return [];
        }
    }

    /**
     * The access log parsed: {client, request, status, upstreamAddr, upstreamStatus} per line.
     * Upstream fields list every server tried, comma-separated ("-" when none was).
     */
    accessRecords() {
        const out = [];
        for (const line of this.accessLog()) {
            const m = /^(\S+) \[[^\]]*\] "([^"]*)" (\d{3}) \d+ \S+ (.*)$/.exec(line);
            if (!m) continue;
            // The three upstream fields: lists joined by ", ", fields by one space.
            const fields = [];
            for (const tok of m[4].split(' ')) {
                if (fields.length && fields[fields.length - 1].endsWith(',')) fields[fields.length - 1] += ` ${tok}`;
                else fields.push(tok);
            }
            out.push({ client: m[1], request: m[2], status: Number(m[3]), upstreamAddr: fields[0], upstreamStatus: fields[1] });
        }
        return out;
    }

    errorLog() {
        try {
            return fs.readFileSync(path.join(this.prefix, 'logs', 'error.log'), 'utf8');
        } catch {
            return '';
        }
    }

    /** Stop: SIGQUIT (let requests finish; SIGTERM: don't), SIGKILL after a few seconds. */
    async stop(signal = 'SIGQUIT') {
        if (!this.exited) this.proc.kill(signal);
        const t = setTimeout(() => this.proc.kill('SIGKILL'), slow(5000));
        await this.done;
        clearTimeout(t);
    }
}

/**
 * Generate nginx's config with scripts/gen-nginx.sh for `workers` trackd workers whose first
 * port is `upstreamPort`, start nginx on 127.0.0.1:`port` (default: a free one) and wait until
 * it answers. `edit(text)` may return a changed config (it must change something); `setup(prefix)`
 * may add files to nginx's prefix directory before it starts.
 */
export async function startNginx({ upstreamPort, workers, port, edit, setup } = {}) {
    const prefix = tempDir('trackd-nginx-');
    fs.chmodSync(prefix, 0o755); // nginx's workers run as nobody when started by root
    port = port || (await freePorts(1));
    const gen = spawnSync(
        path.join(REPO_ROOT, 'scripts', 'gen-nginx.sh'),
        ['--listen', `127.0.0.1:${port}`, '--upstream', `127.0.0.1:${upstreamPort}`, '--workers', String(workers),
            '--web', path.join(REPO_ROOT, 'web'), prefix],
        { encoding: 'utf8' },
    );
    if (gen.status !== 0) throw new Error(`scripts/gen-nginx.sh failed (${gen.status}): ${gen.stderr}`);
    const conf = path.join(prefix, 'nginx.conf');
    const text = fs.readFileSync(conf, 'utf8');
    let changed = text.replace(/(\n\s*access_log \S+ \S+) buffer=\S+ flush=\S+;/, '$1;');
    if (changed === text) throw new Error(`${conf}: the generated config no longer has the buffered access_log line`);
    if (edit) {
        const edited = edit(changed);
        if (edited === changed) throw new Error(`${conf}: the test's edit changed nothing`);
        changed = edited;
    }
    fs.writeFileSync(conf, changed);
    if (setup) setup(prefix);
    const proc = spawn(NGINX, ['-p', prefix, '-c', conf, '-e', 'stderr', '-g', 'daemon off;'], {
        stdio: ['ignore', 'ignore', 'pipe'],
    });
    const n = new Nginx(proc, prefix, port);
    const deadline = Date.now() + slow(10000);
    while (Date.now() < deadline) {
        if (n.exited) throw new Error(`nginx exited ${JSON.stringify(n.exited)}: ${n.stderr}\n${n.errorLog()}`);
        try {
            // Any answer will do (502 while trackd is not up yet): nginx itself is listening.
            await request(port, { path: '/healthz', timeout: 1000 });
            return n;
        } catch {
            await sleep(20);
        }
    }
    await n.stop();
    throw new Error(`nginx did not answer on ${port} within ${slow(10000)} ms: ${n.stderr}\n${n.errorLog()}`);
}
