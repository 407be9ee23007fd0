// Route page: the planned order of stops (depot → stops → depot, dashed) and the path the driver
// actually drove (Route.travelled_path, simplified server-side), on one Leaflet map.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var el = document.getElementById("route-map");
    if (!el || typeof L === "undefined" || !el.dataset.map) return;
    var data = JSON.parse(el.dataset.map);
    var map = L.map(el, { zoomSnap: 0.25 }).setView(data.depot, 12);
    L.tileLayer(el.dataset.tileUrl, { maxZoom: 19, attribution: el.dataset.tileAttribution }).addTo(map);
    var bounds = L.latLngBounds(data.depot, data.depot);
    L.marker(data.depot, { title: "Depot" }).addTo(map);
    var planned = [data.depot].concat(data.planned, [data.depot]);
    L.polyline(planned, { color: "#5b6677", weight: 2, dashArray: "6 6", opacity: 0.8 }).addTo(map);
    data.stops.forEach(function (stop) {
      var colour = stop.status === "failed" ? "#b42318" : stop.status === "completed" ? "#067647" : "#1f78b4";
      L.circleMarker([stop.lat, stop.lng], { radius: 9, color: colour, fillColor: colour, fillOpacity: 0.9, weight: 1 })
        .bindTooltip(String(stop.n), { permanent: true, direction: "center", className: "stop-number" })
        .addTo(map);
      bounds.extend([stop.lat, stop.lng]);
    });
    if (data.travelled.length > 1) {
      L.polyline(data.travelled, { color: "#d95f02", weight: 4, opacity: 0.85 }).addTo(map);
      data.travelled.forEach(function (point) { bounds.extend(point); });
    }
    map.fitBounds(bounds, { padding: [20, 20], animate: false });
  });
})();
