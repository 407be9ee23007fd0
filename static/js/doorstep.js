// Doorstep's small page helpers. No inline scripts anywhere: the CSP forbids them.
(function () {
  "use strict";

  // Forms or buttons with data-confirm ask before submitting (e.g. cancelling an order).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var submitter = event.submitter;
    var question = (submitter && submitter.dataset.confirm) || form.dataset.confirm;
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  // After an HTMX swap of a form with errors, move focus to the error summary for screen readers.
  document.addEventListener("htmx:afterSwap", function (event) {
    var summary = event.detail.target.querySelector(".error-summary");
    if (summary) summary.focus();
  });

  document.addEventListener("DOMContentLoaded", function () {
    var summary = document.querySelector(".error-summary");
    if (summary) summary.focus();
  });
})();
