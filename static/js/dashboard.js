// Dispatcher's live dashboard: one Leaflet map, created once. htmx swaps the #live partial every
// few seconds; its JSON (#live-data) carries only what changes often: drivers' positions, the
// stops' states (sequences of done and failed stops per route) and `map_version`. The geometry
// (route lines, stops, labels, depots) comes from /live/map.json (data-map-url), fetched once
// and again only when map_version changes. Markers and lines are moved, restyled, added or
// removed in place, so the map keeps its zoom and nobody's view jumps.
(function () {
  "use strict";
  var STOP_COLOURS = { pending: "#667085", done: "#067647", failed: "#b42318" };
  var map = null, fitted = false;
  var depots = {}, drivers = {}, lines = {}, stops = {};
  var focused = null;

  var current = null; // the live data last drawn
  var geometry = null; // the map.json last drawn
  var loading = null; // the map_version being fetched

  // On the first load the JSON is in the page. htmx (allowScriptTags: false) removes every
  // <script> from swapped-in content, so after a poll we read it from the response itself, in
  // htmx:beforeSwap; DOMParser runs no scripts.
  function readData() {
    if (current) return current;
    var el = document.getElementById("live-data");
    return el ? JSON.parse(el.textContent) : null;
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (!target || target.id !== "live" || !event.detail.shouldSwap) return;
    var doc = new DOMParser().parseFromString(event.detail.serverResponse, "text/html");
    var el = doc.getElementById("live-data");
    if (el) current = JSON.parse(el.textContent);
  });

  // Names and addresses go in as text, never as HTML.
  function textElement(text) {
    var el = document.createElement("span");
    el.textContent = text;
    return el;
  }

  function driverIcon(d) {
    var classes = "driver-icon" + (d.stale ? " stale" : "") + (d.heading !== null ? " has-heading" : "");
    if (focused && focused.driver === d.id) classes += " focused";
    return L.divIcon({ className: classes, html: '<span class="driver-arrow"></span><span class="driver-dot"></span>', iconSize: [22, 22], iconAnchor: [11, 11] });
  }

  // Inline style attributes are refused by the CSP; setting a property from script is allowed.
  function rotate(marker, heading) {
    var el = marker.getElement();
    var arrow = el && el.querySelector(".driver-arrow");
    if (arrow && heading !== null) arrow.style.transform = "rotate(" + heading + "deg)";
  }

  function driverTooltip(d) {
    var text = d.name + " · " + d.age + (d.stale ? " (stale)" : "") + (d.source_label ? " · " + d.source_label : "");
    if (d.speed !== null) text += " · " + Math.round(d.speed * 3.6) + " km/h";
    return textElement(text);
  }

  function sync(store, items, create, update) {
    var seen = {};
    items.forEach(function (item) {
      seen[item.id] = true;
      if (store[item.id]) update(store[item.id], item);
      else store[item.id] = create(item);
    });
    Object.keys(store).forEach(function (id) {
      if (!seen[id]) { store[id].remove(); delete store[id]; }
    });
  }

  // Fetches the geometry of `version`; the browser revalidates it with its ETag (a 304 when
  // nothing changed). On failure the next poll tries again.
  function loadGeometry(version) {
    var el = document.getElementById("dash-map");
    if (!el || !el.dataset.mapUrl || loading === version) return;
    loading = version;
    fetch(el.dataset.mapUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("map.json: " + response.status);
        return response.json();
      })
      .then(function (data) { geometry = data; drawGeometry(); draw(); })
      .catch(function () { /* the next poll retries */ })
      .then(function () { loading = null; });
  }

  // Route lines, stop markers and depots: redrawn only when a new map.json arrives.
  function drawGeometry() {
    var data = geometry;
    sync(depots, data.depots, function (d) {
      return L.marker([d.lat, d.lng], {
        icon: L.divIcon({ className: "depot-icon", html: "D", iconSize: [22, 22] }), zIndexOffset: -100,
      }).bindTooltip(textElement(d.name)).addTo(map);
    }, function (m, d) { m.setLatLng([d.lat, d.lng]); m.setTooltipContent(textElement(d.name)); });

    sync(lines, data.routes, function (r) {
      return L.polyline(routeLine(r), { color: r.colour, weight: 3, opacity: 0.7 }).addTo(map);
    }, function (line, r) { line.setLatLngs(routeLine(r)); line.setStyle({ color: r.colour }); });

    var allStops = [];
    data.routes.forEach(function (route) {
      route.stops.forEach(function (s) {
        allStops.push({ id: s.id, route: route.id, n: s.n, lat: s.lat, lng: s.lng, label: s.label, colour: route.colour, driverName: route.name });
      });
    });
    sync(stops, allStops, function (s) {
      var m = L.circleMarker([s.lat, s.lng], stopStyle(s, "pending")).bindTooltip(stopTooltip(s, "pending")).addTo(map);
      m.dashStop = s;
      m.dashState = "pending";
      return m;
    }, function (m, s) {
      m.setLatLng([s.lat, s.lng]);
      m.dashStop = s;
      m.dashState = null; // restyled by paintStates
    });

    if (!fitted) {
      var bounds = L.latLngBounds([]);
      data.depots.forEach(function (d) { bounds.extend([d.lat, d.lng]); });
      allStops.forEach(function (s) { bounds.extend([s.lat, s.lng]); });
      Object.keys(drivers).forEach(function (id) { bounds.extend(drivers[id].getLatLng()); });
      if (bounds.isValid()) {
        map.fitBounds(bounds, { padding: [20, 20], animate: false, maxZoom: 15 });
        fitted = true;
      }
    }
  }

  // The partial's states: per route id, comma-separated sequences of done and failed stops.
  function stateIndex(states) {
    var index = {};
    Object.keys(states || {}).forEach(function (route) {
      ["done", "failed"].forEach(function (state) {
        (states[route][state] || "").split(",").forEach(function (n) {
          if (n) index[route + ":" + n] = state;
        });
      });
    });
    return index;
  }

  function paintStates(data) {
    var index = stateIndex(data.states);
    Object.keys(stops).forEach(function (id) {
      var m = stops[id], s = m.dashStop;
      var state = index[s.route + ":" + s.n] || "pending";
      if (m.dashState === state) return;
      m.dashState = state;
      m.setStyle(stopStyle(s, state));
      m.setTooltipContent(stopTooltip(s, state));
    });
  }

  function draw() {
    var el = document.getElementById("dash-map");
    var data = readData();
    if (!el || !data || typeof L === "undefined") return;
    current = data;
    if (!map) {
      map = L.map(el, { zoomSnap: 0.25 });
      L.tileLayer(el.dataset.tileUrl, { maxZoom: 19, attribution: el.dataset.tileAttribution }).addTo(map);
      map.setView([0, 0], 2);
    }
    if (!geometry || geometry.map_version !== data.map_version) loadGeometry(data.map_version);

    sync(drivers, data.drivers, function (d) {
      var m = L.marker([d.lat, d.lng], { icon: driverIcon(d), zIndexOffset: 1000, title: d.name })
        .bindTooltip(driverTooltip(d)).addTo(map);
      rotate(m, d.heading);
      return m;
    }, function (m, d) {
      m.setLatLng([d.lat, d.lng]).setIcon(driverIcon(d)).setTooltipContent(driverTooltip(d));
      rotate(m, d.heading);
    });
    if (geometry) paintStates(data);
    paintSwatches();
    markFocused();
  }

  function routeLine(r) {
    var line = [r.depot];
    r.stops.forEach(function (s) { line.push([s.lat, s.lng]); });
    line.push(r.depot);
    return line;
  }

  function stopStyle(s, state) {
    var colour = STOP_COLOURS[state] || STOP_COLOURS.pending;
    return { radius: 6, color: s.colour, weight: 2, fillColor: colour, fillOpacity: 0.95 };
  }

  function stopTooltip(s, state) {
    return textElement(s.driverName + ": " + s.n + ". " + s.label + " (" + state + ")");
  }

  function paintSwatches() {
    document.querySelectorAll("#live .swatch[data-colour]").forEach(function (el) {
      el.style.backgroundColor = el.dataset.colour;
    });
  }

  function markFocused() {
    document.querySelectorAll("#live .dash-route.focused").forEach(function (el) { el.classList.remove("focused"); });
    if (focused && focused.route) {
      var item = document.getElementById("dash-route-" + focused.route);
      if (item) item.classList.add("focused");
    }
  }

  function focusOn(target) {
    if (!map) return;
    var data = readData();
    focused = target;
    if (target.driver) {
      var m = drivers[target.driver];
      if (m) { map.setView(m.getLatLng(), Math.max(map.getZoom(), 15)); m.openTooltip(); }
      var d = data && data.drivers.filter(function (x) { return String(x.id) === String(target.driver); })[0];
      if (d && m) m.setIcon(driverIcon(d)), rotate(m, d.heading);
      if (d && d.route) focused.route = d.route;
    } else if (target.route) {
      var line = lines[target.route];
      if (line) map.fitBounds(line.getBounds(), { padding: [30, 30], maxZoom: 16 });
      var route = geometry && geometry.routes.filter(function (r) { return String(r.id) === String(target.route); })[0];
      if (route && drivers[route.driver]) drivers[route.driver].openTooltip();
      if (line) line.bringToFront();
    }
    markFocused();
  }

  // Delegated, so buttons in a freshly swapped partial work without re-binding.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-focus-route], [data-focus-driver]");
    if (!button) return;
    if (button.dataset.focusDriver) focusOn({ driver: Number(button.dataset.focusDriver) });
    else focusOn({ route: Number(button.dataset.focusRoute) });
  });

  document.addEventListener("DOMContentLoaded", draw);
  // htmx:load fires on the new #live itself; after an outerHTML swap the events fired on the
  // old element never reach the document, as it is no longer in it.
  document.addEventListener("htmx:load", function (event) {
    if (event.detail.elt && event.detail.elt.id === "live") draw();
  });
})();
