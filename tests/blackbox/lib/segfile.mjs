// Writing event-log segment files directly, for black-box tests of trackctl that need data
// directories trackd would not produce on demand (damage, torn tails, many slots, clock steps).
//
// This is a second, independent implementation of the on-disk format, written from
// include/trackd/segment.h (docs/log-format.md), not from src/segment.c: if the two ever disagree,
// trackctl's tests fail instead of both sides agreeing on a private variant.

import fs from 'node:fs';
import path from 'node:path';

export const HEADER_SIZE = 40;
export const RECORD_HEADER_SIZE = 20;
export const ENDPOINTS = { track: 1, engage: 2, groups: 3, import: 4 };

const CRC_TABLE = (() => {
    const t = new Uint32Array(256);
    for (let i = 0; i < 256; i++) {
        let c = i;
        for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
        t[i] = c >>> 0;
    }
    return t;
})();

/** CRC32C (Castagnoli) of the buffers, one after the other. */
export function crc32c(...bufs) {
    let c = 0xffffffff;
    for (const b of bufs) for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
}

/** "w001" */
export function slotName(slot) {
    return `w${String(slot).padStart(3, '0')}`;
}

/** "00000000000000000003.seg" */
export function segmentName(seq) {
    return `${String(seq).padStart(20, '0')}.seg`;
}

export function segmentPath(dataDir, slot, seq) {
    return path.join(dataDir, slotName(slot), segmentName(seq));
}

/** The 40-byte segment header. */
export function segmentHeader(slot, seq, createdMs = Date.now()) {
    const b = Buffer.alloc(HEADER_SIZE);
    b.write('TRKDLOG\0', 0, 'latin1');
    b.writeUInt32LE(1, 8);
    b.writeUInt32LE(slot, 12);
    b.writeBigUInt64LE(BigInt(seq), 16);
    b.writeBigUInt64LE(BigInt(createdMs), 24);
    b.writeUInt32LE(crc32c(b.subarray(0, 36)), 36);
    return b;
}

/** One record: `event` (object or JSON text) received at `timeMs` on `endpoint`. */
export function record(event, timeMs, endpoint = 'track') {
    const payload = Buffer.from(typeof event === 'string' ? event : JSON.stringify(event), 'utf8');
    const h = Buffer.alloc(RECORD_HEADER_SIZE);
    h.writeUInt32LE(payload.length, 0);
    h.writeBigUInt64LE(BigInt(timeMs), 8);
    h[16] = ENDPOINTS[endpoint];
    h.writeUInt32LE(crc32c(h.subarray(0, 4), h.subarray(8, 20), payload), 4);
    return Buffer.concat([h, payload]);
}

/**
 * Write segment `seq` of `slot` holding `records` ([{event, time, endpoint}]); the slot
 * directory is created. Returns {path, offsets} (the byte offset of each record).
 */
export function writeSegment(dataDir, slot, seq, records = [], { createdMs } = {}) {
    fs.mkdirSync(path.join(dataDir, slotName(slot)), { recursive: true });
    const parts = [segmentHeader(slot, seq, createdMs)];
    const offsets = [];
    let off = HEADER_SIZE;
    for (const r of records) {
        const b = record(r.event, r.time, r.endpoint);
        offsets.push(off);
        off += b.length;
        parts.push(b);
    }
    const p = segmentPath(dataDir, slot, seq);
    fs.writeFileSync(p, Buffer.concat(parts));
    return { path: p, offsets };
}

/** Append records to an existing segment; returns their offsets. */
export function appendRecords(file, records) {
    let off = fs.statSync(file).size;
    const offsets = [];
    for (const r of records) {
        const b = record(r.event, r.time, r.endpoint);
        fs.appendFileSync(file, b);
        offsets.push(off);
        off += b.length;
    }
    return offsets;
}

/** XOR one byte of a file. */
export function flipByte(file, offset) {
    const fd = fs.openSync(file, 'r+');
    try {
        const b = Buffer.alloc(1);
        fs.readSync(fd, b, 0, 1, offset);
        b[0] ^= 0x5a;
        fs.writeSync(fd, b, 0, 1, offset);
    } finally {
        fs.closeSync(fd);
    }
}
