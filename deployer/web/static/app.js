/* deployer dashboard: live pages from the SSE stream, commands behind a confirmation.
   Plain JavaScript, no build step, no third-party code. */
"use strict";
const Deployer = (() => {
  const $ = (sel) => document.querySelector(sel);
  const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const enc = encodeURIComponent;

  function toast(text, bad) {
    const t = $("#toast");
    t.textContent = text;
    t.className = bad ? "show bad" : "show";
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (t.className = ""), 6000);
  }

  async function getJSON(url) {
    const res = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
    if (!res.ok) throw new Error(`${url}: ${res.status}`);
    return res.json();
  }

  /* Calls `refresh` at most every `ms`, and once more after the last event of a burst. */
  function throttled(refresh, ms) {
    let busy = false, again = false;
    const run = async () => {
      if (busy) { again = true; return; }
      busy = true;
      try { await refresh(); } catch (e) { console.warn(e); }
      setTimeout(() => { busy = false; if (again) { again = false; run(); } }, ms);
    };
    return run;
  }

  function live(query, onEvent) {
    const dot = $("#live");
    const source = new EventSource(`/api/v1/events/stream?${query}`);
    source.onopen = () => { dot.className = "live on"; onEvent(null); };
    source.onerror = () => { dot.className = "live off"; };
    source.onmessage = (e) => onEvent(e); /* every event is a `message`; its type is in the data */
    window.addEventListener("beforeunload", () => source.close());
    return source;
  }

  /* Buttons for the commands legal right now (the read model's `commands`); re-drawn on
     every refresh, so a button never offers what the current state would refuse. */
  function renderActions(box, commands, make) {
    const html = commands.map(make).join("");
    if (box.dataset.drawn !== html) { box.innerHTML = html; box.dataset.drawn = html; }
  }

  function bindCommands(after) {
    const dialog = $("#confirm");
    let pending = null;
    document.addEventListener("click", (e) => {
      const btn = e.target.closest("button.cmd");
      if (!btn) return;
      pending = btn;
      const c = btn.dataset.command;
      const wave = btn.dataset.wave !== undefined && btn.dataset.wave !== "" ? ` wave ${btn.dataset.wave}` : "";
      $("#confirm-title").textContent = `${c[0].toUpperCase()}${c.slice(1)}?`;
      $("#confirm-text").textContent = `${c}${wave} of ${btn.dataset.what}. This is recorded with your reason.`;
      $("#confirm-reason").value = "";
      $("#confirm-budget-row").hidden = c !== "budget";
      $("#confirm-budget").value = "";
      $("#confirm-all-row").hidden = c !== "promote";
      $("#confirm-all").checked = false;
      dialog.showModal();
    });
    dialog.addEventListener("close", async () => {
      const btn = pending;
      pending = null;
      if (!btn || dialog.returnValue !== "ok") return;
      const c = btn.dataset.command;
      const body = {reason: $("#confirm-reason").value || null, by: "dashboard"};
      if (btn.dataset.wave !== undefined && btn.dataset.wave !== "") body.wave = Number(btn.dataset.wave);
      if (c === "budget") {
        const v = $("#confirm-budget").value.trim();
        body.max = /^\d+$/.test(v) ? Number(v) : v;
      }
      if (c === "promote") body.all = $("#confirm-all").checked;
      const res = await fetch(btn.dataset.url, {method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
      const answer = await res.json().catch(() => ({message: res.statusText}));
      toast(`${answer.code || res.status}: ${answer.message || ""}`, !res.ok);
      after();
    });
  }

  const clock = (iso) => iso ? new Date(iso).toLocaleTimeString() : "—";

  /* The strategy panel: where the rollout is, the bake countdown, budget, gate, window. */
  function rollout(plan) {
    if (!$("#strategy-box")) return;
    $("#wave-now").textContent = `wave ${plan.wave}`;
    const ws = $("#wave-state");
    ws.textContent = plan.waveState;
    ws.className = `status s-${plan.waveState}`;
    $("#bake").dataset.until = plan.bakeUntil || "";
    tick();
    const b = plan.budget;
    const where = b && b.exceededWave !== undefined ? ` in wave ${b.exceededWave} (${b.exceededUsed} / ${b.exceededMax})` : "";
    $("#budget").textContent = b ? `${b.used} / ${b.max} failed (${b.scope}, on exceed ${b.onExceed})${b.exceeded ? " — exceeded" + where : ""}` : "none";
    $("#budget").classList.toggle("err", !!(b && b.exceeded));
    const g = plan.gate;
    $("#gate").textContent = !g ? "none" : g.status === undefined
      ? `${g.name}${g.waiting ? ": asking" : ""}`
      : `${g.name}: held — ${g.status}${g.answer ? ` “${g.answer}”` : ""}; asked again at ${clock(g.nextCheckAt)} (${g.refusals} refusal${g.refusals === 1 ? "" : "s"})`;
    $("#window").textContent = plan.windowOpensAt ? `closed: opens at ${clock(plan.windowOpensAt)}` : "—";
    $("#stop-reason").textContent = plan.stopReason || "—";
  }

  /* The bake countdown, every second, from the wave's bakeUntil. */
  function tick() {
    const el = $("#bake");
    if (!el) return;
    const until = el.dataset.until ? Date.parse(el.dataset.until) : NaN;
    if (isNaN(until)) { el.textContent = "—"; return; }
    const left = Math.max(0, Math.round((until - Date.now()) / 1000));
    const m = Math.floor(left / 60), sec = String(left % 60).padStart(2, "0");
    el.textContent = `${m}:${sec} left (until ${clock(el.dataset.until)})`;
  }

  function wavesTable(plan) {
    const box = $("#waves-box");
    if (!plan.waves || !plan.waves.length) return;
    box.hidden = false;
    const who = (w) => [w.approvedBy ? `approved: ${w.approvedBy}` : "", w.promotedBy ? `promoted: ${w.promotedBy}` : ""].filter(Boolean).join(", ");
    $("#waves tbody").innerHTML = plan.waves.map((w) =>
      `<tr data-wave="${esc(w.index)}"><td><a href="#" class="wave-link" data-wave="${esc(w.index)}">${esc(w.index)}</a></td><td><span class="status s-${esc(w.state)}">${esc(w.state)}</span></td><td class="num">${esc(w.tenants)}</td><td class="num">${esc(w.done)}</td><td class="num">${esc(w.failed)}</td>` +
      `<td class="time">${esc(clock(w.startedAt))}</td><td class="time">${esc(clock(w.endedAt))}</td><td>${esc(who(w))}</td></tr>`).join("");
  }

  function counts(plan) {
    document.querySelectorAll(".count").forEach((el) => {
      const n = plan.counts[el.dataset.status] || 0;
      el.querySelector(".n").textContent = n;
      el.classList.toggle("zero", n === 0);
    });
    const st = $("#plan-status");
    st.textContent = plan.status;
    st.className = `status s-${plan.status}`;
    $("#plan-updated").textContent = plan.updatedAt;
    $("#in-progress").textContent = plan.commandInProgress ? ` · ${plan.commandInProgress} still working through its tasks` : "";
    const bar = $("#bar");
    bar.innerHTML = Object.entries(plan.counts).map(([k, v]) =>
      `<span class="s-${esc(k)}" style="width:${(100 * v / Math.max(1, plan.total)).toFixed(3)}%" title="${esc(k)} ${v}"></span>`).join("");
    wavesTable(plan);
    rollout(plan);
  }

  function planPage(planId, flowerSearch, labels) {
    const state = {cursor: null, stack: [], status: "", q: "", wave: ""};
    const waves = !!$("#f-wave");
    const row = (t) => {
      const err = t.failure ? `<span class="err">${esc(t.failure.error)}</span>` : esc(t.progress || "");
      const stage = t.stageName ? `${esc(t.stageName)} <small>${(t.stageIndex ?? 0) + 1}/${esc(t.totalStages)}</small>` : "";
      return `<tr data-tenant="${esc(t.tenantId)}"><td><a href="/plans/${enc(planId)}/tenants/${enc(t.tenantId)}">${esc(t.tenantId)}</a></td>` +
        (waves ? `<td class="num wave">${esc(t.wave ?? "")}</td>` : "") +
        `<td><span class="status s-${esc(t.status)}">${esc(t.status)}</span></td><td>${stage}</td><td class="msg">${err}</td>` +
        `<td class="time">${esc(t.updatedAt || "")}</td><td><a class="flower" target="_blank" rel="noopener" href="${esc(flowerSearch + enc(t.tenantId))}" title="this tenant's stage tasks in Flower">Flower ↗</a></td></tr>`;
    };
    const button = (plan) => (c) => {
      const wave = c === "approve" || c === "promote" ? ` data-wave="${esc(plan.wave)}"` : "";
      return `<button class="cmd cmd-${esc(c)}" data-command="${esc(c)}" data-url="/api/v1/plans/${enc(planId)}/${esc(c)}" data-what="plan ${esc(planId)}"${wave}>${esc(labels[c] || c)}</button>`;
    };
    async function table() {
      const p = new URLSearchParams({limit: "50"});
      if (state.cursor) p.set("cursor", state.cursor);
      if (state.status) p.set("status", state.status);
      if (state.q) p.set("q", state.q);
      if (state.wave !== "") p.set("wave", state.wave);
      const page = await getJSON(`/api/v1/plans/${enc(planId)}/tasks?${p}`);
      const cols = waves ? 7 : 6;
      $("#tasks tbody").innerHTML = page.items.length ? page.items.map(row).join("")
        : `<tr><td colspan="${cols}" class="empty">no tenant here${page.nextCursor ? " (none in the part scanned: Next continues)" : ""}</td></tr>`;
      state.next = page.nextCursor;
      $("#p-next").disabled = !page.nextCursor;
      $("#p-prev").disabled = state.stack.length === 0;
      $("#p-first").disabled = !state.cursor;
      const from = Number(state.cursor || 0);
      $("#page-info").textContent = `positions ${from + 1}–${from + page.scanned} of ${page.total}`;
    }
    async function refresh() {
      const plan = await getJSON(`/api/v1/plans/${enc(planId)}?sample=0`);
      counts(plan);
      renderActions($("#actions"), plan.commands || [], button(plan));
      await table();
    }
    const go = throttled(refresh, 400);
    const restart = () => { state.cursor = null; state.stack = []; go(); };
    $("#f-status").addEventListener("change", (e) => { state.status = e.target.value; restart(); });
    if (waves) $("#f-wave").addEventListener("change", (e) => { state.wave = e.target.value; restart(); });
    document.addEventListener("click", (e) => {
      const link = e.target.closest("a.wave-link");
      if (!link || !waves) return;
      e.preventDefault();
      $("#f-wave").value = link.dataset.wave;
      state.wave = link.dataset.wave;
      restart();
    });
    let typing;
    $("#f-q").addEventListener("input", (e) => { clearTimeout(typing); typing = setTimeout(() => { state.q = e.target.value.trim(); restart(); }, 250); });
    $("#p-next").addEventListener("click", () => { state.stack.push(state.cursor); state.cursor = state.next; go(); });
    $("#p-prev").addEventListener("click", () => { state.cursor = state.stack.pop() || null; go(); });
    $("#p-first").addEventListener("click", () => { state.cursor = null; state.stack = []; go(); });
    bindCommands(go);
    setInterval(tick, 1000);
    go();
    live(`plan=${enc(planId)}`, go);
  }

  function taskPage(planId, tenantId, labels) {
    const button = (c) => `<button class="cmd cmd-${esc(c)}" data-command="${esc(c)}" data-url="/api/v1/plans/${enc(planId)}/tenants/${enc(tenantId)}/${esc(c)}" data-what="tenant ${esc(tenantId)} in plan ${esc(planId)}">${esc(labels[c] || c)}</button>`;
    async function refresh() {
      const t = await getJSON(`/api/v1/plans/${enc(planId)}/tenants/${enc(tenantId)}`);
      renderActions($("#actions"), t.commands || [], button);
      const st = $("#task-status");
      st.textContent = t.status;
      st.className = `status s-${t.status}`;
      $("#progress").textContent = t.progress || "—";
      const f = $("#failure");
      f.hidden = !t.failure;
      if (t.failure) {
        $("#failure-stage").textContent = t.failure.stage || "";
        $("#failure-at").textContent = t.failure.at || "";
        $("#failure-code").textContent = t.failure.code || "";
        $("#failure-error").textContent = t.failure.error;
      }
      $("#stages").innerHTML = t.stages.map((s) =>
        `<li class="stage st-${esc(s.state)}"><span class="name">${esc(s.name ?? s.index)}</span><span class="state">${esc(s.state)}</span></li>`).join("");
      document.querySelectorAll("#fields dd").forEach((dd) => { if (t[dd.dataset.field] !== undefined) dd.textContent = t[dd.dataset.field]; });
      const hash = Object.entries(t.hash || {});
      const none = t.hash === null ? "the config key holds another Redis type, not a hash" : "nothing written yet";
      $("#hash tbody").innerHTML = hash.length ? hash.map(([k, v]) => `<tr><th>${esc(k)}</th><td><code>${esc(v)}</code></td></tr>`).join("")
        : `<tr><td class="empty">${none}</td></tr>`;
      $("#context").textContent = JSON.stringify(t.context, null, 2);
    }
    const go = throttled(refresh, 300);
    bindCommands(go);
    live(`plan=${enc(planId)}&tenant=${enc(tenantId)}`, go);
  }

  function plansPage() {
    live("", throttled(async () => {
      const page = await getJSON("/api/v1/plans?limit=50");
      for (const p of page.items) {
        const tr = document.querySelector(`tr[data-plan="${CSS.escape(p.planId)}"]`);
        if (!tr) continue;
        tr.children[1].innerHTML = `<span class="status s-${esc(p.status)}">${esc(p.status)}</span>`;
        tr.children[3].innerHTML = Object.entries(p.counts).map(([k, v]) => `<span class="chip s-${esc(k)}">${esc(k)} ${v}</span>`).join("");
        tr.children[5].textContent = p.updatedAt;
      }
    }, 1000));
  }

  return {planPage, taskPage, plansPage};
})();
