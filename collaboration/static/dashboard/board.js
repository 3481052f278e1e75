/* Live dashboards over /ws/dashboard/. Config comes from the #dashboard-config JSON script tag.
   Every event carries a monotonic id: the page remembers the highest id it applied and (re)connects with
   ?since=<id>, so nothing committed while it was offline — or while the server restarted — is missed.
   Board: cards move between columns, counts follow, a filter bar (mirrored in the URL) hides cards.
   Ticket and agents pages: the server-rendered sections are re-fetched and swapped when an event touches
   them, so every section (history, phases, comments, runs, …) stays live with one rendering path. */
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("dashboard-config").textContent);
  var liveBadge = document.getElementById("live");
  var PRIORITY_RANK = { critical: 4, high: 3, medium: 2, low: 1 };
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  var FINAL_CODES = [4400, 4401, 4403, 4404];
  var retries = 0, pingTimer = null, lastId = cfg.last_id || 0, seen = {}, paused = false;
  // pause()/resume() drop and re-open the socket on purpose (a manager's flaky network; browser tests)
  window.omoiDashboard = {
    socket: null,
    lastId: function () { return lastId; },
    pause: function () { paused = true; if (this.socket) this.socket.close(); },
    resume: function () { paused = false; retries = 0; connect(); }
  };

  function setState(state, title) {
    if (!liveBadge) return;
    liveBadge.dataset.state = state;
    liveBadge.textContent = state;
    if (title) liveBadge.title = title;
    document.body.dataset.live = state;
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function two(n) { return (n < 10 ? "0" : "") + n; }
  // same wording as the server's first render ("Dec 3, 17:20:05", server time zone UTC)
  function stamp(date) {
    return MONTHS[date.getUTCMonth()] + " " + date.getUTCDate() + ", " + two(date.getUTCHours()) + ":" +
      two(date.getUTCMinutes()) + ":" + two(date.getUTCSeconds());
  }
  function ago(date) {
    var s = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
    if (s < 45) return "just now";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }
  function refreshAgo() {
    document.querySelectorAll(".ago[data-at]").forEach(function (span) {
      var d = new Date(span.dataset.at);
      if (!isNaN(d)) span.textContent = " · " + ago(d);
    });
  }

  function addFeed(m) {
    var feed = document.getElementById("feed");
    if (!feed || feed.querySelector('[data-event-id="' + m.id + '"]')) return;
    var empty = feed.querySelector(".empty");
    if (empty) empty.remove();
    var at = new Date(m.at);
    var item = el("li", { "class": "new", "data-event": m.event, "data-event-id": m.id });
    item.appendChild(el("time", { datetime: m.at }, isNaN(at) ? "" : stamp(at)));
    item.appendChild(el("span", { "class": "ago", "data-at": m.at }, isNaN(at) ? "" : " · " + ago(at)));
    item.appendChild(document.createTextNode(" "));
    item.appendChild(el("span", { "class": "text" }, m.text || m.event));
    feed.insertBefore(item, feed.firstChild);
    while (feed.children.length > 200) feed.removeChild(feed.lastChild);
  }

  // --- board ---------------------------------------------------------------------------------------
  function buildCard(p) {
    var card = el("article", { "class": "card", "data-ticket-id": p.ticket_id });
    var row = el("div", { "class": "row" });
    row.appendChild(el("a", { "class": "tid", href: cfg.ticket_url + p.ticket_id + "/" }, p.ticket_id));
    row.appendChild(el("span", { "class": "badge prio" }));
    row.appendChild(el("span", { "class": "badge blocked" }, "blocked"));
    card.appendChild(row);
    card.appendChild(el("div", { "class": "title" }));
    var meta = el("div", { "class": "meta" });
    meta.appendChild(el("span", { "class": "type" }));
    meta.appendChild(el("span", { "class": "assignee" }));
    card.appendChild(meta);
    return card;
  }

  function fillCard(card, p) {
    if (p.priority) {
      card.className = card.className.replace(/\bprio-\S+/g, "").trim() + " prio-" + p.priority;
      card.dataset.priority = p.priority;
      var prio = card.querySelector(".badge.prio");
      prio.textContent = p.priority;
      prio.className = "badge prio prio-" + p.priority;
    }
    if (p.title) { card.querySelector(".title").textContent = p.title; card.dataset.title = p.title.toLowerCase(); }
    if (p.ticket_type) { card.querySelector(".type").textContent = p.ticket_type; card.dataset.type = p.ticket_type; }
    if (p.status) {  // ticket summaries omit empty keys: a missing assignee/blocked means none
      card.querySelector(".assignee").textContent = p.assigned_agent_id || "unassigned";
      card.dataset.assignee = p.assigned_agent_id || "";
      card.querySelector(".badge.blocked").hidden = !p.blocked;
      card.dataset.blocked = p.blocked ? "1" : "0";
    }
  }

  function recount() {
    var total = 0;
    document.querySelectorAll(".column").forEach(function (col) {
      var n = col.querySelectorAll(".card").length;
      total += n;
      col.querySelectorAll(".count").forEach(function (count) { count.textContent = n; });
    });
    var heading = document.getElementById("ticket-total");
    if (heading) heading.textContent = total + (total === 1 ? " ticket" : " tickets");
  }

  function placeCard(card, status) {
    var column = document.querySelector('.column[data-status="' + status + '"] .cards');
    if (!column) return;
    var rank = PRIORITY_RANK[card.dataset.priority] || 0;
    var before = null;
    Array.prototype.some.call(column.children, function (other) {
      if (other !== card && (PRIORITY_RANK[other.dataset.priority] || 0) < rank) { before = other; return true; }
      return false;
    });
    if (card.parentNode !== column || before) column.insertBefore(card, before);
    card.dataset.status = status;
    card.classList.remove("moved"); void card.offsetWidth; card.classList.add("moved");
    recount();
    applyFilter();
  }

  function updateBoard(m) {
    var p = m.payload || {};
    if (m.event.indexOf("ticket.") !== 0 || !p.ticket_id || m.event === "ticket.commented") return;
    var card = document.querySelector('.card[data-ticket-id="' + p.ticket_id + '"]');
    if (!card) {
      if (!p.status || !p.title) return;
      card = buildCard(p);
    }
    fillCard(card, p);
    if (p.status && (card.dataset.status !== p.status || !card.parentNode)) placeCard(card, p.status);
    else applyFilter();
  }

  var FILTERS = ["q", "assignee", "priority", "type", "blocked"];
  function filterValues() {
    var values = {};
    FILTERS.forEach(function (name) {
      var input = document.getElementById("filter-" + name);
      if (input && input.value) values[name] = input.value.trim();
    });
    return values;
  }
  function applyFilter() {
    var form = document.getElementById("board-filter");
    if (!form) return;
    var f = filterValues();
    document.querySelectorAll(".board .card").forEach(function (card) {
      var text = (card.dataset.title || "") + " " + (card.dataset.ticketId || "").toLowerCase();
      var show = (!f.q || text.indexOf(f.q.toLowerCase()) >= 0) &&
        (!f.assignee || (f.assignee === "none" ? !card.dataset.assignee : card.dataset.assignee === f.assignee)) &&
        (!f.priority || card.dataset.priority === f.priority) &&
        (!f.type || card.dataset.type === f.type) &&
        (!f.blocked || card.dataset.blocked === (f.blocked === "yes" ? "1" : "0"));
      card.hidden = !show;
    });
    var shown = document.querySelectorAll(".board .card:not([hidden])").length;
    var note = document.getElementById("filter-shown");
    if (note) note.textContent = Object.keys(f).length ? shown + " shown" : "";
  }
  function initFilter() {
    var form = document.getElementById("board-filter");
    if (!form) return;
    var params = new URLSearchParams(location.search);
    FILTERS.forEach(function (name) {
      var input = document.getElementById("filter-" + name);
      if (input && params.get(name)) input.value = params.get(name);
    });
    function onChange() {
      var f = filterValues(), query = new URLSearchParams(f).toString();
      history.replaceState(null, "", location.pathname + (query ? "?" + query : ""));
      applyFilter();
    }
    form.addEventListener("input", onChange);
    form.addEventListener("change", onChange);
    form.addEventListener("submit", function (e) { e.preventDefault(); onChange(); });
    form.addEventListener("reset", function () { setTimeout(onChange, 0); });
    applyFilter();
  }

  // --- swap server-rendered sections (ticket and agents pages; the board's side panels) -----------
  var BOARD_PANEL_EVENTS = /^(ticket\.(created|resolved|blocked|unblocked)|discovery\.recorded)$/;
  var refreshTimer = null, refreshing = false, refreshAgain = false;
  function refreshSections() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(function () {
      refreshTimer = null;
      if (refreshing) { refreshAgain = true; return; }
      refreshing = true;
      fetch(location.pathname, { credentials: "same-origin", headers: { "X-Requested-With": "live-refresh" } })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (!html) return;
          var fresh = new DOMParser().parseFromString(html, "text/html");
          fresh.querySelectorAll("[data-live-section][id]").forEach(function (section) {
            var current = document.getElementById(section.id);
            if (current) current.replaceWith(document.importNode(section, true));
          });
          document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
        })
        .catch(function () {})
        .then(function () {
          refreshing = false;
          if (refreshAgain) { refreshAgain = false; refreshSections(); }
        });
    }, 150);
  }

  function apply(m) {
    if (m.id) {
      if (seen[m.id]) return;
      seen[m.id] = true;
      if (m.id > lastId) lastId = m.id;
    }
    if (cfg.mode === "board") {
      updateBoard(m);
      if (BOARD_PANEL_EVENTS.test(m.event)) refreshSections();  // At risk, Recurring discovery patterns
    } else refreshSections();
    addFeed(m);
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + cfg.ws_path + "&since=" + lastId);
    window.omoiDashboard.socket = socket;
    setState("connecting");
    socket.onopen = function () {
      pingTimer = setInterval(function () { socket.send(JSON.stringify({ type: "ping" })); }, 25000);
    };
    socket.onmessage = function (e) {
      var m = JSON.parse(e.data);
      if (m.type === "subscribed") { retries = 0; setState("live"); return; }
      if (m.type === "error") { setState("offline", m.message); return; }
      if (m.type !== "omoi.event") return;
      apply(m);
    };
    socket.onclose = function (e) {
      clearInterval(pingTimer);
      if (FINAL_CODES.indexOf(e.code) >= 0 && e.code !== 4401) { setState("offline", liveBadge && liveBadge.title); return; }
      setState("offline");
      if (e.code === 4401 || paused) return;  // session ended: a reload leads to the login page
      setTimeout(connect, Math.min(30000, 1000 * Math.pow(2, retries++)));
    };
  }

  document.querySelectorAll("#feed [data-event-id]").forEach(function (li) { seen[li.dataset.eventId] = true; });
  initFilter();
  refreshAgo();
  setInterval(refreshAgo, 30000);
  connect();
})();
