// A small single-page client that talks to Kindler's API as the original
// Kindler web UI does with axios: JSON under /api, the CSRF token read from
// the XSRF-TOKEN cookie and sent back as X-XSRF-TOKEN, and each task
// followed by polling /api/tasks/ID until it is completed or failed.
(function () {
  "use strict";
  var POLL_MS = 200;

  function cookie(name) {
    var pairs = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < pairs.length; i++) {
      var eq = pairs[i].indexOf("=");
      if (pairs[i].slice(0, eq) === name) {
        return decodeURIComponent(pairs[i].slice(eq + 1));
      }
    }
    return null;
  }

  function request(method, path, body) {
    var headers = {
      "Accept": "application/json, text/plain, */*",
      "X-Requested-With": "XMLHttpRequest"
    };
    var token = cookie("XSRF-TOKEN");
    if (token !== null) { headers["X-XSRF-TOKEN"] = token; }
    var init = { method: method, headers: headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch("/api" + path, init).then(function (response) {
      return response.json().then(function (data) {
        if (response.status === 401 && data.login_url) {
          var link = document.getElementById("signin-link");
          link.href = data.login_url;
          document.getElementById("signin").hidden = false;
        }
        if (!response.ok) {
          var detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
          throw new Error(response.status + " " + detail);
        }
        return data;
      });
    });
  }

  function report(error) {
    document.getElementById("error").textContent = error.message;
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) { td.className = className; }
    row.appendChild(td);
    return td;
  }

  function actionButton(td, label, send) {
    var button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    button.className = label.toLowerCase();
    button.addEventListener("click", function () {
      send().then(function (accepted) { follow(accepted.task_id); }).catch(report);
    });
    td.appendChild(button);
  }

  function loadClusters() {
    return request("GET", "/clusters").then(function (clusters) {
      var body = document.getElementById("clusters");
      body.textContent = "";
      clusters.forEach(function (cluster) {
        var row = document.createElement("tr");
        row.id = "cluster-" + cluster.name;
        cell(row, cluster.name, "name");
        cell(row, cluster.status, "status");
        cell(row, String(cluster.http_port), "http-port");
        var actions = cell(row, "", "actions");
        actionButton(actions, "Start", function () {
          return request("POST", "/clusters/" + cluster.name + "/start");
        });
        actionButton(actions, "Stop", function () {
          return request("POST", "/clusters/" + cluster.name + "/stop");
        });
        actionButton(actions, "Delete", function () {
          return request("DELETE", "/clusters/" + cluster.name);
        });
        body.appendChild(row);
      });
    });
  }

  function showTask(task) {
    var item = document.getElementById("task-" + task.task_id);
    if (item === null) {
      item = document.createElement("li");
      item.id = "task-" + task.task_id;
      document.getElementById("tasks").appendChild(item);
    }
    item.dataset.status = task.status;
    item.dataset.progress = String(task.progress);
    item.textContent = task.message + ": " + task.status + " " + task.progress + "%";
  }

  function follow(taskId) {
    showTask({ task_id: taskId, status: "pending", progress: 0, message: "Submitted" });
    function poll() {
      request("GET", "/tasks/" + taskId).then(function (task) {
        showTask(task);
        if (task.status === "completed" || task.status === "failed") {
          loadClusters().catch(report);
        } else {
          window.setTimeout(poll, POLL_MS);
        }
      }).catch(report);
    }
    poll();
  }

  function loadConfig() {
    return request("GET", "/config").then(function (config) {
      document.getElementById("base-domain").textContent = config.base_domain;
      var select = document.getElementById("provider");
      config.providers.forEach(function (provider) {
        var option = document.createElement("option");
        option.value = option.textContent = provider;
        option.selected = provider === config.default_provider;
        select.appendChild(option);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.getElementById("create").addEventListener("submit", function (event) {
      event.preventDefault();
      var body = {
        name: document.getElementById("name").value,
        provider: document.getElementById("provider").value
      };
      request("POST", "/clusters", body)
        .then(function (accepted) { follow(accepted.task_id); })
        .catch(report);
    });
    loadConfig().then(loadClusters).catch(report);
  });
})();
