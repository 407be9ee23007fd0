// A Leaflet map that places a point: click (or drag the marker) to fill the lat/lng inputs,
// and typing coordinates moves the marker. Used on order, contact and depot forms.
(function () {
  "use strict";

  function init(el) {
    if (typeof L === "undefined") {
      el.textContent = "The map could not be loaded; type the coordinates instead.";
      return;
    }
    var latInput = document.getElementById(el.dataset.latInput);
    var lngInput = document.getElementById(el.dataset.lngInput);
    var lat = parseFloat(latInput.value), lng = parseFloat(lngInput.value);
    var has = isFinite(lat) && isFinite(lng);
    var fallback = [parseFloat(el.dataset.defaultLat) || 52.52, parseFloat(el.dataset.defaultLng) || 13.405];
    var map = L.map(el).setView(has ? [lat, lng] : fallback, has ? 16 : 12);
    L.tileLayer(el.dataset.tileUrl, { maxZoom: 19, attribution: el.dataset.tileAttribution }).addTo(map);
    var marker = null;

    function place(latlng, pan) {
      if (!marker) {
        marker = L.marker(latlng, { draggable: true, keyboard: true, title: "Delivery location" }).addTo(map);
        marker.on("dragend", function () { fill(marker.getLatLng()); });
      } else {
        marker.setLatLng(latlng);
      }
      if (pan) map.panTo(latlng);
    }
    function fill(latlng) {
      latInput.value = latlng.lat.toFixed(6);
      lngInput.value = latlng.lng.toFixed(6);
      latInput.dispatchEvent(new Event("change", { bubbles: true }));
    }
    if (has) place([lat, lng], false);
    map.on("click", function (e) { place(e.latlng, false); fill(e.latlng); });
    [latInput, lngInput].forEach(function (input) {
      input.addEventListener("input", function () {
        var a = parseFloat(latInput.value), b = parseFloat(lngInput.value);
        if (isFinite(a) && isFinite(b) && Math.abs(a) <= 90 && Math.abs(b) <= 180) place([a, b], true);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("#location-map").forEach(init);
  });
})();
