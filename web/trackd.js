/*
 * trackd.js: the browser library the loader snippet (web/snippet.js) fetches. It speaks Mixpanel's
 * wire format (POST form body `data=<JSON>` to /track/ and /engage/ with verbose=1), so trackd
 * handles it exactly like the official clients, and it never loses an event the page tracked:
 *
 * - Every event goes first into a queue in localStorage (one per endpoint), and leaves it only
 *   when the server answered 200 for the request that carried it. A page that closes, crashes or
 *   loses its network keeps its queue; the next page load on the same origin sends it.
 * - 429, 408, 5xx and network errors retry the same batch with exponential backoff and jitter,
 *   or after the server's Retry-After. 413 (too large) and 400 (malformed) halve the batch, so
 *   that one bad event cannot take 49 good ones down with it; a single event refused so, or a
 *   batch refused with any other 4xx (an unknown token), can never succeed: it is dropped with a
 *   console warning rather than blocking the queue forever (docs/snippet.md).
 * - On pagehide the queue goes out with navigator.sendBeacon, within the browser's 64 KiB budget
 *   for such requests. A beacon's answer is never seen, so those events stay queued and are sent
 *   again on the next page load: the server sees them twice, with the same $insert_id, which is
 *   how duplicates are identified downstream.
 *
 * Plain modern JS, no build step at run time; web/build.mjs minifies it into
 * web/dist/trackd-<VERSION>.min.js, which nginx serves with long-lived caching.
 */
