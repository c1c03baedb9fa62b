// The stack a browser test runs against: the real trackd (tests/blackbox/lib/trackd.mjs starts it)
// with one worker on its own --worker-listen port, nginx in front of it configured by the
// project's own generator (scripts/gen-nginx.sh: the library under /js/ with immutable caching,
// the demo at /, the API proxied to the worker port), and a real headless Chromium (Debian's,
// driven by playwright-core, never a downloaded browser) with a fresh profile.
//
// The generated config gets two test-only additions, made to the generated file: the test's
// own pages under /t/ and the official mixpanel-browser build under /vendor/mixpanel-browser/;
// and the access log unbuffered, since tests read it while nginx runs. The project's /feed.json
// location reads <prefix>/demo/feed.json: that directory is linked to the stack's run directory.

import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { startNginx as startNginxFor } from '../../blackbox/lib/nginx.mjs';
import { REPO_ROOT, freePort, sleep, slow, startTrackd, tempDir } from '../../blackbox/lib/trackd.mjs';

export { REPO_ROOT, slow, sleep, tempDir };

export const WEB_DIR = path.join(REPO_ROOT, 'web');
export const MIXPANEL_DIST = path.join(REPO_ROOT, 'tests', 'node_modules', 'mixpanel-browser', 'dist');
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

/** The library's version and URL path, read from web/trackd.js like web/build.mjs does. */
export function libInfo() {
    const src = fs.readFileSync(path.join(WEB_DIR, 'trackd.js'), 'utf8');
    const version = /\bvar VERSION = '(\d+\.\d+\.\d+)';/.exec(src)[1];
    return { version, path: `/js/trackd-${version}.min.js`, file: path.join(WEB_DIR, 'dist', `trackd-${version}.min.js`) };
}

/** The loader snippet exactly as web/build.mjs generated it (a <script> element). */
export function snippetTag() {
    return fs.readFileSync(path.join(WEB_DIR, 'dist', 'snippet.html'), 'utf8').trim();
}

/**
 * A free loopback port below the kernel's ephemeral range. Ports from freePort() (bind to port 0)
 * come from that range, where any process on the host (other test suites running at the same
 * time) may be handed the same port by its own bind(0) while trackd is stopped for a restart;
 * below the range, only an explicit bind can take it.
 */
async function stablePort() {
    let low = 32768;
    try {
        low = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || low;
    } catch {
        /* not Linux: the usual default */
    }
    const from = Math.min(20000, low - 1000);
    for (let i = 0; i < 50; i++) {
        const port = from + Math.floor(Math.random() * (low - from));
        const free = await new Promise((resolve) => {
            const srv = net.createServer();
            srv.once('error', () => resolve(false));
            srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
        });
        if (free) return port;
    }
    return freePort();
}

/** The lines added to the generated server block (see the top of this file). */
function testLocations({ pagesDir, runDir }) {
    return `
        # ---- Added by tests/browser/lib/stack.mjs, for the tests only.
        location ^~ /t/ {
            alias ${pagesDir}/;
            add_header Cache-Control "no-store";
        }
        location ^~ /vendor/mixpanel-browser/ {
            alias ${MIXPANEL_DIST}/;
        }
`;
}

/**
 * nginx configured by scripts/gen-nginx.sh for one trackd worker (tests/blackbox/lib/nginx.mjs
 * starts it), with the test-only additions described at the top of this file.
 */
export async function startNginx({ upstreamPort, pagesDir, runDir }) {
    return startNginxFor({
        upstreamPort,
        workers: 1,
        port: await stablePort(),
        edit: (text) => text.replace(/(\n\s*server_name [^;]*;\n)/, `$1${testLocations({ pagesDir, runDir })}`),
        setup: (prefix) => fs.symlinkSync(runDir, path.join(prefix, 'demo')),
    });
}

