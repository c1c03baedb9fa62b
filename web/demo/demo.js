// The demo page's behaviour: buttons that track, a form that identifies and sets a profile, and
// the table of what trackd stored, polled from feed.json (scripts/demo-feed.sh writes it from
// `trackctl tail`). Records come from whoever uses the server, so they are shown with
// textContent only, never parsed as HTML.
(function () {
    'use strict';

    var FEED_URL = 'feed.json';
    var POLL_MS = 1000;
    var PROPS_MAX_CHARS = 300;

    function $(id) {
        return document.getElementById(id);
    }

    document.querySelectorAll('button[data-event]').forEach(function (b) {
        b.addEventListener('click', function () {
            trackd.track(b.getAttribute('data-event'), { button: b.textContent });
        });
    });
    $('flush').addEventListener('click', function () {
        trackd.flush();
    });
    $('identify').addEventListener('submit', function (e) {
        e.preventDefault();
        var user = $('user').value.trim();
        if (!user) return;
        trackd.identify(user);
        trackd.people.set({ $name: user, plan: $('plan').value });
        trackd.flush();
    });

    function myId() {
        // The snippet's stand-in has no get_distinct_id: the library is not there yet.
        return typeof trackd.get_distinct_id === 'function' ? trackd.get_distinct_id() : undefined;
    }

    function cell(tr, text, cls) {
        var td = document.createElement('td');
        td.textContent = text === undefined || text === null ? '' : String(text);
        if (cls) td.className = cls;
        tr.appendChild(td);
    }

    /* The name to show: the event's, or the profile operation of an /engage or /groups update. */
    function what(r) {
        if (r.event) return r.event;
        var ops = Object.keys(r).filter(function (k) {
            return /^\$(set|set_once|add|union|append|remove|unset|delete)$/.test(k);
        });
        return (r.$group_key ? r.$group_key + '=' + r.$group_id + ' ' : '') + ops.join(' ');
    }

    function render(records) {
        var mine = myId();
        var body = $('feed');
        var rows = document.createDocumentFragment();
        records
            .slice()
            .reverse()
            .forEach(function (r) {
                var p = r.properties || {};
                var meta = r._trackd || {};
                var id = p.distinct_id || r.$distinct_id;
                var tr = document.createElement('tr');
                if (mine && id === mine) tr.className = 'mine';
                tr.setAttribute('data-insert-id', p.$insert_id || '');
                cell(tr, meta.received_ms ? new Date(meta.received_ms).toLocaleTimeString() : '');
                cell(tr, meta.endpoint);
                cell(tr, what(r));
                cell(tr, id);
                cell(tr, p.$insert_id);
                var rest = JSON.stringify(r.properties || r, function (k, v) {
                    return k === '_trackd' ? undefined : v;
                });
                cell(tr, rest.length > PROPS_MAX_CHARS ? rest.slice(0, PROPS_MAX_CHARS) + '...' : rest, 'props');
                rows.appendChild(tr);
            });
        body.replaceChildren(rows);
    }

    function poll() {
        fetch(FEED_URL, { cache: 'no-store' })
            .then(function (r) {
                if (!r.ok) throw new Error('feed.json: HTTP ' + r.status + ' (is scripts/demo-feed.sh running?)');
                return r.json();
            })
            .then(function (records) {
                render(records);
                $('feed-status').textContent =
                    records.length + ' newest records, read from the log at ' + new Date().toLocaleTimeString();
            })
            .catch(function (e) {
                $('feed-status').textContent = String(e.message || e);
            })
            .then(function () {
                var id = myId();
                if (id) $('distinct-id').textContent = id;
                setTimeout(poll, POLL_MS);
            });
    }
    poll();
})();
