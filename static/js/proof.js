// Proof of delivery: a small map of where the proof was captured (blue) against the order's
// address (red), and the receipt's print button. Maps inside panels loaded by htmx are drawn
// when they arrive.
(function () {
  "use strict";

  function point(text) {
    var parts = (text || "").split(",").map(parseFloat);
    return parts.length === 2 && isFinite(parts[0]) && isFinite(parts[1]) ? parts : null;
  }

  function draw(el) {
    if (el.dataset.drawn) return;
    el.dataset.drawn = "1";
    if (typeof L === "undefined") { el.textContent = "The map could not be loaded."; return; }
    var capture = point(el.dataset.capture), address = point(el.dataset.address);
    if (!capture || !address) return;
    var map = L.map(el, { zoomControl: false, attributionControl: true });
    L.tileLayer(el.dataset.tileUrl, { maxZoom: 19, attribution: el.dataset.tileAttribution }).addTo(map);
    L.circleMarker(address, { radius: 7, color: "#b42318", fillOpacity: 0.8 }).addTo(map).bindTooltip("Address");
    L.circleMarker(capture, { radius: 7, color: "#175cd3", fillOpacity: 0.8 }).addTo(map).bindTooltip("Captured here");
    L.polyline([capture, address], { color: "#475467", dashArray: "4 4", weight: 2 }).addTo(map);
    map.fitBounds(L.latLngBounds([capture, address]).pad(0.6), { maxZoom: 17 });
  }

  function drawAll(root) {
    (root || document).querySelectorAll(".proof-map").forEach(draw);
  }

  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:afterSettle", function (event) { drawAll(event.target); });
  document.addEventListener("click", function (event) {
    if (event.target.closest("[data-print]")) window.print();
  });
})();
