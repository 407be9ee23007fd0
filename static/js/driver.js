// The driver app. Offline first: every action (start, arrived, delivered, failed, skip, end)
// and every GPS fix is stored in localStorage with a client-made UUID and the device time,
// then sent in order when the network allows. The server treats a repeated UUID as already
// done, so a retry after a lost answer never doubles anything.
(function () {
  "use strict";
  var ACTIONS = "doorstep.driver.actions.v1";
  var FIXES = "doorstep.driver.fixes.v1";
  var MAX_FIXES = 17280; // a day at one fix every 5 s; beyond it the oldest are dropped (and said)
  var FIX_EVERY_MS = 5000;
  var dropped = 0;
  var lastFix = null;
  var flushing = false;

  function load(key) {
    try { return JSON.parse(localStorage.getItem(key)) || []; } catch (e) { return []; }
  }
  function save(key, value) { localStorage.setItem(key, JSON.stringify(value)); }
  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "10000000-1000-4000-8000-100000000000".replace(/[018]/g, function (c) {
      return (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16);
    });
  }
  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"]; } catch (e) { return ""; }
  }
  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(body),
    });
  }

  function status(text, state) {
    var el = document.getElementById("sync-status");
    if (!el) return;
    el.textContent = text;
    el.dataset.state = state;
  }
  function render() {
    var actions = load(ACTIONS).length, fixes = load(FIXES).length;
    var waiting = [];
    if (actions) waiting.push(actions + " action" + (actions === 1 ? "" : "s"));
    if (fixes) waiting.push(fixes + " position" + (fixes === 1 ? "" : "s"));
    var lost = dropped ? " (" + dropped + " oldest positions dropped to make room)" : "";
    if (!navigator.onLine) {
      status("Offline — " + (waiting.length ? waiting.join(" and ") + " waiting to be sent" : "nothing waiting") + lost, "offline");
    } else if (waiting.length) {
      status("Sending " + waiting.join(" and ") + "…" + lost, "pending");
    } else {
      status("Online · everything sent", "online");
    }
  }
  function problem(text) {
    var el = document.getElementById("sync-status");
    if (el) { el.textContent = text; el.dataset.state = "offline"; }
  }

  // --- Actions -------------------------------------------------------------------------------

  var LABELS = { arrived: "Arrived", delivered: "Completed", failed: "Failed", skipped: "Skipped" };

  function queueAction(url, body) {
    var queue = load(ACTIONS);
    queue.push({ url: url, body: body });
    save(ACTIONS, queue);
    render();
    flush();
  }

  function showStop(stop, kind) {
    var badge = stop.querySelector(".stop-status");
    if (badge) { badge.textContent = LABELS[kind] || kind; badge.className = "badge stop-status " + (kind === "delivered" ? "completed" : kind); }
    if (kind !== "arrived") {
      stop.classList.add(kind === "delivered" ? "completed" : kind);
      var actions = stop.querySelector(".stop-actions-driver");
      if (actions) actions.remove();
    } else {
      var arrived = stop.querySelector('[data-kind="arrived"]');
      if (arrived) arrived.remove();
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-kind], button[data-route-action]");
    if (!button) return;
    var at = new Date().toISOString();
    if (button.dataset.routeAction) {
      var route = document.getElementById("route");
      queueAction(route.dataset.eventsUrl, { uuid: newId(), kind: button.dataset.routeAction, at: at });
      var label = document.getElementById("route-status");
      if (label) label.textContent = button.dataset.routeAction === "start" ? "In progress" : "Completed";
      button.remove();
      return;
    }
    var stop = button.closest("[data-stop]");
    var body = { uuid: newId(), kind: button.dataset.kind, at: at };
    if (lastFix) { body.lat = lastFix.lat; body.lng = lastFix.lng; }
    if (body.kind === "failed") {
      body.reason = stop.querySelector('select[name="reason"]').value;
      body.note = stop.querySelector('input[name="note"]').value;
      if (body.reason === "other" && !body.note.trim()) { problem("Say what happened in the note."); return; }
    }
    queueAction(stop.dataset.eventsUrl, body);
    showStop(stop, body.kind);
  });

  // --- Positions -----------------------------------------------------------------------------

  function queueFix(position) {
    var now = Date.now();
    if (lastFix && now - lastFix.time < FIX_EVERY_MS) return;
    var c = position.coords;
    lastFix = { time: now, lat: c.latitude, lng: c.longitude };
    var fixes = load(FIXES);
    fixes.push({
      uuid: newId(),
      recorded_at: new Date(position.timestamp || now).toISOString(),
      lat: c.latitude,
      lng: c.longitude,
      accuracy: c.accuracy,
      speed: c.speed,
      heading: c.heading,
    });
    if (fixes.length > MAX_FIXES) { dropped += fixes.length - MAX_FIXES; fixes = fixes.slice(fixes.length - MAX_FIXES); }
    save(FIXES, fixes);
    render();
  }

  // --- Sending -------------------------------------------------------------------------------

  var again = false;

  async function flush() {
    if (flushing) { again = true; return; } // queued while sending: go round once more after
    flushing = true;
    again = false;
    try {
      var queue = load(ACTIONS);
      while (queue.length) {
        var item = queue[0], response;
        try { response = await post(item.url, item.body); } catch (e) { break; } // offline: later
        if (response.status === 401 || response.status === 403) {
          problem("Your session has ended: log in again. Nothing is lost; it is sent after you log in.");
          return;
        }
        if (response.status >= 500) break; // the server is in trouble: try again later
        if (!response.ok) { // refused for good (e.g. already done): tell the driver, move on
          var data = {};
          try { data = await response.json(); } catch (e) { /* not JSON */ }
          problem("Not accepted: " + (data.detail || JSON.stringify(data)));
        }
        queue = load(ACTIONS);
        queue.shift();
        save(ACTIONS, queue);
      }
      var fixes = load(FIXES);
      while (fixes.length) {
        var batch = fixes.slice(0, 500), sent;
        try { sent = await post("/api/v1/driver/locations/", { fixes: batch }); } catch (e) { break; }
        if (sent.status >= 500 || sent.status === 401 || sent.status === 403) break;
        fixes = load(FIXES).slice(batch.length); // fixes taken meanwhile stay queued
        save(FIXES, fixes);
      }
    } finally {
      flushing = false;
      render();
      if (again) setTimeout(flush, 0);
    }
  }

  window.addEventListener("online", flush);
  window.addEventListener("offline", render);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) flush(); });
  // After a reload while offline, the page comes from the server's (older) view: show the
  // queued actions on it again.
  function replayQueued() {
    load(ACTIONS).forEach(function (item) {
      var stop = document.querySelector('[data-events-url="' + item.url + '"][data-stop]');
      if (stop && LABELS[item.body.kind]) showStop(stop, item.body.kind);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    replayQueued();
    render();
    flush();
    setInterval(flush, 15000);
    if (navigator.geolocation && document.getElementById("route")) {
      navigator.geolocation.watchPosition(queueFix, function () { /* denied or unavailable */ },
        { enableHighAccuracy: true, maximumAge: 5000, timeout: 20000 });
    }
  });
})();
