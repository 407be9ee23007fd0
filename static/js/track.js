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

  // "updated at 10:58" from the server becomes "updated 3 min ago" here: the minutes are the
  // browser's to count, so the partial (and its ETag) does not change every minute. They are
  // counted on the server's clock (#track-now, when the page was made), as a phone's own clock
  // can be off by hours.
  var skew = 0;
  var serverNow = document.getElementById("track-now");
  if (serverNow && !isNaN(Date.parse(serverNow.getAttribute("datetime")))) {
    skew = Date.parse(serverNow.getAttribute("datetime")) - Date.now();
  }

  function ages() {
    var now = Date.now() + skew;
    document.querySelectorAll("time.js-ago").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (isNaN(at)) return;
      var minutes = Math.max(0, Math.floor((now - at) / 60000));
      el.textContent = minutes < 1 ? "just now" : minutes < 60 ? minutes + " min ago"
        : Math.floor(minutes / 60) + " h " + String(minutes % 60).padStart(2, "0") + " min ago";
    });
  }

  document.addEventListener("DOMContentLoaded", function () { draw(); ages(); });
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.target && event.target.id === "track-live") { draw(); ages(); }
  });
  setInterval(ages, 30000);
})();
