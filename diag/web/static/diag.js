/* diag dashboard: live rows over Server-Sent Events and uPlot charts.
   Log data is untrusted (request ids are client-chosen): it only ever reaches the page through
   textContent and setAttribute, never innerHTML. */
(function () {
  "use strict";

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function num(v) { return v === null || v === undefined ? "" : String(Math.round(v * 1000) / 1000); }
  /* The server's `when` filter: its local time as the row's ISO text says it (2026-11-22T18:27:00+08:00
     → 2026-11-22 18:27:00), not this browser's time zone, so live rows read like the rendered ones. */
  function when(iso) {
    return typeof iso === "string" && iso.length >= 19 ? iso.slice(0, 10) + " " + iso.slice(11, 19) : "";
  }
  /* The charts' times on the server's clock too: a Date whose local fields read the server's wall time
     (the page carries the server's UTC offset), for uPlot's ticks and the legend in the pages' form. */
  var OFFSET = Number(document.body.getAttribute("data-utc-offset")) || 0;
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function serverClock(ts) {
    var d = new Date(ts * 1000);
    return new Date(d.getTime() + OFFSET * 1000 + d.getTimezoneOffset() * 60000);
  }
  function clockText(ts) {
    if (typeof ts !== "number") return "";
    var d = serverClock(ts);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + pad(d.getHours()) + ":" +
      pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function badge(text, cls) { return el("span", text, "badge " + cls); }

  /* One row, the same cells as the server's trace_row macro. */
  function traceRow(r) {
    var tr = el("tr");
    tr.appendChild(el("td", when(r.time), "time"));
    var td = el("td"), a = el("a", r.id, "rid");
    a.setAttribute("href", "/trace/" + encodeURIComponent(r.id));
    td.appendChild(a); tr.appendChild(td);
    td = el("td"); td.appendChild(badge(r.status, "st-" + String(r.status).replace(/[^a-z_]/g, "")));
    if (r.stuck) { td.appendChild(document.createTextNode(" ")); td.appendChild(badge("stuck", "st-failed")); }
    tr.appendChild(td);
    tr.appendChild(el("td", r.model || ""));
    tr.appendChild(el("td", r.http_status || ""));
    tr.appendChild(el("td", num(r.latency_s), "n"));
    tr.appendChild(el("td", num(r.ttft_s), "n"));
    tr.appendChild(el("td", (r.prompt_tokens === null ? "" : r.prompt_tokens) + (r.output_tokens === null ? "" : " / " + r.output_tokens), "n"));
    tr.appendChild(el("td", r.images === null ? "" : r.images, "n"));
    td = el("td", null, "n"); if (r.findings) td.appendChild(badge(r.findings, "sev-warning")); tr.appendChild(td);
    tr.appendChild(el("td", r.client || ""));
    return tr;
  }

  function liveRequests(table) {
    var url = table.getAttribute("data-events");
    if (!url || !window.EventSource) return;
    var body = table.tBodies[0], rows = new Map(), state = document.getElementById("live-state");
    Array.prototype.forEach.call(body.rows, function (tr) {
      var a = tr.querySelector("a.rid"); if (a) rows.set(a.textContent, tr);
    });
    var es = new EventSource(url);
    es.addEventListener("hello", function () { if (state) state.textContent = "(live: new requests appear here)"; });
    es.addEventListener("traces", function (ev) {
      var list = JSON.parse(ev.data);  /* oldest first, in the list's order */
      list.forEach(function (r) {
        var tr = traceRow(r), old = rows.get(r.id);
        if (old) { body.replaceChild(tr, old); }
        else { tr.className = "fresh"; body.insertBefore(tr, body.firstChild); }
        rows.set(r.id, tr);
      });
      while (body.rows.length > 500) { var last = body.rows[body.rows.length - 1]; body.removeChild(last); }
      var empty = document.getElementById("empty"); if (empty) empty.hidden = true;
    });
    es.addEventListener("reload", function () { var n = document.getElementById("live-note"); if (n) n.hidden = false; });
    es.onerror = function () { if (state) state.textContent = "(live stream reconnecting…)"; };
  }

  var COLORS = { ok: "#1a7f37", failed: "#c62828", rejected: "#b26a00", aborted: "#e08a00", in_flight: "#2557d6", unknown: "#78909c" };

  function chart(div) {
    if (!window.uPlot) return;
    var src = document.getElementById(div.getAttribute("data-src"));
    if (!src) return;
    var data = JSON.parse(src.textContent), kind = div.getAttribute("data-chart");
    var width = Math.max(300, div.clientWidth || 600), series = [{ value: function (u, ts) { return clockText(ts); } }], cols = [data.ts];
    if (kind === "engine") {
      series.push({ label: "running", stroke: "#2557d6", width: 1.5 });
      series.push({ label: "waiting", stroke: "#c62828", width: 1.5 });
      series.push({ label: "KV cache %", stroke: "#1a7f37", width: 1, scale: "%" });
      cols.push(data.running, data.waiting, data.kv_usage);
    } else {
      Object.keys(data.by_status).forEach(function (st) {
        series.push({ label: st, stroke: COLORS[st] || "#555", width: 1.5 });
        cols.push(data.by_status[st]);
      });
    }
    var hhmm = function (u, splits) { return splits.map(function (ts) { return clockText(ts).slice(11, 16); }); };
    var axes = [{ values: hhmm }, { label: kind === "engine" ? "requests" : "requests/min" }];
    if (kind === "engine") axes.push({ scale: "%", side: 1, grid: { show: false } });
    new window.uPlot({ width: width, height: 160, series: series, axes: axes, tzDate: serverClock,
                       scales: { "%": { range: [0, 100] } } }, cols, div);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var t = document.getElementById("requests");
    if (t) liveRequests(t);
    Array.prototype.forEach.call(document.querySelectorAll("[data-chart]"), chart);
  });
})();
