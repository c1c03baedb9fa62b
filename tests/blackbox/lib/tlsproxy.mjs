// A TLS terminator in front of trackd, for clients that insist on HTTPS.
//
// The Node library refuses to send its API secret over plain HTTP, while trackd speaks plain
// HTTP behind a proxy (nginx in production). This stands in for that proxy: it accepts TLS on a
// loopback port with a throwaway self-signed certificate (made with the openssl command line)
// and pipes the decrypted bytes to trackd unchanged.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';

import { tempDir } from './trackd.mjs';

/** Null if openssl is usable, else why not. */
export function tlsUnavailable() {
    const r = spawnSync('openssl', ['version'], { encoding: 'utf8' });
    return r.status === 0 ? null : 'the openssl command is not installed';
}

/** Start a TLS proxy to 127.0.0.1:targetPort; resolves with {port, close()}. */
export async function startTlsProxy(targetPort) {
    const dir = tempDir('trackd-tls-');
    const key = path.join(dir, 'key.pem');
    const cert = path.join(dir, 'cert.pem');
    const r = spawnSync('openssl', [
        'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert,
        '-days', '1', '-subj', '/CN=127.0.0.1',
    ], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl req failed: ${r.stderr}`);
    const sockets = new Set();
    const server = tls.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) }, (client) => {
        const upstream = net.connect({ port: targetPort, host: '127.0.0.1' });
        sockets.add(client);
        sockets.add(upstream);
        const done = () => {
            client.destroy();
            upstream.destroy();
        };
        client.on('error', done);
        upstream.on('error', done);
        client.on('close', done);
        upstream.on('close', done);
        client.pipe(upstream);
        upstream.pipe(client);
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
        port: server.address().port,
        close: () =>
            new Promise((resolve) => {
                for (const s of sockets) s.destroy();
                server.close(() => resolve());
            }),
    };
}
