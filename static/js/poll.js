// Keep the dashboard's pages current without a reload. The pages work
// without this script; it only saves reloading them.
//
// - A running or pending operation ([data-poll-url]) is fetched as an HTML
//   fragment and replaced until it ends.
// - A live region ([data-live-url]) asks its JSON endpoint, sending the token
//   of what it shows (X-Live-Token); 204 means nothing changed. The cluster
//   page swaps its head, fields and time line, adds operations that appeared,
//   and drops its "will be ..." messages once no operation is open. The list
//   page replaces the rows that changed (or all of them when the set changed).
// - Nothing is fetched while the tab is hidden; polling resumes when it shows.
(function () {
  "use strict";
  var INTERVAL_MS = 2000;

  // Run fn after the interval, once the page is visible.
  function later(fn) {
    window.setTimeout(function () { whenVisible(fn); }, INTERVAL_MS);
  }

  function whenVisible(fn) {
    if (!document.hidden) { fn(); return; }
    function shown() {
      if (document.hidden) { return; }
      document.removeEventListener("visibilitychange", shown);
      fn();
    }
    document.addEventListener("visibilitychange", shown);
  }

  function fromHtml(html) {
    var holder = document.createElement("div");
    holder.innerHTML = html.trim();
    return holder.firstElementChild;
  }

  function pollOperation(element) {
    var url = element.getAttribute("data-poll-url");
    if (!url) { return; }
    later(function () {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          // A redirect means the session ended (login page): stop polling.
          return response.ok && !response.redirected ? response.text() : null;
        })
        .then(function (html) {
          if (html === null) { return; }
          var fresh = fromHtml(html);
          if (!fresh || !fresh.matches("details.operation")) { return; }
          // Keep it open or closed as the reader left it.
          fresh.open = element.open;
          element.replaceWith(fresh);
          pollOperation(fresh);
        })
        .catch(function () { pollOperation(element); });
    });
  }

  function pollRegion(region, apply) {
    later(function () {
      fetch(region.getAttribute("data-live-url"), {
        credentials: "same-origin",
        headers: { "Accept": "application/json", "X-Live-Token": region.getAttribute("data-live-token") }
      })
        .then(function (response) {
          if (response.redirected || response.status === 401 || response.status === 403) { return "stop"; }
          if (response.status === 200) { return response.json(); }
          return null;
        })
        .then(function (data) {
          if (data === "stop") { return; }
          if (data && data.token) {
            apply(region, data);
            region.setAttribute("data-live-token", data.token);
          }
          pollRegion(region, apply);
        })
        .catch(function () { pollRegion(region, apply); });
    });
  }

  function applyCluster(region, data) {
    region.innerHTML = data.html;
    if (region.getAttribute("data-live-busy") === "true" && !data.busy) {
      // What the messages announced ("will be stopped") has happened.
      document.querySelectorAll(".messages .message-success").forEach(function (item) { item.remove(); });
    }
    region.setAttribute("data-live-busy", data.busy ? "true" : "false");
    if (region.getAttribute("data-live-operations") === "true") { addOperations(region, data.operations); }
  }

  function addOperations(region, uids) {
    var list = document.getElementById("operations");
    if (!list) { return; }
    var template = region.getAttribute("data-operation-url");
    uids.slice().reverse().forEach(function (uid) {
      if (document.getElementById("operation-" + uid)) { return; }
      var url = template.replace("00000000-0000-0000-0000-000000000000", uid);
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) { return response.ok && !response.redirected ? response.text() : null; })
        .then(function (html) {
          if (html === null || document.getElementById("operation-" + uid)) { return; }
          var fresh = fromHtml(html);
          if (!fresh || !fresh.matches("details.operation")) { return; }
          var empty = list.querySelector(".empty");
          if (empty) { empty.remove(); }
          list.insertBefore(fresh, list.firstElementChild);
          pollOperation(fresh);
        })
        .catch(function () {});
    });
  }

  function applyList(region, data) {
    var rows = region.querySelectorAll("tbody tr[data-name]");
    var names = Array.prototype.map.call(rows, function (row) { return row.getAttribute("data-name"); });
    var same = names.length === data.rows.length && data.rows.every(function (row, index) {
      return row.name === names[index];
    });
    if (!same) { region.innerHTML = data.html; return; }
    data.rows.forEach(function (row, index) {
      if (rows[index].getAttribute("data-token") === row.token) { return; }
      var fresh = document.createElement("tbody");
      fresh.innerHTML = row.html.trim();
      var tr = fresh.firstElementChild;
      tr.classList.add("changed");
      rows[index].replaceWith(tr);
    });
    var summary = fromHtml(data.html);
    var current = region.querySelector(".summary");
    if (summary && summary.matches(".summary") && current) { current.replaceWith(summary); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll-url]").forEach(pollOperation);
    var cluster = document.getElementById("cluster-live");
    if (cluster) { pollRegion(cluster, applyCluster); }
    var list = document.getElementById("clusters-live");
    if (list) { pollRegion(list, applyList); }
  });
})();
