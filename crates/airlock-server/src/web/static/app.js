// airlock web UI: progressive enhancement only (pages work without it).
// Keeps request state and time left live by polling the JSON API with the
// session cookie (GETs need no CSRF token). No inline code: CSP script-src 'self'.
"use strict";

(function () {
  var TERMINAL = ["expired", "revoked", "denied", "withdrawn", "lapsed", "failed"];
  var POLL_MS = 1500;
  var MAX_POLLED = 50;

  function human(secs) {
    if (secs <= 0) return "0s";
    var d = Math.floor(secs / 86400), h = Math.floor(secs / 3600) % 24,
        m = Math.floor(secs / 60) % 60, s = secs % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + s + "s";
    return s + "s";
  }

  function tick() {
    var cells = document.querySelectorAll("[data-field=time-left][data-not-after]");
    for (var i = 0; i < cells.length; i++) {
      var na = cells[i].getAttribute("data-not-after");
      if (!na) continue;
      var left = Math.floor((Date.parse(na) - Date.now()) / 1000);
      cells[i].textContent = left > 0 ? human(left) + " left" : "ended";
    }
  }

  function update(el, r) {
    var st = el.querySelector("[data-field=state]");
    if (st && st.textContent !== r.state) {
      st.textContent = r.state;
      st.className = "state s-" + r.state;
    }
    var tl = el.querySelector("[data-field=time-left]");
    if (tl && r.not_after) tl.setAttribute("data-not-after", r.not_after);
    var w = el.querySelector("[data-field=window]");
    if (w && r.not_before && r.not_after) w.textContent = r.not_before + " \u2013 " + r.not_after;
    // Actions that no longer apply (e.g. approve once approved) are hidden.
    var forms = document.querySelectorAll("[data-when]");
    for (var i = 0; i < forms.length; i++) forms[i].hidden = forms[i].getAttribute("data-when") !== r.state;
    var list = document.getElementById("reviews");
    if (list && el.id === "facts" && r.reviews && r.reviews.length) renderReviews(list, r.reviews);
    var g = el.querySelector("[data-field=grant]");
    if (g && r.grant) g.textContent = r.grant.phase + (r.grant.last_error ? " (last error: " + r.grant.last_error + ")" : "");
  }

  // Built with textContent only: review comments are never parsed as HTML.
  function renderReviews(old, reviews) {
    var ul = document.createElement("ul");
    ul.id = "reviews";
    reviews.forEach(function (v) {
      var li = document.createElement("li"), who = document.createElement("strong");
      who.textContent = v.reviewer;
      li.appendChild(who);
      li.appendChild(document.createTextNode(" " + (v.decision === "approve" ? "approved" : "denied") + " at " + v.at));
      if (v.comment) {
        li.appendChild(document.createTextNode(": "));
        var q = document.createElement("q");
        q.textContent = v.comment;
        li.appendChild(q);
      }
      ul.appendChild(li);
    });
    old.replaceWith(ul);
  }

  function poll(id, els) {
    fetch("/api/v1/requests/" + encodeURIComponent(id), { credentials: "same-origin", cache: "no-store" })
      .then(function (resp) { return resp.ok ? resp.json() : null; })
      .then(function (r) {
        if (!r) return;
        for (var i = 0; i < els.length; i++) update(els[i], r);
        tick();
        if (TERMINAL.indexOf(r.state) < 0) setTimeout(function () { poll(id, els); }, POLL_MS);
      })
      .catch(function () { setTimeout(function () { poll(id, els); }, POLL_MS * 4); });
  }

  // SSH sessions: replays the asciicast v2 recording into the transcript,
  // as text (escape sequences dropped, like the server's no-JS view).
  function strip(s) {
    return s.replace(/\x1b\[[0-9;?<=>!]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b./g, "")
      .replace(/\r\n/g, "\n").replace(/\r/g, "");
  }

  function player() {
    var pre = document.getElementById("terminal");
    var controls = document.querySelector(".player-controls");
    if (!pre || !controls) return;
    controls.hidden = false;
    var timer = null;
    document.getElementById("play").addEventListener("click", function () {
      if (timer) clearTimeout(timer);
      var speed = Number(document.getElementById("speed").value) || 1;
      fetch(pre.getAttribute("data-recording"), { credentials: "same-origin", cache: "no-store" })
        .then(function (resp) { return resp.ok ? resp.text() : ""; })
        .then(function (text) {
          var events = text.split("\n").slice(1).map(function (l) {
            try { return JSON.parse(l); } catch (e) { return null; }
          }).filter(function (e) { return e && e[1] === "o"; });
          pre.textContent = "";
          var t0 = Date.now(), i = 0;
          (function step() {
            var now = (Date.now() - t0) / 1000 * speed;
            var out = "";
            while (i < events.length && events[i][0] <= now) out += events[i++][2];
            if (out) {
              var shown = pre.textContent + strip(out);
              while (shown.indexOf("\b") >= 0) shown = shown.replace(/[^\n]?\x08/, "");
              pre.textContent = shown;
              pre.scrollTop = pre.scrollHeight;
            }
            if (i < events.length) timer = setTimeout(step, Math.min(200, Math.max(10, (events[i][0] - now) * 1000 / speed)));
            else pre.setAttribute("data-played", "done");
          })();
        });
    });
  }

  function start() {
    player();
    var byId = {};
    var els = document.querySelectorAll("[data-request]");
    for (var i = 0; i < els.length; i++) {
      var id = els[i].getAttribute("data-request");
      (byId[id] = byId[id] || []).push(els[i]);
    }
    Object.keys(byId).slice(0, MAX_POLLED).forEach(function (id) { poll(id, byId[id]); });
    tick();
    setInterval(tick, 1000);
    document.documentElement.setAttribute("data-js", "ready");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
