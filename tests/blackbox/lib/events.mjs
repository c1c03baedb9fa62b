// Building events the way clients send them, and finding them again in what trackctl cat prints.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';

export const TOKEN = 'bbtoken0123456789';

let counter = 0;

/** A fresh $insert_id: 16 base36-ish characters plus a counter, all in [A-Za-z0-9-]. */
export function insertId(prefix = '') {
    counter += 1;
    const rnd = crypto.randomBytes(8).toString('hex');
    return `${prefix}${rnd}-${counter.toString(36)}`.slice(0, 36);
}

/** Now in seconds with milliseconds (what the browser library sends). */
export function nowSeconds() {
    return Math.round(Date.now()) / 1000;
}

/** A valid /track event with a unique $insert_id; `props` are merged into its properties. */
export function trackEvent(props = {}, name = 'Signed up') {
    return {
        event: name,
        properties: {
            token: TOKEN,
            distinct_id: 'user-42',
            time: nowSeconds(),
            $insert_id: insertId(),
            plan: 'pro',
            ...props,
        },
    };
}

/** A valid /engage $set update for a unique distinct id. */
export function engageUpdate(extra = {}) {
    return {
        $token: TOKEN,
        $distinct_id: `person-${insertId()}`,
        $set: { $name: 'Ada', plan: 'pro', score: 7 },
        ...extra,
    };
}

/** A valid /groups $set update for a unique group id. */
export function groupUpdate(extra = {}) {
    return {
        $token: TOKEN,
        $group_key: 'company',
        $group_id: `acme-${insertId()}`,
        $set: { name: 'Acme', employees: 12 },
        ...extra,
    };
}

/** base64 of the JSON of `obj` (standard alphabet, padded). */
export function b64json(obj) {
    return Buffer.from(JSON.stringify(obj), 'utf8').toString('base64');
}

/** The stored event without trackd's "_trackd" metadata. */
export function stripMeta(rec) {
    const { _trackd, ...rest } = rec;
    return rest;
}

/** Records whose properties.$insert_id is `id`. */
export function byInsertId(records, id) {
    return records.filter((r) => r.properties && r.properties.$insert_id === id);
}

/** The one record holding `id` (fails if there are none or several). */
export function oneByInsertId(records, id) {
    const found = byInsertId(records, id);
    assert.equal(found.length, 1, `want exactly one record with $insert_id ${id}, found ${found.length}`);
    return found[0];
}

/** Records of a profile or group update, found by $distinct_id or $group_id. */
export function byProfileId(records, id) {
    return records.filter((r) => r.$distinct_id === id || r.$group_id === id);
}

/**
 * Check a stored record against what was sent: the event exactly (key order aside), plus the
 * expected metadata. `ip`: the ip property trackd had to add (properties.ip for events, $ip for
 * profile and group updates), or undefined when it must not have added one.
 */
export function assertStored(rec, sent, { endpoint, ip, sentAtMs, profile = false } = {}) {
    assert.ok(rec, 'record not found');
    assert.ok(rec._trackd && typeof rec._trackd === 'object', `record lacks _trackd metadata: ${JSON.stringify(rec)}`);
    const meta = rec._trackd;
    if (endpoint) assert.equal(meta.endpoint, endpoint, 'endpoint metadata');
    assert.equal(typeof meta.received_ms, 'number', 'received_ms is a number');
    if (sentAtMs !== undefined) {
        assert.ok(
            meta.received_ms >= sentAtMs - 2000 && meta.received_ms <= Date.now() + 2000,
            `received_ms ${meta.received_ms} not near the send time ${sentAtMs}`,
        );
    }
    for (const k of ['slot', 'segment', 'offset']) assert.equal(typeof meta[k], 'number', `_trackd.${k} is a number`);
    assert.equal(meta.pos, `${meta.slot}:${meta.segment}:${meta.offset}`, '_trackd.pos is slot:segment:offset');
    const want = structuredClone(sent);
    if (ip !== undefined) {
        if (profile) want.$ip = ip;
        else want.properties.ip = ip;
    }
    assert.deepStrictEqual(stripMeta(rec), want);
}
