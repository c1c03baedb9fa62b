// The alerting rules (conf/prometheus-alerts.yml) are valid Prometheus rules, fire in their
// promtool unit tests (tests/prometheus/alerts.test.yml), and only use series a real trackd
// worker exports: a renamed metric would otherwise leave an alert silently watching nothing.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';

import { request } from './lib/http.mjs';
import { REPO_ROOT, freePort, startTrackd } from './lib/trackd.mjs';

const RULES = path.join(REPO_ROOT, 'conf', 'prometheus-alerts.yml');
const RULE_TESTS = path.join(REPO_ROOT, 'tests', 'prometheus', 'alerts.test.yml');
const PROMTOOL = spawnSync('sh', ['-c', 'command -v promtool'], { encoding: 'utf8' }).stdout.trim();

describe('prometheus alerting rules', () => {
    it('promtool check rules accepts them', { skip: !PROMTOOL && 'promtool not installed (scripts/deps.sh test installs prometheus)' }, () => {
        const r = spawnSync(PROMTOOL, ['check', 'rules', RULES], { encoding: 'utf8' });
        assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
        assert.match(r.stdout, /SUCCESS: \d+ rules found/);
    });

    it('promtool test rules: each alert fires when it should and not before', { skip: !PROMTOOL && 'promtool not installed' }, () => {
        const r = spawnSync(PROMTOOL, ['test', 'rules', RULE_TESTS], { encoding: 'utf8' });
        assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    });

    it('every series the rules use is exported by a worker, with a worker label', async () => {
        const port = await freePort();
        const wport = await freePort();
        const srv = await startTrackd({ port, args: ['--worker-listen', `127.0.0.1:${wport}`] });
        try {
            const r = await request(wport, { path: '/metrics' });
            assert.equal(r.status, 200);
            const exported = new Set();
            for (const line of r.text.split('\n')) {
                const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{worker="1"/.exec(line);
                if (m) exported.add(m[1]);
            }
            const rules = fs.readFileSync(RULES, 'utf8').split('\n').filter((l) => !/^\s*#/.test(l)).join('\n');
            const used = new Set(
                [...rules.matchAll(/\b((?:trackd|process)_[a-z0-9_]+)\b/g)].map((m) => m[1]).filter((n) => n !== 'trackd_' ),
            );
            assert.ok(used.size >= 10, `rules use ${[...used]}`);
            for (const name of used) assert.ok(exported.has(name), `the rules use ${name}, which /metrics does not export`);
        } finally {
            await srv.stop();
        }
    });
});
