/*
 * The loader snippet, pasted into a page inside a <script> tag (docs/snippet.md). It defines a
 * stand-in `trackd` whose methods only queue their calls, then loads the library asynchronously;
 * trackd.js replays the queue in order and takes the stand-in's place. So a page can call
 * trackd.init/track/... right away without waiting for (or blocking on) the library.
 *
 * web/build.mjs minifies this file into web/dist/snippet.html, with LIB_URL pointing at the
 * versioned library; edit LIB_URL's host there if the page is served from another origin.
 */
(function (w, d, url) {
    if (w.trackd) return; // loaded twice, or the library is already there
    var q = [];
    function stub(name) {
        return function () {
            q.push([name, [].slice.call(arguments)]);
        };
    }
    var t = { _q: q, people: { set: stub('people.set') } };
    ['init', 'track', 'track_pageview', 'identify', 'register', 'unregister', 'reset', 'flush'].forEach(function (m) {
        t[m] = stub(m);
    });
    w.trackd = t;
    var s = d.createElement('script');
    s.async = true;
    s.src = url;
    d.head.appendChild(s);
})(window, document, '__LIB_URL__');
