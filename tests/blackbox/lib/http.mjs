// A raw-socket HTTP/1.1 client for black-box tests.
//
// node's http module normalises what it sends and hides what it receives (it would refuse to
// send a bare LF or two Content-Length headers, and it merges 100 Continue into the response),
// so tests write exact bytes on a net.Socket and parse the answers themselves. RawConn keeps
// everything the server sent, returns responses one at a time in order (interim 1xx included),
// and tells when the server closed the connection.

import net from 'node:net';

const CRLF = '\r\n';

/**
 * Parse one response at the start of `buf`. Returns {response, used} or null when more bytes are
 * needed. `ended` says the server closed (a body without length then ends at the close).
 * `head`: the request was HEAD (no body whatever the headers say).
 */
export function parseResponse(buf, { ended = false, head = false } = {}) {
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return null;
    const headText = buf.subarray(0, end).toString('latin1');
    const lines = headText.split(CRLF);
    const m = /^HTTP\/(\d\.\d) (\d{3})(?: (.*))?$/.exec(lines[0]);
    if (!m) throw new Error(`not an HTTP status line: ${JSON.stringify(lines[0].slice(0, 200))}`);
    const status = Number(m[2]);
    const headers = {};
    const rawHeaders = [];
    for (const line of lines.slice(1)) {
        const i = line.indexOf(':');
        if (i <= 0) throw new Error(`bad response header line: ${JSON.stringify(line)}`);
        const name = line.slice(0, i).trim().toLowerCase();
        const value = line.slice(i + 1).trim();
        rawHeaders.push([name, value]);
        headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
    }
    let pos = end + 4;
    let body;
    if (head || (status >= 100 && status < 200) || status === 204 || status === 304) {
        body = Buffer.alloc(0);
    } else if (/\bchunked\b/i.test(headers['transfer-encoding'] || '')) {
        const parts = [];
        for (;;) {
            const le = buf.indexOf(CRLF, pos);
            if (le < 0) return null;
            const size = parseInt(buf.subarray(pos, le).toString('latin1').split(';')[0], 16);
            if (Number.isNaN(size)) throw new Error('bad chunk size in response');
            pos = le + 2;
            if (size === 0) {
                // trailers until an empty line
                for (;;) {
                    const te = buf.indexOf(CRLF, pos);
                    if (te < 0) return null;
                    const empty = te === pos;
                    pos = te + 2;
                    if (empty) break;
                }
                break;
            }
            if (buf.length < pos + size + 2) return null;
            parts.push(buf.subarray(pos, pos + size));
            pos += size + 2;
        }
        body = Buffer.concat(parts);
    } else if ('content-length' in headers) {
        const n = Number(headers['content-length']);
        if (buf.length < pos + n) return null;
        body = buf.subarray(pos, pos + n);
        pos += n;
    } else {
        if (!ended) return null;
        body = buf.subarray(pos);
        pos = buf.length;
    }
    const response = {
        httpVersion: m[1],
        status,
        reason: m[3] || '',
        headers,
        rawHeaders,
        body: Buffer.from(body),
        get text() {
            return this.body.toString('utf8');
        },
        json() {
            return JSON.parse(this.body.toString('utf8'));
        },
    };
    return { response, used: pos };
}

/** One client connection that writes exact bytes and reads responses in order. */
export class RawConn {
    constructor(socket) {
        this.socket = socket;
        this.buf = Buffer.alloc(0);
        this.ended = false; // server sent FIN or the socket closed
        this.closed = false;
        this.error = null;
        this._waiters = [];
        this._heads = []; // HEAD requests outstanding, in order (their responses have no body)
        socket.on('data', (d) => {
            this.buf = Buffer.concat([this.buf, d]);
            this._notify();
        });
        socket.on('end', () => {
            this.ended = true;
            this._notify();
        });
        socket.on('error', (e) => {
            this.error = e;
            this.ended = true;
            this._notify();
        });
        socket.on('close', () => {
            this.ended = true;
            this.closed = true;
            this._notify();
        });
    }

    /** Connect to 127.0.0.1:port (or opts.host), optionally from opts.localAddress. */
    static open(port, { host = '127.0.0.1', localAddress, timeout = 5000 } = {}) {
        return new Promise((resolve, reject) => {
            const s = net.connect({ port, host, localAddress });
            s.setNoDelay(true);
            const t = setTimeout(() => {
                s.destroy();
                reject(new Error(`connect to ${host}:${port} timed out`));
            }, timeout);
            s.once('connect', () => {
                clearTimeout(t);
                resolve(new RawConn(s));
            });
            s.once('error', (e) => {
                clearTimeout(t);
                reject(e);
            });
        });
    }

