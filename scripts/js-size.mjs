#!/usr/bin/env node
// Measure the browser library as it ships: web/dist/trackd-<VERSION>.min.js, gzipped at level 9
// (what nginx's gzip_static or a CDN would serve at best). Fails (exit 1) above the budget the
// issue sets: 4096 bytes. The loader snippet's size is printed too, since every page inlines it.
//   node scripts/js-size.mjs [--budget BYTES]
// Run `node web/build.mjs` first after changing web/trackd.js (tests/browser check it is current).

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DEFAULT_BUDGET = 4096;

const i = process.argv.indexOf('--budget');
const budget = i > 0 ? Number(process.argv[i + 1]) : DEFAULT_BUDGET;
if (!(budget > 0)) {
    console.error('usage: js-size.mjs [--budget BYTES]');
    process.exit(2);
}

const src = fs.readFileSync(path.join(ROOT, 'web', 'trackd.js'), 'utf8');
const m = /\bvar VERSION = '(\d+\.\d+\.\d+)';/.exec(src);
if (!m) {
    console.error('js-size: no VERSION in web/trackd.js');
    process.exit(2);
}
const lib = path.join(ROOT, 'web', 'dist', `trackd-${m[1]}.min.js`);
if (!fs.existsSync(lib)) {
    console.error(`js-size: ${path.relative(ROOT, lib)} is missing: run node web/build.mjs`);
    process.exit(2);
}

function sizes(file) {
    const raw = fs.readFileSync(file);
    return { raw: raw.length, gz: zlib.gzipSync(raw, { level: 9 }).length };
}

const l = sizes(lib);
const s = sizes(path.join(ROOT, 'web', 'dist', 'snippet.html'));
console.log(`${path.relative(ROOT, lib)}: ${l.raw} bytes minified, ${l.gz} bytes gzipped (budget ${budget})`);
console.log(`web/dist/snippet.html: ${s.raw} bytes, ${s.gz} bytes gzipped`);
if (l.gz > budget) {
    console.error(`js-size: FAIL: ${l.gz} bytes gzipped is over the ${budget}-byte budget`);
    process.exit(1);
}
