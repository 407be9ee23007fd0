// Plan page: a Leaflet map of the routes (one colour each, numbered stops) and drag-and-drop of
// stops between routes (SortableJS). Every drop is a normal POST through htmx, so the server
// recomputes times and broken rules and sends the routes section back. The buttons next to
// each stop do the same without a mouse.
(function () {
  "use strict";
  var map = null, layer = null;

  function readData() {
    var el = document.getElementById("plan-routes");
    return el && el.dataset.map ? JSON.parse(el.dataset.map) : null;
  }

  function drawMap() {
    var el = document.getElementById("plan-map");
    var data = readData();
    if (!el || !data || typeof L === "undefined") return;
    if (!map) {
      map = L.map(el, { zoomSnap: 0.25 }).setView(data.depot, 12);
      L.tileLayer(el.dataset.tileUrl, { maxZoom: 19, attribution: el.dataset.tileAttribution }).addTo(map);
    }
    if (layer) layer.remove();
    layer = L.layerGroup().addTo(map);
    var bounds = L.latLngBounds(data.depot, data.depot);
    L.marker(data.depot, { title: "Depot" }).addTo(layer);
    data.routes.forEach(function (route) {
      var line = [data.depot];
      route.stops.forEach(function (stop) {
        var point = [stop.lat, stop.lng];
        line.push(point);
        bounds.extend(point);
        L.circleMarker(point, { radius: 9, color: route.colour, fillColor: route.colour, fillOpacity: 0.9, weight: 1 })
          .bindTooltip(String(stop.n), { permanent: true, direction: "center", className: "stop-number" })
          .bindPopup(textElement(route.driver + ": " + stop.n + ". " + stop.label))
          .addTo(layer);
      });
      line.push(data.depot);
      L.polyline(line, { color: route.colour, weight: 3, opacity: 0.7 }).addTo(layer);
    });
    map.fitBounds(bounds, { padding: [20, 20], animate: false });
  }

  // Customer text goes in as text, never as HTML.
  function textElement(text) {
    var el = document.createElement("span");
    el.textContent = text;
    return el;
  }

  function paintSwatches(root) {
    root.querySelectorAll(".swatch[data-colour]").forEach(function (el) {
      el.style.backgroundColor = el.dataset.colour;
    });
  }

  function wireDragAndDrop(root) {
    if (typeof Sortable === "undefined") return;
    root.querySelectorAll(".stop-list").forEach(function (list) {
      Sortable.create(list, {
        group: "plan-stops",
        animation: 120,
        filter: ".closed, button, select, a",
        preventOnFilter: false,
        onEnd: function (event) {
          if (event.from === event.to && event.oldIndex === event.newIndex) return;
          var item = event.item;
          htmx.ajax("POST", item.dataset.moveUrl, {
            target: "#plan-routes",
            swap: "outerHTML",
            values: {
              route: event.to.dataset.route,
              position: event.newIndex + 1,
              from_route: event.from.dataset.route,
              version: item.dataset.version,
            },
          });
        },
      });
    });
  }

  function refresh(root) {
    paintSwatches(root);
    wireDragAndDrop(root);
    drawMap();
  }

  document.addEventListener("DOMContentLoaded", function () { refresh(document); });
  // A refused change (404, 409, 500) is not swapped by htmx 2: show the routes as they are now,
  // so a dragged stop does not stay where it was dropped.
  document.addEventListener("htmx:responseError", function () {
    if (!document.getElementById("plan-routes")) return;
    htmx.ajax("GET", window.location.pathname, { target: "#plan-routes", swap: "outerHTML" });
  });
  // After an outerHTML swap the event's target is the old element: redraw from the new one.
  document.addEventListener("htmx:load", function (event) {
    if (event.detail.elt && event.detail.elt.id === "plan-routes") refresh(document);
  });
})();