(function (w) {
    'use strict';

    var VERSION = '1.0.0';
    var ENDPOINTS = ['track', 'engage'];
    /* Chromium and Firefox refuse keepalive requests (beacons) beyond 64 KiB in flight per page;
     * stay a little under it for requests the page itself may have in flight. */
    var BEACON_BUDGET = 60000;
    var DEFAULTS = {
        api_host: '',
        batch_size: 50, // events per request (trackd accepts up to 2000)
        flush_interval_ms: 5000, // a partial batch waits at most this long
        retry_base_ms: 1000, // first retry delay; doubles with each failure
        retry_max_ms: 60000, // backoff ceiling
        timeout_ms: 30000, // a request without an answer by then counts as a network error
        ip: true, // ask the server to record the client address (Mixpanel's ip=1)
        track_pageview: false, // track a page view right after init
        persistence_prefix: 'trackd_',
    };

    var cfg = null; // set by init()
    var deferred = []; // calls made before init(), run by it in order
    var mem = {}; // storage keys whose localStorage write failed: kept here instead
    var state = {}; // per endpoint: {busy, timer, fails, limit}
    var store;
    try {
        store = w.localStorage;
        store.setItem('trackd_probe', '1');
        store.removeItem('trackd_probe');
    } catch (e) {
        store = null; // disabled storage (some private modes): the queue lives in memory only
    }

    function warn(msg, detail) {
        if (w.console) console.warn('trackd: ' + msg, detail === undefined ? '' : detail);
    }

    /* 20 characters of [a-z0-9] from the CSPRNG (about 103 bits). */
    function randomId() {
        var b = crypto.getRandomValues(new Uint8Array(20));
        var s = '';
        for (var i = 0; i < b.length; i++) s += (b[i] % 36).toString(36);
        return s;
    }

    function key(name) {
        return cfg.persistence_prefix + cfg.token + '_' + name;
    }

    function load(name) {
        var k = key(name);
        if (k in mem) return mem[k];
        try {
            var v = store && store.getItem(k);
            return v === null || v === undefined ? undefined : JSON.parse(v);
        } catch (e) {
            return undefined;
        }
    }

    /* Persist `value`; when localStorage refuses (quota, disabled), keep it in memory for the
     * life of the page rather than losing it. */
    function save(name, value) {
        var k = key(name);
        try {
            if (!store) throw 0;
            if (value === undefined) store.removeItem(k);
            else store.setItem(k, JSON.stringify(value));
            delete mem[k];
        } catch (e) {
            mem[k] = value;
        }
    }

    /* Copy src's own properties onto dst; anything but an object (a string...) adds nothing. */
    function assign(dst, src) {
        if (typeof src == 'object') for (var k in src) if (Object.prototype.hasOwnProperty.call(src, k)) dst[k] = src[k];
        return dst;
    }

    function deviceId() {
        var id = load('device');
        if (!id) save('device', (id = randomId()));
        return id;
    }

    function distinctId() {
        return load('user') || '$device:' + deviceId();
    }

    /* The queue is re-read from storage on every change, so that two tabs of one site that share
     * it lose none of each other's events (at worst both send an event: same $insert_id). */
    function enqueue(ep, item) {
        var q = load('q_' + ep) || [];
        // A copy, as JSON will carry it: later changes by the page do not leak in, and a lone
        // UTF-16 surrogate (a string cut inside an emoji) becomes U+FFFD, since the server
        // rejects the whole request for it.
        item = JSON.parse(JSON.stringify(item, function (k, v) {
            return typeof v == 'string' && v.toWellFormed ? v.toWellFormed() : v;
        }));
        q.push([randomId(), item]); // the entry's own id: acknowledgements remove by it
        save('q_' + ep, q);
        var s = state[ep];
        if (q.length >= s.limit && !s.fails) flush(ep);
        else if (!s.timer) schedule(ep, cfg.flush_interval_ms);
    }

    function schedule(ep, ms) {
        var s = state[ep];
        clearTimeout(s.timer);
        s.timer = setTimeout(function () {
            s.timer = 0;
            flush(ep);
        }, ms);
    }

    function url(ep) {
        return cfg.api_host + '/' + ep + '/?verbose=1' + (cfg.ip ? '&ip=1' : '');
    }

    /* The form body: JSON escaped with encodeURIComponent (a space is %20 and a plus %2B, which
     * no form decoder can misread), an ASCII string whose length is its size in bytes. */
    function body(items) {
        return 'data=' + encodeURIComponent(JSON.stringify(items.map(function (e) { return e[1]; })));
    }

    /* Drop the entries whose ids are in `ids` from the stored queue. */
    function remove(ep, ids) {
        var gone = {};
        ids.forEach(function (id) { gone[id] = 1; });
        save('q_' + ep, (load('q_' + ep) || []).filter(function (e) { return !gone[e[0]]; }));
    }

    /* Retry-After (seconds or an HTTP date) when the server gave one, plus up to 10% so that
     * the pages it turned away do not all come back in the same instant; else exponential
     * backoff with jitter (half to all of the doubled delay). */
    function retryDelay(s, retryAfter) {
        if (retryAfter) {
            var ms = isNaN(retryAfter) ? Date.parse(retryAfter) - Date.now() : retryAfter * 1000;
            if (ms >= 0) return ms * (1 + Math.random() / 10);
        }
        var d = Math.min(cfg.retry_max_ms, cfg.retry_base_ms * Math.pow(2, s.fails - 1));
        return d / 2 + (Math.random() * d) / 2;
    }

    /* Send the oldest batch of endpoint `ep`, one request at a time per endpoint. */
    function flush(ep) {
        var s = state[ep];
        if (s.busy) return;
        clearTimeout(s.timer);
        s.timer = 0;
        var q = load('q_' + ep) || [];
        if (!q.length) return;
        var batch = q.slice(0, s.limit);
        var ids = batch.map(function (e) { return e[0]; });
        s.busy = 1;
        fetch(url(ep), {
            method: 'POST',
            // A form content type and no other header: a CORS "simple" request, no preflight.
            headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
            body: body(batch),
            signal: AbortSignal.timeout && AbortSignal.timeout(cfg.timeout_ms),
        })
            .then(function (r) {
                return r.text().then(function (text) {
                    return [r.status, r.headers.get('Retry-After'), text];
                });
            }, function () {
                return [0];
            })
            .then(function (res) {
                var status = res[0];
                var text = res[2];
                s.busy = 0;
                // trackd's answer, not just any 200: a captive portal's page must not count.
                if (status == 200 && /^[01]$|"status": *[01]/.test(text)) {
                    remove(ep, ids);
                    s.fails = 0;
                    if (/^0$|"status": *0/.test(text)) warn('the server found no valid record in a batch', text);
                } else if ((status == 413 || status == 400) && batch.length > 1) {
                    s.limit = Math.ceil(batch.length / 2);
                } else if (status >= 400 && status < 500 && status != 408 && status != 429) {
                    // It can never succeed: keeping it would block every event behind it.
                    remove(ep, ids);
                    s.limit = cfg.batch_size;
                    warn('dropped ' + batch.length + ' record(s) the server refused with ' + status, text);
                } else {
                    s.fails++;
                    return schedule(ep, retryDelay(s, res[1]));
                }
                var left = (load('q_' + ep) || []).length;
                if (left >= s.limit || (left && status != 200)) flush(ep);
                else if (left) schedule(ep, cfg.flush_interval_ms);
            });
    }

    /* pagehide: send what is queued with sendBeacon, which the browser delivers after the page is
     * gone. The entries stay in the queue (a beacon's answer is never seen) and go again, as
     * duplicates with the same $insert_id, on the next page load. */
    function beacon() {
        if (!cfg || !navigator.sendBeacon) return;
        var budget = BEACON_BUDGET;
        ENDPOINTS.forEach(function (ep) {
            var q = load('q_' + ep) || [];
            var lim = state[ep].limit;
            for (var i = 0; i < q.length && budget > 0; ) {
                // The largest prefix of the next `lim` entries that fits the remaining budget; an
                // entry alone larger than that is skipped and left to the next page load.
                var n = Math.min(lim, q.length - i), b;
                while (n > 0 && (b = body(q.slice(i, i + n))).length > budget) n >>= 1;
                if (!n) {
                    i++;
                    continue;
                }
                if (!navigator.sendBeacon(url(ep), b)) return;
                budget -= b.length;
                i += n;
            }
        });
    }

    var api = {
        /* init(token, options): options as DEFAULTS above; once per page. Runs the calls made
         * before it. */
        init: function (token, opts) {
            cfg = assign(assign({}, DEFAULTS), opts);
            cfg.token = token;
            cfg.api_host = cfg.api_host.replace(/\/+$/, '');
            ENDPOINTS.forEach(function (ep) {
                clearTimeout((state[ep] || {}).timer);
                state[ep] = { busy: 0, timer: 0, fails: 0, limit: cfg.batch_size };
            });
            deferred.splice(0).forEach(function (c) { call(c[0], c[1]); });
            if (cfg.track_pageview) api.track_pageview();
            // What earlier page loads left unacknowledged goes first.
            ENDPOINTS.forEach(function (ep) { if (load('q_' + ep)) schedule(ep, 0); });
        },

        /* track(event, props): props override the automatic properties (time, distinct_id,
         * $insert_id, ...) and the registered ones; the token always comes from init(). */
        track: function (event, props) {
            var user = load('user');
            var p = {
                time: Date.now() / 1000,
                distinct_id: distinctId(),
                $device_id: deviceId(),
                $insert_id: randomId(),
                $lib: 'trackd-js',
                $lib_version: VERSION,
                $current_url: location.href,
            };
            if (user) p.$user_id = user;
            if (document.referrer) p.$referrer = document.referrer;
            assign(assign(p, load('props')), props);
            p.token = cfg.token;
            enqueue('track', { event: String(event), properties: p });
        },

        track_pageview: function (props) {
            api.track('$mp_web_page_view', assign({ current_page_title: document.title }, props));
        },

        /* identify(id): later events carry distinct_id `id`. Coming from the anonymous id, an
         * $identify event links the two; from another user (no reset() in between), nothing. */
        identify: function (id) {
            var prev = distinctId();
            id = String(id);
            if (id === prev) return;
            save('user', id);
            if (!prev.indexOf('$device:')) api.track('$identify', { $anon_distinct_id: prev });
        },

        /* register(props): properties added to every later event, kept across page loads. */
        register: function (props) {
            save('props', assign(load('props') || {}, props));
        },

        unregister: function (name) {
            var p = load('props') || {};
            delete p[name];
            save('props', p);
        },

        /* reset(): forget the user, the super properties and the device id (on logout). */
        reset: function () {
            ['user', 'props', 'device'].forEach(function (k) { save(k, undefined); });
        },

        get_distinct_id: function () {
            return distinctId();
        },

        /* flush(): send now whatever is queued, without waiting for a full batch. */
        flush: function () {
            ENDPOINTS.forEach(function (ep) {
                if (!state[ep].fails) flush(ep);
            });
        },

        people: {
            set: function (props) {
                enqueue('engage', { $token: cfg.token, $distinct_id: distinctId(), $set: assign({}, props) });
            },
        },

        version: VERSION,
    };

    /* Run API call `name` ("people.set" for nested ones), or keep it until init() when it comes
     * first: nothing the page tracks before init is lost. */
    function call(name, args) {
        var parts = name.split('.');
        var fn = parts.length > 1 ? api[parts[0]][parts[1]] : api[name];
        if (!fn) return warn('unknown method ' + name);
        if (!cfg && name != 'init') return deferred.push([name, args]);
        try {
            fn.apply(null, args);
        } catch (e) {
            warn(name + ' failed', e);
        }
    }

    /* Outside calls go through call() so that they, too, wait for init(). */
    var pub = { version: VERSION, people: {} };
    ['init', 'track', 'track_pageview', 'identify', 'register', 'unregister', 'reset', 'flush'].forEach(function (m) {
        pub[m] = function () { call(m, [].slice.call(arguments)); };
    });
    pub.people.set = function () { call('people.set', [].slice.call(arguments)); };
    pub.get_distinct_id = function () { return cfg ? distinctId() : undefined; };

    // The script's own origin is the default api_host: nginx serves both.
    var me = document.currentScript;
    if (me && me.src) DEFAULTS.api_host = new URL(me.src).origin;

    w.addEventListener('pagehide', beacon);
    w.addEventListener('online', function () {
        if (cfg) ENDPOINTS.forEach(function (ep) { state[ep].fails = 0; flush(ep); });
    });

    // Replay what the snippet's stub queued, in order, then take its place.
    var stub = w.trackd;
    w.trackd = pub;
    ((stub && stub._q) || []).forEach(function (c) { call(c[0], c[1]); });
})(window);
