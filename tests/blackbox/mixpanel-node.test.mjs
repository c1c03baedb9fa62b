// The official `mixpanel` Node library, unchanged, pointed at trackd: every call it makes must
// succeed from the library's point of view and land in the log as sent. The whole suite runs
// twice: against trackd directly, and through nginx configured by scripts/gen-nginx.sh.

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, before, describe, it } from 'node:test';

import { TOKEN, byInsertId, byProfileId, insertId, oneByInsertId } from './lib/events.mjs';
import { freePorts, nginxUnavailable, startNginx } from './lib/nginx.mjs';
import { startTlsProxy, tlsUnavailable } from './lib/tlsproxy.mjs';
import { assertVerifies, readRecords, startTrackd } from './lib/trackd.mjs';

const require = createRequire(import.meta.url);
const Mixpanel = require('mixpanel');
const LIB_VERSION = require('mixpanel/package.json').version;

const SECRET = 'bb-node-import-secret';

let srv;
let ngx;
let port; /* where the library sends: trackd's port, or nginx's */
const logged = [];
const logger = Object.fromEntries(['trace', 'debug', 'info', 'warn', 'error'].map((l) => [l, (...a) => logged.push([l, a])]));

let workersAtStart;

async function start(via) {
    const workerPort = await freePorts(1);
    srv = await startTrackd({
        args: ['--token', TOKEN, '--import-secret', SECRET, '--worker-listen', `127.0.0.1:${workerPort}`, '--trusted-proxy', '127.0.0.1/32'],
    });
    workersAtStart = srv.workerPids();
    port = srv.port;
    if (via === 'nginx') {
        ngx = await startNginx({ upstreamPort: workerPort, workers: 1 });
        port = ngx.port;
    }
}

async function stop() {
    if (ngx) await ngx.stop();
    ngx = undefined;
    if (!srv) return;
    await srv.stop();
    assertVerifies(srv.dataDir);
    srv = undefined;
}

function client(extra = {}) {
    return Mixpanel.init(TOKEN, { host: `127.0.0.1:${port}`, protocol: 'http', keepAlive: false, logger, ...extra });
}

/** Call obj[name](...args, cb) (the library's callback style); resolves with cb's error argument. */
function call(obj, name, ...args) {
    return new Promise((resolve) => obj[name](...args, (err) => resolve(err)));
}

function records() {
    return readRecords(srv.dataDir);
}

/**
 * The library's verdict on an /import call must be success. It sends the legacy shape (form
 * `data=<base64>`, verbose=0|1 in the query) and accepts only the body `1` (or verbose JSON with
 * status 1), so trackd answers /import in that shape like /track (docs/http.md, "Compatibility").
 */
function assertImportAccepted(err) {
    const list = err ? (Array.isArray(err) ? err : [err]) : [];
    assert.deepStrictEqual(list.map((e) => String(e && e.message)), [], 'import reported an error to the application');
}

