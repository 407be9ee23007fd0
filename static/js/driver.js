// The driver app. Offline first: every action (start, arrived, delivered, failed, skip, end)
// and every GPS fix is stored in localStorage with a client-made UUID and the device time,
// then sent in order when the network allows. The server treats a repeated UUID as already
// done, so a retry after a lost answer never doubles anything. A delivery's proof (photos,
// signature) waits in IndexedDB, which holds files; its place in the queue is kept in
// localStorage like every other action, so everything is still sent in order.
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
    if (button.dataset.kind === "delivered" && stop.dataset.proofNeeds) { openProof(stop); return; }
    var body = { uuid: newId(), kind: button.dataset.kind, at: at };
    if (lastFix) { body.lat = lastFix.lat; body.lng = lastFix.lng; }
    if (body.kind === "failed") {
      body.reason = stop.querySelector('select[name="reason"]').value;
      body.note = stop.querySelector('input[name="note"]').value;
      if (body.reason === "other" && !body.note.trim()) { problem("Say what happened in the note."); return; }
      var failPhoto = stop.querySelector("[data-fail-photo]");
      if (failPhoto && failPhoto.files.length) {
        queueCapture(stop, body, [failPhoto.files[0]], null);
        return;
      }
    }
    queueAction(stop.dataset.eventsUrl, body);
    showStop(stop, body.kind);
    showSuggestion(suggestion); // hides the banner once its stop has been acted on
  });

  // --- Proof of delivery ---------------------------------------------------------------------
  // Photos are shrunk in the phone (≤ 1600 px JPEG) before they wait or travel; the server
  // decodes and re-encodes them again whatever arrives. What the organisation requires is on
  // the stop (data-proof-needs) so that an offline capture is complete before it is queued.

  var DB_NAME = "doorstep-driver", STORE = "captures";
  var pads = {}, photosOf = {};

  function db() {
    return new Promise(function (resolve, reject) {
      var request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = function () { request.result.createObjectStore(STORE, { keyPath: "id" }); };
      request.onsuccess = function () { resolve(request.result); };
      request.onerror = function () { reject(request.error); };
    });
  }
  function store(mode, work) {
    return db().then(function (conn) {
      return new Promise(function (resolve, reject) {
        var tx = conn.transaction(STORE, mode), result;
        var request = work(tx.objectStore(STORE));
        request.onsuccess = function () { result = request.result; };
        tx.oncomplete = function () { resolve(result); };
        tx.onerror = tx.onabort = function () { reject(tx.error); };
      });
    });
  }
  var captures = {
    put: function (item) { return store("readwrite", function (s) { return s.put(item); }); },
    get: function (id) { return store("readonly", function (s) { return s.get(id); }); },
    remove: function (id) { return store("readwrite", function (s) { return s.delete(id); }); },
  };

  async function shrink(file) {
    var MAX = 1600;
    try {
      var bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
      var scale = Math.min(1, MAX / Math.max(bitmap.width, bitmap.height));
      var canvas = document.createElement("canvas");
      canvas.width = Math.round(bitmap.width * scale);
      canvas.height = Math.round(bitmap.height * scale);
      canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      return await new Promise(function (resolve) {
        canvas.toBlob(function (blob) { resolve(blob || file); }, "image/jpeg", 0.85);
      });
    } catch (e) { return file; } // a format this browser cannot draw: the server decides
  }

  // ZXing (360 KB) is fetched beside the page, not before it: as a deferred script it held
  // back this one, and every button with it, until it had arrived over the phone's network.
  // A scan waits for it; if it cannot be had, the driver types the code.
  var zxingLoaded = null;
  function loadZxing() {
    var list = document.querySelector("[data-barcode-reader]");
    if (!zxingLoaded && list) {
      zxingLoaded = new Promise(function (resolve) {
        var script = document.createElement("script");
        script.src = list.dataset.barcodeReader;
        script.onload = resolve;
        script.onerror = function () { zxingLoaded = null; script.remove(); resolve(); }; // next scan tries again
        document.head.appendChild(script);
      });
    }
    return zxingLoaded || Promise.resolve();
  }

  // The browser's own BarcodeDetector (Chrome on Android), else ZXing from npm (iOS Safari,
  // Firefox), else nothing: the driver types the code.
  async function readBarcode(file) {
    try {
      if ("BarcodeDetector" in window) {
        var found = await new window.BarcodeDetector().detect(await createImageBitmap(file));
        if (found.length) return found[0].rawValue;
      }
      await loadZxing();
      if (window.ZXing) {
        var url = URL.createObjectURL(file);
        try { return (await new window.ZXing.BrowserMultiFormatReader().decodeFromImageUrl(url)).getText(); }
        finally { URL.revokeObjectURL(url); }
      }
    } catch (e) { /* nothing readable in the picture */ }
    return "";
  }

  function formOf(stop) { return stop.querySelector("[data-proof-form]"); }
  function proofError(stop, text) {
    var el = stop.querySelector("[data-proof-error]");
    el.textContent = text;
    el.hidden = !text;
  }

  function openProof(stop) {
    var form = formOf(stop);
    if (!form) return;
    form.hidden = false;
    var canvas = form.querySelector("[data-signature]");
    if (!pads[stop.dataset.stop] && canvas && window.SignaturePad) {
      // The drawing surface in device pixels, so strokes are sharp and land under the finger.
      var ratio = Math.max(window.devicePixelRatio || 1, 1);
      canvas.width = canvas.offsetWidth * ratio;
      canvas.height = canvas.offsetHeight * ratio;
      canvas.getContext("2d").scale(ratio, ratio);
      pads[stop.dataset.stop] = new window.SignaturePad(canvas, { penColor: "#101828" });
    }
    form.scrollIntoView({ block: "start", behavior: "smooth" });
  }

  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-proof-open]");
    if (opener) { openProof(opener.closest("[data-stop]")); return; }
    var clear = event.target.closest("[data-signature-clear]");
    if (clear) {
      var pad = pads[clear.closest("[data-stop]").dataset.stop];
      if (pad) pad.clear();
    }
  });

  document.addEventListener("change", async function (event) {
    var input = event.target;
    var stop = input.closest && input.closest("[data-stop]");
    if (!stop) return;
    if (input.matches("[data-proof-photos]")) {
      var list = photosOf[stop.dataset.stop] = [];
      var thumbs = stop.querySelector("[data-proof-thumbs]");
      thumbs.textContent = "";
      for (var i = 0; i < input.files.length; i++) {
        var blob = await shrink(input.files[i]);
        list.push(blob);
        var img = document.createElement("img");
        img.src = URL.createObjectURL(blob);
        img.alt = "Photo " + (i + 1);
        thumbs.appendChild(img);
      }
    } else if (input.matches("[data-scan]") && input.files.length) {
      var code = stop.querySelector('input[name="scanned_code"]');
      var text = await readBarcode(input.files[0]);
      input.value = "";
      if (text) { code.value = text; proofError(stop, ""); }
      else proofError(stop, "No barcode could be read from that picture: try again closer, or type the code.");
    }
  });

  document.addEventListener("submit", async function (event) {
    var form = event.target.closest("[data-proof-form]");
    if (!form) return;
    event.preventDefault();
    var stop = form.closest("[data-stop]");
    var needs = (stop.dataset.proofNeeds || "").split(" ");
    var photos = photosOf[stop.dataset.stop] || [];
    var pad = pads[stop.dataset.stop];
    var signed = pad && !pad.isEmpty();
    var field = function (name) { var el = form.querySelector('[name="' + name + '"]'); return el ? el.value.trim() : ""; };
    var missing = [];
    if (needs.indexOf("photo") !== -1 && !photos.length) missing.push("a photo");
    if (needs.indexOf("signature") !== -1 && !signed) missing.push("the signature");
    if ((needs.indexOf("signature") !== -1 || signed) && !field("recipient_name")) missing.push("the name of who signed");
    if (needs.indexOf("pin") !== -1 && !/^[0-9]{4}$/.test(field("pin"))) missing.push("the customer's 4-digit PIN");
    if (needs.indexOf("barcode") !== -1 && !field("scanned_code")) missing.push("a parcel scan");
    if (missing.length) { proofError(stop, "Still needed: " + missing.join(", ") + "."); return; }
    proofError(stop, "");
    var signature = signed ? await new Promise(function (resolve) {
      pad.canvas.toBlob(resolve, "image/png");
    }) : null;
    var body = {
      uuid: newId(), kind: "delivered", at: new Date().toISOString(), recipient_name: field("recipient_name"),
      pin: field("pin"), scanned_code: field("scanned_code"), note: field("note"),
    };
    await queueCapture(stop, body, photos, signature);
  });

  async function queueCapture(stop, body, photos, signature) {
    if (lastFix) { body.lat = lastFix.lat; body.lng = lastFix.lng; body.accuracy = lastFix.accuracy; }
    var files = [];
    // Photos picked in the proof form are shrunk already (Blobs); a failed attempt's is a File.
    for (var i = 0; i < photos.length; i++) files.push(photos[i] instanceof File ? await shrink(photos[i]) : photos[i]);
    try {
      await captures.put({ id: body.uuid, photos: files, signature: signature });
    } catch (e) {
      proofError(stop, "The phone has no room to keep this proof: free some space and try again.");
      return;
    }
    var queue = load(ACTIONS);
    queue.push({ url: stop.dataset.podUrl, body: body, capture: body.uuid });
    save(ACTIONS, queue);
    showStop(stop, body.kind);
    render();
    flush();
  }

  async function sendCapture(item) {
    var saved = await captures.get(item.capture).catch(function () { return null; });
    var data = new FormData();
    Object.keys(item.body).forEach(function (key) {
      if (item.body[key] !== undefined && item.body[key] !== null) data.append(key, item.body[key]);
    });
    if (saved) {
      saved.photos.forEach(function (blob, i) { data.append("photos", blob, "photo-" + (i + 1) + ".jpg"); });
      if (saved.signature) data.append("signature", saved.signature, "signature.png");
    }
    return fetch(item.url, {
      method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": csrfToken() }, body: data,
    });
  }

  // --- Arrival suggestion --------------------------------------------------------------------
  // The server says when the driver's positions have stayed near an open stop; the app only
  // offers "mark arrived?". Accepting taps that stop's own Arrived button (same queue, same
  // code path); a dismissed stop is not offered again on this phone.

  var DISMISSED = "doorstep.driver.dismissed-arrivals.v1";
  var ROUTE_EVERY_MS = 30000;
  var suggestion = null;

  function arrivedButton(stopId) {
    return document.querySelector('#stop-' + stopId + ' button[data-kind="arrived"]');
  }
  function showSuggestion(next) {
    var banner = document.getElementById("arrival-banner");
    if (!banner) return;
    suggestion = next && arrivedButton(next.stop) && load(DISMISSED).indexOf(next.stop) === -1 ? next : null;
    if (suggestion) {
      document.getElementById("arrival-text").textContent =
        "You seem to be at stop " + suggestion.sequence + ", " + suggestion.address + " — mark arrived?";
    }
    banner.hidden = !suggestion;
  }
  async function checkArrival() {
    var banner = document.getElementById("arrival-banner");
    if (!banner || !navigator.onLine) return;
    var response, data;
    try {
      response = await fetch(banner.dataset.routeUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) return;
      data = await response.json();
    } catch (e) { return; } // offline or a bad answer: keep what is shown, ask again later
    showSuggestion(data.route && data.route.arrival_suggestion);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-arrival]");
    if (!button || !suggestion) return;
    if (button.dataset.arrival === "accept") {
      var arrived = arrivedButton(suggestion.stop);
      if (arrived) arrived.click();
    } else {
      var dismissed = load(DISMISSED);
      dismissed.push(suggestion.stop);
      save(DISMISSED, dismissed);
    }
    showSuggestion(null);
  });

  // --- Positions -----------------------------------------------------------------------------

  var laterFix = null;
  function queueFix(position) {
    var now = Date.now();
    if (lastFix && now - lastFix.time < FIX_EVERY_MS) {
      // Too soon: keep the newest and take it when the interval is up. A phone that stops
      // moving may report nothing more, and its last position must not be the one dropped.
      if (!laterFix) setTimeout(function () { var p = laterFix; laterFix = null; queueFix(p); }, FIX_EVERY_MS - (now - lastFix.time));
      laterFix = position;
      return;
    }
    var c = position.coords;
    lastFix = { time: now, lat: c.latitude, lng: c.longitude, accuracy: c.accuracy };
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
        try {
          response = item.capture ? await sendCapture(item) : await post(item.url, item.body);
        } catch (e) { break; } // offline: later
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
        if (item.capture) await captures.remove(item.capture).catch(function () { /* already gone */ });
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
  window.addEventListener("online", checkArrival);
  window.addEventListener("offline", render);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) flush(); });
  // After a reload while offline, the page comes from the server's (older) view: show the
  // queued actions on it again.
  function replayQueued() {
    load(ACTIONS).forEach(function (item) {
      var stop = document.querySelector('[data-events-url="' + item.url + '"][data-stop], [data-pod-url="' + item.url + '"][data-stop]');
      if (stop && LABELS[item.body.kind]) showStop(stop, item.body.kind);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    loadZxing(); // now, while online: a scan may come when the network is gone
    replayQueued();
    render();
    flush();
    setInterval(flush, 15000);
    checkArrival();
    setInterval(checkArrival, ROUTE_EVERY_MS);
    if (navigator.geolocation && document.getElementById("route")) {
      navigator.geolocation.watchPosition(queueFix, function () { /* denied or unavailable */ },
        { enableHighAccuracy: true, maximumAge: 5000, timeout: 20000 });
    }
  });
})();
