// The customer's tracking page: one Leaflet map of the customer's own address and, only when
// the server includes it (close and on the way), the driver. htmx swaps #track-live every 15 s;
// its JSON is read from the response (htmx drops <script> elements it swaps in) and the driver
// marker moves in place.
(function () {
  "use strict";
  var map = null, home = null, driver = null, current = null;

  function readData() {
    if (current) return current;
    var el = document.getElementById("track-data");
    return el ? JSON.parse(el.textContent) : null;
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (!target || target.id !== "track-live" || !event.detail.shouldSwap) return;
    var doc = new DOMParser().parseFromString(event.detail.serverResponse, "text/html");
    var el = doc.getElementById("track-data");
    if (el) current = JSON.parse(el.textContent);
  });

  function draw() {
    var data = readData();
    var el = document.getElementById("track-map");
    if (!data || !el || typeof L === "undefined") return;
    var order = data.order, position = data.driver && data.driver.position;
    // Once it is over, a map of one's own address tells nothing: leave it out.
    el.hidden = data.final || order.lat === null || order.lng === null;
    if (el.hidden) return;
    if (!map) {
      map = L.map(el, { scrollWheelZoom: false }).setView([order.lat, order.lng], 15);
      L.tileLayer(el.dataset.tileUrl, { maxZoom: 19, attribution: el.dataset.tileAttribution }).addTo(map);
      home = L.circleMarker([order.lat, order.lng], { radius: 8, color: "#b42318", fillOpacity: 0.9 })
        .addTo(map).bindTooltip("Your address");
    }
    if (position) {
      var at = [position.lat, position.lng];
      if (!driver) {
        driver = L.circleMarker(at, { radius: 9, color: "#175cd3", fillOpacity: 0.9 }).addTo(map).bindTooltip("Your driver");
        map.fitBounds(L.latLngBounds([at, [order.lat, order.lng]]).pad(0.4), { maxZoom: 16 });
      } else {
        driver.setLatLng(at);
      }
    } else if (driver) { // no longer shown: delivered, or the server stopped sending it
      map.removeLayer(driver);
      driver = null;
    }
  }

  document.addEventListener("DOMContentLoaded", draw);
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.target && event.target.id === "track-live") draw();
  });
})();