/**
 * trackd + nginx. `trackdArgs`: extra trackd options; `dataDir`: use this one (else a fresh
 * temporary one). Returns {trackd, nginx, origin, dataDir, pagesDir, runDir, page(), stopTrackd(),
 * startTrackd(), stop(), kill()}.
 */
export async function startStack({ trackdArgs = [], dataDir } = {}) {
    // Both of trackd's ports are reused when a test restarts it.
    const workerPort = await stablePort();
    const args = ['--worker-listen', `127.0.0.1:${workerPort}`, '--trusted-proxy', '127.0.0.1/32', ...trackdArgs];
    let trackd = await startTrackd({ dataDir, args, port: await stablePort() });
    const pagesDir = tempDir('trackd-pages-');
    const runDir = tempDir('trackd-run-');
    fs.chmodSync(pagesDir, 0o755);
    fs.chmodSync(runDir, 0o755);
    let nginx;
    try {
        nginx = await startNginx({ upstreamPort: workerPort, pagesDir, runDir });
    } catch (e) {
        await trackd.kill();
        throw e;
    }
    const origin = `http://127.0.0.1:${nginx.port}`;
    const stack = {
        get trackd() {
            return trackd;
        },
        nginx,
        origin,
        dataDir: trackd.dataDir,
        pagesDir,
        runDir,
        /** Write a test page; returns its URL (on `host`, default 127.0.0.1). */
        page(name, html, host = '127.0.0.1') {
            fs.writeFileSync(path.join(pagesDir, name), html);
            return `http://${host}:${nginx.port}/t/${name}`;
        },
        /** Stop trackd (SIGTERM, clean exit required). */
        async stopTrackd() {
            await trackd.stop();
        },
        /** Start trackd again on the same port and data directory. */
        async startTrackd() {
            trackd = await startTrackd({ dataDir: stack.dataDir, port: trackd.port, args });
        },
        async stop() {
            await nginx.stop('SIGTERM'); // fast shutdown: nothing to drain in a test
            if (trackd.exited) return;
            await trackd.stop();
        },
        async kill() {
            await nginx.stop('SIGTERM');
            await trackd.kill();
        },
    };
    return stack;
}

/**
 * Debian's Chromium with a fresh profile in a temporary directory. Returns the persistent
 * context; close() ends the browser and removes the profile.
 */
export async function launchBrowser() {
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'trackd-chromium-'));
    const context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        args: [
            '--headless',
            '--no-sandbox',
            '--disable-gpu',
            '--disable-quic',
            '--no-first-run',
            '--disable-background-networking',
            '--disable-component-update',
            '--disable-sync',
        ],
    });
    const close = context.close.bind(context);
    context.close = async () => {
        try {
            await close();
        } finally {
            fs.rmSync(profile, { recursive: true, force: true });
        }
    };
    return context;
}

/** Poll `fn` (sync or async) until it returns a truthy value; throw `what` after `ms`. */
export async function waitFor(fn, { ms = slow(20000), every = 100, what = 'condition' } = {}) {
    const deadline = Date.now() + ms;
    let last;
    for (;;) {
        try {
            last = await fn();
            if (last) return last;
        } catch (e) {
            last = e;
        }
        if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
        await sleep(every);
    }
}

/** An HTML page that loads the library with the snippet and runs `script` after it. */
export function snippetPage(script, { title = 'trackd test page', libOrigin = '' } = {}) {
    let tag = snippetTag();
    if (libOrigin) tag = tag.replace(libInfo().path, libOrigin + libInfo().path);
    return `<!doctype html>
<html><head><meta charset="utf-8"><title>${title}</title><link rel="icon" href="data:,">
${tag}
<script>
${script}
</script>
</head><body><button id="b">button</button></body></html>
`;
}

/** Wait until the page's trackd library (not the snippet's stub) is loaded. */
export function libLoaded(page) {
    return page.waitForFunction(() => window.trackd && window.trackd.version, null, { timeout: slow(10000) });
}