for (const via of ['direct', 'nginx']) describe(`mixpanel node library (${via})`, { skip: (via === 'nginx' && nginxUnavailable()) || false }, () => {
    before(() => start(via));
    after(stop);

    it('track() lands with the library properties', async () => {
        const id = insertId();
        const t = Date.now() - 5000;
        const err = await call(client(), 'track', 'Signed up', { distinct_id: 'node-1', $insert_id: id, plan: 'pro', time: new Date(t) });
        assert.ifError(err);
        const rec = oneByInsertId(records(), id);
        assert.equal(rec._trackd.endpoint, 'track');
        assert.equal(rec.event, 'Signed up');
        assert.deepStrictEqual(
            { ...rec.properties },
            { distinct_id: 'node-1', $insert_id: id, plan: 'pro', time: t, token: TOKEN, mp_lib: 'node', $lib_version: LIB_VERSION },
        );
    });

    it('track() with verbose and geolocate (ip=1)', async () => {
        const id = insertId();
        const err = await call(client({ verbose: true, geolocate: true }), 'track', 'Viewed', { distinct_id: 'node-2', $insert_id: id });
        assert.ifError(err);
        const rec = oneByInsertId(records(), id);
        assert.equal(rec.properties.ip, '127.0.0.1');
    });

    it('track_batch() sends 120 events in POSTs of 50 (unescaped base64) and all land', async () => {
        const evs = Array.from({ length: 120 }, (_, i) => ({
            event: 'Batch', properties: { distinct_id: `b-${i}`, $insert_id: insertId(), i, note: '>>>???+/=' },
        }));
        const sent = structuredClone(evs);
        const err = await call(client(), 'track_batch', evs);
        assert.ifError(err);
        const recs = records();
        for (const ev of sent) {
            const rec = oneByInsertId(recs, ev.properties.$insert_id);
            assert.equal(rec.properties.i, ev.properties.i);
            assert.equal(rec.properties.note, '>>>???+/=');
            assert.equal(rec.properties.token, TOKEN);
        }
    });

    it('people.set / set_once / increment / append / union / unset / delete_user land on /engage', async () => {
        const mp = client();
        const who = `person-${insertId()}`;
        assert.ifError(await call(mp.people, 'set', who, { plan: 'pro', $name: 'Ada', ip: '198.51.100.20' }));
        assert.ifError(await call(mp.people, 'set_once', who, 'first_seen', 'today'));
        assert.ifError(await call(mp.people, 'increment', who, 'logins', 2));
        assert.ifError(await call(mp.people, 'append', who, 'pages', '/home'));
        assert.ifError(await call(mp.people, 'union', who, { tags: ['a', 'b'] }));
        assert.ifError(await call(mp.people, 'unset', who, 'old'));
        assert.ifError(await call(mp.people, 'delete_user', who));
        const recs = byProfileId(records(), who);
        assert.equal(recs.length, 7, `7 updates stored for ${who}, got ${recs.length}`);
        for (const r of recs) {
            assert.equal(r._trackd.endpoint, 'engage');
            assert.equal(r.$token, TOKEN);
        }
        const set = recs.find((r) => r.$set);
        assert.deepStrictEqual(set.$set, { plan: 'pro', $name: 'Ada' });
        assert.equal(set.$ip, '198.51.100.20');
        assert.ok(recs.find((r) => r.$set_once && r.$set_once.first_seen === 'today'));
        assert.ok(recs.find((r) => r.$add && r.$add.logins === 2));
        assert.ok(recs.find((r) => r.$append && r.$append.pages === '/home'));
        assert.ok(recs.find((r) => r.$union && r.$union.tags));
        assert.ok(recs.find((r) => r.$unset));
        assert.ok(recs.find((r) => '$delete' in r));
    });

    it('groups.set / set_once / delete_group land on /groups', async () => {
        const mp = client();
        const gid = `acme-${insertId()}`;
        assert.ifError(await call(mp.groups, 'set', 'company', gid, { name: 'Acme', size: 12 }));
        assert.ifError(await call(mp.groups, 'set_once', 'company', gid, 'founded', 1999));
        assert.ifError(await call(mp.groups, 'delete_group', 'company', gid));
        const recs = byProfileId(records(), gid);
        assert.equal(recs.length, 3);
        for (const r of recs) {
            assert.equal(r._trackd.endpoint, 'groups');
            assert.equal(r.$group_key, 'company');
            assert.equal(r.$token, TOKEN);
        }
        assert.deepStrictEqual(recs.find((r) => r.$set).$set, { name: 'Acme', size: 12 });
    });

    it('import() and import_batch() with the api key (api_key=) land on /import', async () => {
        const mp = client({ key: SECRET });
        const id = insertId();
        const t = Date.now() - 10 * 86400 * 1000;
        assertImportAccepted(await call(mp, 'import', 'Old event', new Date(t), { distinct_id: 'imp-1', $insert_id: id }));
        const batch = Array.from({ length: 60 }, (_, i) => ({
            event: 'Old batch',
            properties: { time: new Date(t + i * 1000), distinct_id: `imp-b-${i}`, $insert_id: insertId() },
        }));
        const ids = batch.map((e) => e.properties.$insert_id);
        assertImportAccepted(await call(mp, 'import_batch', batch));
        const recs = records();
        const rec = oneByInsertId(recs, id);
        assert.equal(rec._trackd.endpoint, 'import');
        assert.equal(rec.properties.time, t);
        for (const bid of ids) assert.equal(oneByInsertId(recs, bid)._trackd.endpoint, 'import');
    });

    it('import() in verbose mode is a success too (status 1 in the JSON answer)', async () => {
        const mp = client({ key: SECRET, verbose: true });
        const id = insertId();
        assertImportAccepted(await call(mp, 'import', 'Verbose import', new Date(Date.now() - 86400000), { distinct_id: 'imp-v', $insert_id: id }));
        assert.equal(oneByInsertId(records(), id)._trackd.endpoint, 'import');
    });

    it('an import the server refuses (a record without $insert_id) is still reported as an error', async () => {
        const mp = client({ key: SECRET });
        const err = await call(mp, 'import', 'No id', new Date(Date.now() - 86400000), { distinct_id: 'imp-x' });
        assert.ok(err, 'the library sees the failure: no record was stored');
        assert.match(String(err.message), /Mixpanel Server Error: 0/);
    });

    it('import_batch() with the API secret (Basic auth, over a TLS proxy) lands on /import', async (t) => {
        const why = tlsUnavailable();
        if (why) {
            t.skip(why);
            return;
        }
        const proxy = await startTlsProxy(port);
        const before = process.env.NODE_TLS_REJECT_UNAUTHORIZED;
        // The proxy's certificate is self-signed: let this process's TLS clients accept it.
        process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
        try {
            const mp = Mixpanel.init(TOKEN, { host: `127.0.0.1:${proxy.port}`, protocol: 'https', secret: SECRET, keepAlive: false, logger });
            const batch = Array.from({ length: 3 }, (_, i) => ({
                event: 'Secret import', properties: { time: Date.now() - 3600000, distinct_id: `s-${i}`, $insert_id: insertId() },
            }));
            const ids = batch.map((e) => e.properties.$insert_id);
            assertImportAccepted(await call(mp, 'import_batch', batch));
            const recs = records();
            for (const id of ids) assert.equal(oneByInsertId(recs, id)._trackd.endpoint, 'import');

            const wrong = Mixpanel.init(TOKEN, { host: `127.0.0.1:${proxy.port}`, protocol: 'https', secret: 'wrong', keepAlive: false, logger });
            const badId = insertId();
            const err = await call(wrong, 'import_batch', [{ event: 'x', properties: { time: Date.now(), distinct_id: 'z', $insert_id: badId } }]);
            assert.ok(err, 'a wrong secret is reported as an error to the library');
            assert.equal(byInsertId(records(), badId).length, 0);
        } finally {
            if (before === undefined) delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
            else process.env.NODE_TLS_REJECT_UNAUTHORIZED = before;
            await proxy.close();
        }
    });

    it('a token not on the allow-list is reported as an error and not stored', async () => {
        const mp = Mixpanel.init('some-other-token', { host: `127.0.0.1:${port}`, protocol: 'http', keepAlive: false, logger });
        const id = insertId();
        const err = await call(mp, 'track', 'Nope', { distinct_id: 'x', $insert_id: id });
        assert.ok(err, 'the library sees a failure');
        assert.equal(byInsertId(records(), id).length, 0);
    });

    it('the worker is still the one that started (no crash)', () => {
        assert.deepStrictEqual(srv.workerPids(), workersAtStart);
    });
});
