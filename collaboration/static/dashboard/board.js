/* Live dashboard updates over /ws/dashboard/: moves ticket cards between status columns and prepends
   activity to the feed, without reloading. Config comes from the #dashboard-config JSON script tag. */
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("dashboard-config").textContent);
  var liveBadge = document.getElementById("live");
  var PRIORITY_RANK = { critical: 4, high: 3, medium: 2, low: 1 };
  var FINAL_CODES = [4400, 4401, 4403, 4404];
  var retries = 0, pingTimer = null;

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

  function describe(m) {
    var p = m.payload || {}, t = m.ticket || p.ticket_id;
    switch (m.event) {
      case "message.sent":
        return p.from + " → " + (p.to === "*" ? "everyone" : p.to) + " (" + (p.message_type || "info") + "): " + (p.message || "");
      case "handoff.requested":
        return p.from_agent_id + " asks " + p.to_agent_id + " to take " + p.task_id + ": " + (p.reason || "");
      case "handoff.accepted": case "handoff.declined":
        return p.to_agent_id + " " + m.event.split(".")[1] + " hand-off of " + p.task_id + " from " + p.from_agent_id;
      case "discovery.recorded":
        return (p.recorded_by || "an agent") + " found " + p.discovery_type + ": " + (p.description || "");
      case "ticket.created": return t + " created: " + (p.title || "");
      case "ticket.status_changed": return t + " " + (p.old_status || "?") + " → " + p.status + (p.by ? " by " + p.by : "");
      case "ticket.resolved": return t + " resolved" + (p.by ? " by " + p.by : "");
      case "ticket.unblocked": return t + " unblocked" + (p.unblocked_by ? " (" + p.unblocked_by + " done)" : "");
      case "ticket.blocked": return t + " blocked" + (p.blocked_by ? " by " + p.blocked_by : "");
      case "ticket.commented": return t + " comment by " + (p.author || "?") + ": " + (p.text || "");
      case "ticket.updated": return t + " updated (" + (p.changed || []).join(", ") + ")";
      case "agent.event": return p.agent_id + ": " + p.event_type + (p.task_id ? " on " + p.task_id : "");
    }
    if (m.event.indexOf("task.") === 0)
      return p.task_id + " " + m.event.split(".")[1].replace("_", " ") + ": " + p.status + (p.claimed_by ? " (" + p.claimed_by + ")" : "");
    if (m.event.indexOf("sandbox.") === 0) return "sandbox " + m.event.split(".")[1] + " for " + (p.agent_id || "?");
    return m.event + " " + (t || "");
  }

  function addFeed(m) {
    var feed = document.getElementById("feed");
    if (!feed) return;
    var empty = feed.querySelector(".empty");
    if (empty) empty.remove();
    var at = new Date(m.at);
    var item = el("li", { "class": "new", "data-event": m.event });
    // the server renders times in UTC (TIME_ZONE); live items match them
    item.appendChild(el("time", { datetime: m.at, title: at.toLocaleString() }, isNaN(at) ? "" : at.toISOString().substr(11, 8)));
    item.appendChild(el("span", { "class": "ev" }, m.event));
    item.appendChild(document.createTextNode(describe(m)));
    feed.insertBefore(item, feed.firstChild);
    while (feed.children.length > 200) feed.removeChild(feed.lastChild);
  }

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
    if (p.title) card.querySelector(".title").textContent = p.title;
    if (p.ticket_type) card.querySelector(".type").textContent = p.ticket_type;
    if (p.status) {  // ticket summaries omit empty keys: a missing assignee/blocked means none
      card.querySelector(".assignee").textContent = p.assigned_agent_id || "unassigned";
      card.querySelector(".badge.blocked").hidden = !p.blocked;
      card.dataset.blocked = p.blocked ? "1" : "0";
    }
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
    document.querySelectorAll(".column").forEach(function (col) {
      var count = col.querySelector(".count");
      if (count) count.textContent = col.querySelectorAll(".card").length;
    });
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
  }

  function updateTicket(m) {
    var p = m.payload || {};
    if (p.ticket_id !== cfg.ticket_id) return;
    var status = document.getElementById("ticket-status");
    if (status && p.status) status.textContent = p.status;
    var blocked = document.getElementById("ticket-blocked");
    if (blocked && p.status) blocked.hidden = !p.blocked;
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + cfg.ws_path);
    setState("connecting");
    socket.onopen = function () {
      pingTimer = setInterval(function () { socket.send(JSON.stringify({ type: "ping" })); }, 25000);
    };
    socket.onmessage = function (e) {
      var m = JSON.parse(e.data);
      if (m.type === "subscribed") { retries = 0; setState("live"); return; }
      if (m.type === "error") { setState("offline", m.message); return; }
      if (m.type !== "omoi.event") return;
      if (cfg.mode === "board") updateBoard(m);
      if (cfg.mode === "ticket") updateTicket(m);
      addFeed(m);
    };
    socket.onclose = function (e) {
      clearInterval(pingTimer);
      if (FINAL_CODES.indexOf(e.code) >= 0) { setState("offline", liveBadge && liveBadge.title); return; }
      setState("offline");
      setTimeout(connect, Math.min(30000, 1000 * Math.pow(2, retries++)));
    };
  }

  connect();
})();
