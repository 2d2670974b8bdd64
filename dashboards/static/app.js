// Glucohub dashboard: live updates over /ws, one-click acknowledge, opt-in sound/notifications.
// Dependency-free; the server renders every fragment, this file only fetches and swaps them.
"use strict";
(function () {
  const body = document.body;
  const live = body.dataset.live || "";
  const patient = body.dataset.patient || "";
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  const fragments = {
    triage: ["/partials/triage", "triage-rows"],
    alerts: ["/partials/alerts", "alert-rows"],
    patient: ["/patients/" + encodeURIComponent(patient) + "/live", "patient-live"],
    mine: ["/me/live", "my-live"],
  };
  // A refresh comes 250 ms after the first message that asks for it, whatever follows, and
  // one request at a time (a message during it asks for one more after it): a clinician who
  // may see a whole clinic gets a message every few milliseconds, so a refresh that waited
  // for a pause would never come, and overlapping ones could land out of order.
  let timer = null;
  let loading = false;
  let again = false;

  function refresh() {
    if (!fragments[live]) return;
    if (loading) { again = true; return; }
    if (timer === null) timer = setTimeout(load, 250);
  }

  async function load() {
    timer = null;
    loading = true;
    try {
      const spec = fragments[live];
      // The triage list keeps its page, search and filters (the page's own query string).
      const url = live === "triage" ? spec[0] + window.location.search : spec[0];
      const response = await fetch(url, { credentials: "same-origin" });
      if (response.status === 401 || response.redirected) { window.location = "/login"; return; }
      if (!response.ok) return;
      const target = document.getElementById(spec[1]);
      if (target) {
        target.innerHTML = await response.text();
        body.dataset.refreshed = String(Number(body.dataset.refreshed || "0") + 1);
      }
    } finally {
      loading = false;
      if (again) { again = false; refresh(); }
    }
  }

  function beep() {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return;
    const ctx = new Ctx();
    const osc = ctx.createOscillator();
    osc.frequency.value = 880;
    osc.connect(ctx.destination);
    osc.start();
    osc.stop(ctx.currentTime + 0.4);
  }

  function announce(alert) {
    if (alert.state !== "raised" || (alert.level !== "urgent" && alert.level !== "escalated")) return;
    const sound = document.getElementById("sound");
    const notify = document.getElementById("notify");
    if (sound && sound.checked) beep();
    if (notify && notify.checked && "Notification" in window && Notification.permission === "granted") {
      new Notification("Glucohub: " + alert.kind.replace(/_/g, " "), { body: alert.text || alert.message });
    }
  }

  // New batches are announced, not reloaded: a page that reloads every few seconds cannot
  // be read. The notice links to a reload.
  let newBatches = 0;
  function announceBatch(event) {
    const news = document.getElementById("ledger-news");
    if (!news) return;
    newBatches += 1;
    news.hidden = false;
    news.textContent = newBatches + " new batch(es) sealed, latest #" + event.seq +
      ", tree size " + event.tree_size + ". ";
    const link = document.createElement("a");
    link.href = "/ledger";
    link.textContent = "Reload";
    news.appendChild(link);
  }

  function connect(delay) {
    if (!live) return;
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + window.location.host + "/ws");
    ws.onopen = function () { delay = 1000; body.dataset.ws = "open"; };
    ws.onmessage = function (msg) {
      const event = JSON.parse(msg.data);
      if (event.type === "alert") announce(event.alert);
      if (event.type === "batch") { if (live === "ledger") announceBatch(event); return; }
      const pid = event.patient_id || (event.alert && event.alert.patient_id);
      if ((live === "patient" || live === "mine") && pid !== patient) return;
      refresh();
    };
    ws.onclose = function () {
      body.dataset.ws = "closed";
      setTimeout(function () { connect(Math.min(delay * 2, 30000)); }, delay);
    };
  }

  // One-click acknowledge without a page reload; the form still works without JavaScript.
  document.addEventListener("click", async function (e) {
    const button = e.target.closest("button[data-ack]");
    if (!button) return;
    e.preventDefault();
    button.disabled = true;
    const response = await fetch("/alerts/" + encodeURIComponent(button.dataset.ack) + "/ack", {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Accept": "application/json" },
    });
    if (response.ok) { button.textContent = "Acknowledged"; refresh(); } else { button.disabled = false; }
  });

  const notify = document.getElementById("notify");
  if (notify) {
    notify.addEventListener("change", function () {
      if (notify.checked && "Notification" in window && Notification.permission === "default") {
        Notification.requestPermission();
      }
    });
  }
  connect(1000);
})();