    _notify() {
        for (const w of this._waiters.splice(0)) w();
    }

    _wait(ms) {
        return new Promise((resolve) => {
            const t = setTimeout(resolve, ms);
            this._waiters.push(() => {
                clearTimeout(t);
                resolve();
            });
        });
    }

    /** Write bytes (string as latin1 unless a Buffer); resolves once handed to the kernel. */
    write(data) {
        const b = Buffer.isBuffer(data) ? data : Buffer.from(data, 'latin1');
        return new Promise((resolve, reject) => {
            if (this.socket.destroyed) return reject(new Error('write on a closed connection'));
            this.socket.write(b, (err) => (err ? reject(err) : resolve()));
        });
    }

    /** Note that a HEAD request was sent (its response will carry no body). */
    expectHead() {
        this._heads.push(true);
    }

    /**
     * The next response, waiting up to `timeout` ms. Throws on timeout, or if the server closed
     * before a whole response arrived (message says what was received).
     */
    async response({ timeout = 10000 } = {}) {
        const deadline = Date.now() + timeout;
        for (;;) {
            const head = this._heads.length > 0;
            const r = parseResponse(this.buf, { ended: this.ended, head });
            if (r) {
                this.buf = this.buf.subarray(r.used);
                if (head && r.response.status >= 200) this._heads.shift();
                return r.response;
            }
            if (this.ended) {
                throw new Error(
                    `connection closed before a whole response (${this.error ? this.error.code + ', ' : ''}` +
                        `got ${JSON.stringify(this.buf.toString('latin1').slice(0, 300))})`,
                );
            }
            const left = deadline - Date.now();
            if (left <= 0) {
                throw new Error(
                    `no whole response within ${timeout} ms (got ${JSON.stringify(this.buf.toString('latin1').slice(0, 300))})`,
                );
            }
            await this._wait(left);
        }
    }

    /** Resolves true once the server has closed (FIN/RST), false after `timeout` ms. */
    async waitClosed(timeout = 5000) {
        const deadline = Date.now() + timeout;
        while (!this.ended) {
            const left = deadline - Date.now();
            if (left <= 0) return false;
            await this._wait(left);
        }
        return true;
    }

    /** Bytes received and not yet consumed by response(). */
    pending() {
        return this.buf;
    }

    close() {
        this.socket.destroy();
    }
}

/**
 * Build request bytes. `headers` is an object or an array of [name, value] (order kept; use the
 * array form for duplicates). Adds Host, and Content-Length for a body unless `rawLength` or a
 * Transfer-Encoding/Content-Length header is given.
 */
export function buildRequest({ method = 'GET', path = '/', headers = {}, body, host = '127.0.0.1', version = '1.1' }) {
    const list = Array.isArray(headers) ? headers.slice() : Object.entries(headers);
    const has = (n) => list.some(([k]) => k.toLowerCase() === n);
    if (!has('host')) list.unshift(['Host', host]);
    let b = body === undefined || body === null ? null : Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
    if (b && !has('content-length') && !has('transfer-encoding')) list.push(['Content-Length', String(b.length)]);
    const head = `${method} ${path} HTTP/${version}\r\n` + list.map(([k, v]) => `${k}: ${v}\r\n`).join('') + '\r\n';
    return b ? Buffer.concat([Buffer.from(head, 'latin1'), b]) : Buffer.from(head, 'latin1');
}

/**
 * One request on a new connection; resolves with the (final) response. Options: method, path,
 * headers, body, timeout, localAddress, host. Interim 1xx responses are skipped.
 */
export async function request(port, opts = {}) {
    const { timeout = 10000, localAddress, host = '127.0.0.1' } = opts;
    const c = await RawConn.open(port, { host, localAddress, timeout });
    try {
        if ((opts.method || 'GET') === 'HEAD') c.expectHead();
        const hostHeader = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
        await c.write(buildRequest({ ...opts, host: hostHeader }));
        for (;;) {
            const r = await c.response({ timeout });
            if (r.status >= 200) return r;
        }
    } finally {
        c.close();
    }
}
