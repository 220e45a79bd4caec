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

  function bindCommands(after) {
    const dialog = $("#confirm");
    let pending = null;
    document.querySelectorAll("button.cmd").forEach((btn) => {
      btn.addEventListener("click", () => {
        pending = btn;
        $("#confirm-title").textContent = `${btn.dataset.command[0].toUpperCase()}${btn.dataset.command.slice(1)}?`;
        $("#confirm-text").textContent = `${btn.dataset.command} ${btn.dataset.what}. This is recorded with your reason.`;
        $("#confirm-reason").value = "";
        dialog.showModal();
      });
    });
    dialog.addEventListener("close", async () => {
      const btn = pending;
      pending = null;
      if (!btn || dialog.returnValue !== "ok") return;
      const body = JSON.stringify({reason: $("#confirm-reason").value || null, by: "dashboard"});
      const post = (url) => fetch(url, {method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/json"}, body});
      const res = await post(btn.dataset.url);
      const answer = await res.json().catch(() => ({message: res.statusText}));
      toast(`${answer.code || res.status}: ${answer.message || ""}`, !res.ok);
      after();
    });
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
    const bar = $("#bar");
    bar.innerHTML = Object.entries(plan.counts).map(([k, v]) =>
      `<span class="s-${esc(k)}" style="width:${(100 * v / Math.max(1, plan.total)).toFixed(3)}%" title="${esc(k)} ${v}"></span>`).join("");
    const box = $("#waves-box");
    if (plan.waves && plan.waves.length) {
      box.hidden = false;
      $("#waves tbody").innerHTML = plan.waves.map((w) =>
        `<tr><td>${esc(w.index)}</td><td><span class="status s-${esc(w.state)}">${esc(w.state)}</span></td><td class="num">${esc(w.tenants)}</td><td class="num">${esc(w.done)}</td><td class="num">${esc(w.failed)}</td></tr>`).join("");
    }
  }

  function planPage(planId, flowerSearch) {
    const state = {cursor: null, stack: [], status: "", q: ""};
    const row = (t) => {
      const err = t.failure ? `<span class="err">${esc(t.failure.error)}</span>` : esc(t.progress || "");
      const stage = t.stageName ? `${esc(t.stageName)} <small>${(t.stageIndex ?? 0) + 1}/${esc(t.totalStages)}</small>` : "";
      return `<tr data-tenant="${esc(t.tenantId)}"><td><a href="/plans/${enc(planId)}/tenants/${enc(t.tenantId)}">${esc(t.tenantId)}</a></td>` +
        `<td><span class="status s-${esc(t.status)}">${esc(t.status)}</span></td><td>${stage}</td><td class="msg">${err}</td>` +
        `<td class="time">${esc(t.updatedAt || "")}</td><td><a class="flower" target="_blank" rel="noopener" href="${esc(flowerSearch + enc(t.tenantId))}" title="this tenant's stage tasks in Flower">Flower ↗</a></td></tr>`;
    };
    async function table() {
      const p = new URLSearchParams({limit: "50"});
      if (state.cursor) p.set("cursor", state.cursor);
      if (state.status) p.set("status", state.status);
      if (state.q) p.set("q", state.q);
      const page = await getJSON(`/api/v1/plans/${enc(planId)}/tasks?${p}`);
      $("#tasks tbody").innerHTML = page.items.length ? page.items.map(row).join("")
        : `<tr><td colspan="6" class="empty">no tenant here${page.nextCursor ? " (none in the part scanned: Next continues)" : ""}</td></tr>`;
      state.next = page.nextCursor;
      $("#p-next").disabled = !page.nextCursor;
      $("#p-prev").disabled = state.stack.length === 0;
      $("#p-first").disabled = !state.cursor;
      const from = Number(state.cursor || 0);
      $("#page-info").textContent = `positions ${from + 1}–${from + page.scanned} of ${page.total}`;
    }
    async function refresh() {
      counts(await getJSON(`/api/v1/plans/${enc(planId)}?sample=0`));
      await table();
    }
    const go = throttled(refresh, 400);
    $("#f-status").addEventListener("change", (e) => { state.status = e.target.value; state.cursor = null; state.stack = []; go(); });
    let typing;
    $("#f-q").addEventListener("input", (e) => { clearTimeout(typing); typing = setTimeout(() => { state.q = e.target.value.trim(); state.cursor = null; state.stack = []; go(); }, 250); });
    $("#p-next").addEventListener("click", () => { state.stack.push(state.cursor); state.cursor = state.next; go(); });
    $("#p-prev").addEventListener("click", () => { state.cursor = state.stack.pop() || null; go(); });
    $("#p-first").addEventListener("click", () => { state.cursor = null; state.stack = []; go(); });
    bindCommands(go);
    go();
    live(`plan=${enc(planId)}`, go);
  }

  function taskPage(planId, tenantId) {
    async function refresh() {
      const t = await getJSON(`/api/v1/plans/${enc(planId)}/tenants/${enc(tenantId)}`);
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
