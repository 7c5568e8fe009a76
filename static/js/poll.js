// Refresh running operations in place by fetching their fragment; the page
// works without this script, it only saves a reload.
(function () {
  "use strict";
  var INTERVAL_MS = 2000;

  function poll(element) {
    var url = element.getAttribute("data-poll-url");
    if (!url) { return; }
    window.setTimeout(function () {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          // A redirect means the session ended (login page): stop polling.
          return response.ok && !response.redirected ? response.text() : null;
        })
        .then(function (html) {
          if (html === null) { return; }
          var holder = document.createElement("div");
          holder.innerHTML = html.trim();
          var fresh = holder.firstElementChild;
          if (!fresh || !fresh.matches("details.operation")) { return; }
          element.replaceWith(fresh);
          poll(fresh);
        })
        .catch(function () { poll(element); });
    }, INTERVAL_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll-url]").forEach(poll);
  });
})();
