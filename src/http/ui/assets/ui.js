// Amon's web page, made nicer with JavaScript on; everything works without it.
// - times in the viewer's timezone (the markup has UTC, kept on hover);
// - live: polls /ui/live every 2 s and redraws <main> when the stamp moved.
(function () {
  "use strict";
  var POLL_MS = 2000;
  var main = document.getElementById("main");
  var live = document.getElementById("live");
  if (!main) return;

  function localTimes(root) {
    var times = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var d = new Date(times[i].getAttribute("datetime"));
      if (!isNaN(d.getTime())) times[i].textContent = d.toLocaleString();
    }
  }

  // What the server sent, before times were made local: compared with the
  // next drawing to tell whether anything changed.
  var drawn = main.innerHTML;
  localTimes(main);
  var stamp = document.body.getAttribute("data-stamp");
  if (!stamp) return;

  function busy() {
    // Never pull a form from under someone typing in it.
    var a = document.activeElement;
    return a && main.contains(a) && /^(INPUT|TEXTAREA|SELECT)$/.test(a.tagName);
  }

  function say(text) {
    if (live) live.textContent = text;
  }

  function redraw() {
    return fetch(location.href, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.text();
    }).then(function (html) {
      var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("main");
      if (!fresh) return;
      fresh.querySelectorAll("#notice").forEach(function (n) { n.remove(); });
      if (fresh.innerHTML !== drawn) {
        drawn = fresh.innerHTML;
        main.innerHTML = fresh.innerHTML;
        localTimes(main);
        say("Updated at " + new Date().toLocaleTimeString());
      }
    });
  }

  function poll() {
    fetch("/ui/live", { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (r.status === 401) { say("Signed out: reload to sign in again."); return null; }
      return r.ok ? r.json() : null;
    }).then(function (body) {
      if (body && body.stamp !== stamp && !busy()) {
        var next = body.stamp;
        return redraw().then(function () { stamp = next; });
      }
    }).catch(function () { /* the master is restarting: try again later */ })
      .then(function () { setTimeout(poll, POLL_MS); });
  }
  setTimeout(poll, POLL_MS);
})();
