// A child process for tests/blackbox/overload.test.mjs: holds many slow connections to a server
// at once (a process may hold only so many descriptors, so the test spreads them over several
// of these). Run as
//   node slowclients.mjs '{"port":P,"count":N,"mode":"head"|"body","intervalMs":I,"maxMs":M}'
// mode "head": a request head that never ends, one byte every intervalMs (slowloris);
// mode "body": a whole head announcing a body, then the body one byte every intervalMs (slow POST).
// Prints one line "opened N" once every connection is up (or failed), then one JSON line with
// what happened to each connection: when it was closed (ms after its first byte) and the status
// the server answered with, if any.

import net from 'node:net';

const opts = JSON.parse(process.argv[2]);
const { port, count, mode, intervalMs, maxMs } = opts;
const HEAD = 'POST /track HTTP/1.1\r\nHost: slow\r\nContent-Type: application/x-www-form-urlencoded\r\n';
const SLOW_HEAD = `${HEAD}X-Slow: ${'a'.repeat(4096)}`;
const BODY_LEN = 4096;

const conns = [];
let connectErrors = 0;

function openOne() {
    return new Promise((resolve) => {
        const c = { sock: null, t0: 0, closedAt: 0, status: null, pos: 0, buf: '' };
        const s = net.connect({ port, host: '127.0.0.1' });
        c.sock = s;
        s.setNoDelay(true);
        s.on('connect', () => {
            c.t0 = performance.now();
            if (mode === 'body') s.write(`${HEAD}Content-Length: ${BODY_LEN}\r\n\r\n`);
            else s.write(SLOW_HEAD[c.pos++]);
            conns.push(c);
            resolve();
        });
        s.on('data', (d) => {
            if (c.status === null) {
                c.buf += d.toString('latin1');
                const m = /^HTTP\/1\.1 (\d{3})/.exec(c.buf);
                if (m) c.status = Number(m[1]);
            }
        });
        s.on('error', () => {
            if (!c.t0) {
                connectErrors++;
                resolve();
            }
        });
        // The server's FIN ('end') is when it gave up on us; 'close' catches a reset.
        const gone = () => {
            if (c.t0 && !c.closedAt) c.closedAt = performance.now();
        };
        s.on('end', gone);
        s.on('close', gone);
    });
}

// Connect in waves so the listen backlog is never the limit.
for (let done = 0; done < count; ) {
    const wave = Math.min(200, count - done);
    await Promise.all(Array.from({ length: wave }, openOne));
    done += wave;
}
process.stdout.write(`opened ${conns.length}\n`);

const started = performance.now();
const tick = setInterval(() => {
    let open = 0;
    for (const c of conns) {
        if (c.closedAt || c.sock.destroyed) continue;
        open++;
        // One more byte: never the end of the head (slowloris) or of the body (slow POST).
        if (mode === 'head' && c.pos < SLOW_HEAD.length) c.sock.write(SLOW_HEAD[c.pos++]);
        else if (mode === 'body' && c.pos < BODY_LEN - 1) {
            c.sock.write('d');
            c.pos++;
        }
    }
    if (open === 0 || performance.now() - started > maxMs) finish();
}, intervalMs);

function finish() {
    clearInterval(tick);
    const closeMs = [];
    const statuses = {};
    let stillOpen = 0;
    for (const c of conns) {
        if (c.closedAt) closeMs.push(c.closedAt - c.t0);
        else stillOpen++;
        const k = c.status === null ? 'none' : String(c.status);
        statuses[k] = (statuses[k] || 0) + 1;
        c.sock.destroy();
    }
    process.stdout.write(`${JSON.stringify({ opened: conns.length, connectErrors, stillOpen, closeMs, statuses })}\n`);
    process.exit(0);
}
