/*! weir.js: the first-party event snippet, served by weir ingest at /v1/weir.js.
 *
 *   <script src="https://ingest.example.com/v1/weir.js" data-write-key="KEY" defer></script>
 *   weir.track("cart.add", { sku: "X1" });
 *   <button data-weir-event="ui.buy_click">Buy</button>   (tracked on click)
 *
 * Events are batched (20 at most, or every 2 s), retried with backoff on
 * network errors, 429 and 5xx (the same event ids, so a retry never counts
 * twice), and what is left when the page is hidden goes out with
 * navigator.sendBeacon. An anonymous id is kept in localStorage.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  var key = script && script.getAttribute("data-write-key");
  var endpoint = (script && script.getAttribute("data-endpoint")) || (script ? new URL(script.src).origin : "");
  var MAX_BATCH = 20, FLUSH_MS = 2000, MAX_QUEUE = 1000, MAX_BACKOFF_MS = 60000;
  var queue = [], timer = null, backoff = 1000, sending = false;

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(16) + "-" + Math.random().toString(16).slice(2);
  }

  function anonymousId() {
    try {
      var id = localStorage.getItem("weir_anonymous_id");
      if (!id) { id = uuid(); localStorage.setItem("weir_anonymous_id", id); }
      return id;
    } catch (e) {
      return undefined; // storage disabled: events still go, without the pseudo id
    }
  }
  var anonymous = anonymousId();

  function track(name, properties) {
    queue.push({
      event_id: uuid(), name: name, timestamp: Date.now(), anonymous_id: anonymous, channel: "web",
      properties: properties || {},
      context: { url: location.href, referrer: document.referrer || undefined, user_agent: navigator.userAgent, locale: navigator.language }
    });
    // Bounded: a page offline for long drops its oldest events, never the tab's memory.
    if (queue.length > MAX_QUEUE) queue.splice(0, queue.length - MAX_QUEUE);
    if (queue.length >= MAX_BATCH) flush(); else schedule(FLUSH_MS);
  }

  function schedule(ms) {
    if (!timer) timer = setTimeout(function () { timer = null; flush(); }, ms);
  }

  function body(batch) {
    var now = Date.now(); // sent_at lets the server correct this device's clock
    return JSON.stringify({ events: batch.map(function (e) { e.sent_at = now; return e; }) });
  }

  function flush() {
    if (sending || !queue.length) return;
    sending = true;
    var batch = queue.splice(0, MAX_BATCH);
    fetch(endpoint + "/v1/events/batch", {
      method: "POST", keepalive: true, body: body(batch),
      headers: { "Content-Type": "application/json", "Authorization": "Bearer " + key }
    }).then(function (r) {
      if (r.status === 429 || r.status >= 500) throw new Error("retry");
      backoff = 1000; // a 4xx other than 429 is final: retrying would not fix the payload
    }).catch(function () {
      queue = batch.concat(queue);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }).then(function () {
      sending = false;
      if (queue.length) schedule(backoff === 1000 ? 0 : backoff);
    });
  }

  function beacon() {
    if (!queue.length) return;
    if (!navigator.sendBeacon) return flush();
    // sendBeacon cannot set headers: the key rides in the query, the body as text/plain.
    var url = endpoint + "/v1/events/batch?write_key=" + encodeURIComponent(key);
    while (queue.length) navigator.sendBeacon(url, body(queue.splice(0, MAX_BATCH)));
  }

  document.addEventListener("visibilitychange", function () { if (document.visibilityState === "hidden") beacon(); });
  window.addEventListener("pagehide", beacon);
  document.addEventListener("click", function (e) {
    var el = e.target && e.target.closest && e.target.closest("[data-weir-event]");
    if (el) track(el.getAttribute("data-weir-event"), { text: (el.textContent || "").trim().slice(0, 100) });
  });
  window.weir = { track: track, flush: flush, anonymousId: anonymous };
})();
