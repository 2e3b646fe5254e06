// Operator panel: plain JavaScript, no build step, nothing loaded from outside the gateway.
//
// The page shows the snapshot the gateway pushes over Server-Sent Events and sends each tap as a
// command with a client-made id. It never decides anything itself: the gateway's answer (or its
// refusal, shown with the core's message) is the truth, and after any refusal the page fetches
// the current state again.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const ASSETS = document.body.dataset.assets;
  const LANGS = ['en', 'de'];
  const catalogs = {};
  let lang = localStorage.getItem('panel.lang') || document.body.dataset.language || 'en';
  if (!LANGS.includes(lang)) lang = 'en';

  let S = null; // the last snapshot
  let receivedAt = Date.now();
  let boot = null;
  let view = 'order';
  let busy = false;
  let sheet = null; // {kind, build}
  let es = null;
  let lastMessage = 0;
  let token = null; // supervisor session, in memory only: a reload logs out
  let supervisor = null;
  let supervisorUntil = 0;
  let sessionSeconds = 120;
  let toastTimer = null;
  const askedStops = new Set();
  // Command ids by content: a retry of the same tap after a lost answer reuses its id, so the
  // gateway recognises it. Kept briefly after success too, so that a second tap of a double tap
  // arriving just after the answer is recognised as well.
  const pendingIds = new Map();

  // ------------------------------------------------------------------ helpers

  function t(key, vars) {
    let text = (catalogs[lang] && catalogs[lang][key]) ?? (catalogs.en && catalogs.en[key]) ?? key;
    if (vars) text = text.replace(/\{(\w+)\}/g, (m, k) => (vars[k] ?? m));
    return text;
  }

  function has(key) {
    return Boolean((catalogs[lang] && catalogs[lang][key]) || (catalogs.en && catalogs.en[key]));
  }

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'onclick') el.addEventListener('click', v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat(3)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  function button(label, cls, onclick, attrs) {
    return h('button', {
      type: 'button',
      class: 'btn ' + (cls || ''),
      ...attrs,
      onclick: (e) => {
        e.preventDefault();
        // A tap queued on a button that a re-render already removed must not act.
        if (!e.currentTarget.isConnected || busy) return;
        onclick(e);
      },
    }, label);
  }

  function uuid() {
    // crypto.randomUUID needs a secure context; a panel opened over the plant LAN is plain http.
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const x = Array.from(b, (v) => v.toString(16).padStart(2, '0')).join('');
    return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
  }

  const locale = () => (lang === 'de' ? 'de-DE' : 'en-GB');
  const qty = (n) => new Intl.NumberFormat(locale(), { maximumFractionDigits: 3 }).format(n);

  function dur(seconds) {
    const s = Math.max(0, Math.round(seconds));
    const hh = Math.floor(s / 3600);
    const mm = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, '0');
    return hh ? `${hh}:${String(mm).padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
  }

  function time(iso) {
    if (!iso) return '';
    return new Date(iso).toLocaleTimeString(locale(), { hour: '2-digit', minute: '2-digit' });
  }

  function dateTime(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return d.toLocaleString(locale(), { day: '2-digit', month: '2-digit', hour: '2-digit', minute: '2-digit' });
  }

  const drift = () => (Date.now() - receivedAt) / 1000;
  const opName = (op) => op.material_text || op.material;
  const statusText = (s) => t('status.' + s);
  const groupText = (g) => (has('group.' + g) ? t('group.' + g) : g);
  // The reasons a supervisor picks for a hold (or types another); stored in the panel's language.
  const HOLD_REASONS = ['hold.quality', 'hold.material', 'hold.tool', 'hold.drawing'];
  // Why an operation is held or was cancelled, as the operator reads it; '' if no one said.
  function statusReason(op) {
    if (!op.status_reason) return '';
    if (op.status === 'held') return t('orders.held', { reason: op.status_reason });
    if (op.status === 'cancelled') return t('orders.cancelled', { reason: op.status_reason });
    return '';
  }

  // ------------------------------------------------------------------ messages

  function toast(kind, title, text, ms) {
    clearTimeout(toastTimer);
    const el = $('toast');
    el.className = 'toast ' + kind;
    $('toast-title').textContent = title;
    $('toast-text').textContent = text || '';
    el.hidden = false;
    if (ms) toastTimer = setTimeout(hideToast, ms);
  }

  function hideToast() {
    clearTimeout(toastTimer);
    $('toast').hidden = true;
  }

  function showError(status, data) {
    const code = data && data.code;
    const title = code && has('err.' + code) ? t('err.' + code) : t('err.generic');
    let text = data && data.message ? data.message : `HTTP ${status}`;
    if (code === 'pin_locked' && data.retry_after_s) text = data.message;
    toast('error', title, text, 0); // stays until closed or the next success
  }

  // ------------------------------------------------------------------ talking to the gateway

  async function send(path, body, opts) {
    const options = opts || {};
    if (busy) return { skipped: true };
    const key = path + '|' + JSON.stringify(body);
    let id = pendingIds.get(key);
    if (!id) {
      id = uuid();
      pendingIds.set(key, id);
    }
    busy = true;
    $('app').classList.add('busy');
    hideToast(); // the last message was about the last tap
    const headers = { 'Content-Type': 'application/json' };
    if (token) headers['X-Supervisor-Token'] = token;
    try {
      let resp;
      try {
        resp = await fetch(path, {
          method: 'POST',
          headers,
          body: JSON.stringify({ ...body, command_id: id }),
          cache: 'no-store',
        });
      } catch (err) {
        setConn(false);
        toast('error', t('err.title'), t('err.offline'), 0);
        return { offline: true }; // the id stays: tapping again is safe
      }
      let data = null;
      try {
        data = await resp.json();
      } catch (err) {
        data = null;
      }
      if (resp.ok) {
        setTimeout(() => {
          if (pendingIds.get(key) === id) pendingIds.delete(key);
        }, 1500);
        if (path.startsWith('/api/supervisor/')) touchSupervisor();
        if (data && data.state) onState(data.state);
        if (data && data.duplicate) toast('info', t('msg.already_done'), '', 4000);
        else toast('ok', t('msg.done'), '', 1500);
        return { done: true, data };
      }
      pendingIds.delete(key);
      if (resp.status === 401) dropSupervisor();
      if (!(options.quiet || []).includes(data && data.code)) showError(resp.status, data);
      refresh();
      return { done: false, status: resp.status, data };
    } finally {
      busy = false;
      $('app').classList.remove('busy');
    }
  }

  const command = (name, body, opts) => send('/api/commands/' + name, body, opts);
  const superCommand = (name, body) => send('/api/supervisor/' + name, body);

  async function refresh() {
    try {
      const resp = await fetch('/api/state', { cache: 'no-store' });
      if (resp.ok) onState(await resp.json());
    } catch (err) {
      setConn(false);
    }
  }

  function connect() {
    if (es) es.close();
    lastMessage = Date.now();
    es = new EventSource('/api/events');
    es.addEventListener('state', (e) => {
      lastMessage = Date.now();
      try {
        onState(JSON.parse(e.data));
      } catch (err) {
        console.error('bad state', err);
      }
    });
    es.onerror = () => setConn(false);
  }

  function setConn(online) {
    const el = $('conn');
    el.className = 'conn ' + (online ? 'online' : 'offline');
    el.dataset.state = online ? 'online' : 'offline';
    el.textContent = t(online ? 'conn.online' : 'conn.offline');
  }

  function onState(st) {
    if (st.assets !== ASSETS) {
      location.reload(); // the gateway serves other panel files now
      return;
    }
    if (boot !== null && st.boot !== boot) {
      dropSupervisor();
      toast('info', t('msg.restarted'), '', 6000);
    } else if (S && st.boot === S.boot && st.revision < S.revision) {
      return; // an older snapshot overtaken by a newer one
    }
    boot = st.boot;
    S = st;
    receivedAt = Date.now();
    setConn(true);
    renderAll();
    showScan(st.scan);
    askForReason();
  }

  // The barcode scanner's newest result, once: what it did, or why it was refused (red,
  // until closed). The first snapshot after loading only notes where the count stands; the
  // count starts again when the gateway does.
  let scanSeen = null;
  function showScan(scan) {
    const seq = scan ? scan.seq : 0;
    if (scanSeen === null || seq < scanSeen) {
      scanSeen = seq;
      return;
    }
    if (seq === scanSeen) return;
    scanSeen = seq;
    if (scan.ok) toast('ok', t('scan.taken', { code: scan.code }), scan.message, 3000);
    else toast('error', t('scan.refused', { code: scan.code }), scan.message, 0);
  }

  // ------------------------------------------------------------------ supervisor

  function touchSupervisor() {
    if (supervisor) supervisorUntil = Date.now() + sessionSeconds * 1000;
  }

  function dropSupervisor() {
    if (!token && !supervisor) return;
    token = null;
    supervisor = null;
    renderAll();
  }

  function withSupervisor(then) {
    if (token) return then();
    if (S && !S.supervisor_configured) {
      toast('info', t('super.not_configured'), '', 5000);
      return undefined;
    }
    return pinSheet(then);
  }

  async function logout() {
    const old = token;
    dropSupervisor();
    toast('info', t('msg.logged_out'), '', 2500);
    try {
      await fetch('/api/supervisor/logout', { method: 'POST', headers: { 'X-Supervisor-Token': old } });
    } catch (err) {
      /* the session ends by itself */
    }
  }

  // ------------------------------------------------------------------ rendering

  function applyStatic() {
    document.documentElement.lang = lang;
    for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
    $('btn-lang').textContent = t('lang.switch');
  }

  function renderAll() {
    applyStatic();
    if (!S) return;
    renderHeader();
    renderBanner();
    renderTabs();
    const el = $('view-' + view);
    const keep = el.scrollTop;
    el.replaceChildren();
    ({ order: renderOrder, orders: renderOrders, stops: renderStops, shift: renderShift, confirmations: renderConfirmations, help: renderHelp })[view](el);
    el.scrollTop = keep;
  }

  function renderHeader() {
    const active = S.active[0];
    $('wc').textContent = active ? `${S.work_center} · ${active.op}` : S.work_center;
    const sup = $('btn-super');
    sup.textContent = supervisor ? t('super.active', { who: supervisor }) : t('super.button');
    sup.className = 'btn hdr' + (supervisor ? ' super' : '');
  }

  function pendingStop() {
    if (!S) return null;
    if (S.stop && S.stop.reason_pending) return S.stop;
    return S.pending_stops[0] || null;
  }

  function renderBanner() {
    const el = $('state');
    el.className = 'state lamp-' + S.lamp;
    el.dataset.lamp = S.lamp;
    $('state-label').textContent = t(S.state_key);
    let detail = '';
    const stop = S.stop;
    const pending = pendingStop();
    if (stop) {
      detail = t('state.since', { time: time(stop.start), duration: dur(stop.duration_s + drift()) });
      if (stop.reason_text) detail += ' · ' + stop.reason_text;
      else if (stop.alarm) detail += ' · ' + t('stops.alarm', { alarm: stop.alarm });
    } else if (S.active[0]) {
      const op = S.active[0];
      detail = `${op.op} · ${opName(op)}`;
    } else if (S.help_calls.length) {
      detail = S.help_calls.map((c) => t('help.' + c.category)).join(', ');
    }
    if (pending) detail += (detail ? ' · ' : '') + t('state.tap_reason');
    // The disk below [retention] min_free_mb: counts are refused until space returns.
    if (S.disk_low) detail = t('state.disk_low') + (detail ? ' · ' + detail : '');
    el.classList.toggle('disk-low', Boolean(S.disk_low));
    $('state-detail').textContent = detail;
    // A maintenance interval is due (the andon's maintenance_due): said on every screen.
    const due = $('state-maint');
    due.hidden = !S.maintenance_due;
    due.textContent = t('state.maintenance_due');
  }

  function renderTabs() {
    const counts = {
      stops: S.pending_stops.length,
      confirmations: S.confirmations.filter((c) => c.status === 'rejected' && !c.reversed).length,
      help: S.help_calls.length,
      shift: dueIntervals().length,
    };
    for (const tab of document.querySelectorAll('.tab')) {
      const name = tab.dataset.view;
      tab.classList.toggle('on', name === view);
      tab.replaceChildren(t('tab.' + name));
      if (counts[name]) tab.append(h('span', { class: 'badge' }, counts[name]));
    }
  }

  // A share as a whole percent; null (undefined: nothing planned, nothing made) is a dash, never 0.
  const pct = (v) => (v === null || v === undefined ? '–' : `${Math.round(v * 100)} %`);
  const maybeQty = (v) => (v === null || v === undefined ? '–' : qty(v));

  function renderShift(el) {
    // With machine hours counted the view scrolls: the machine's card lies below the shift.
    const machine = Boolean(S.machine);
    el.classList.toggle('list', machine);
    el.toggleAttribute('data-scroll', machine);
    if (machine) el.append(machineCard(S.machine));
    const s = S.shift;
    if (!s) {
      el.prepend(h('div', { class: 'empty' }, t('shift.none')));
      return;
    }
    const name = s.shift === 'unscheduled' ? t('shift.unscheduled') : s.shift;
    const factor = (key) => h('div', { class: 'kpi', 'data-field': key },
      h('span', {}, t('shift.' + key)), h('b', {}, pct(s[key])));
    const behind = s.target_due !== null && s.good < s.target_due;
    el.prepend(h('div', { class: 'shift' },
      h('div', { class: 'section-title' }, t('shift.title', { name, from: time(s.start), to: time(s.end) })),
      h('div', { class: 'shift-col' },
        h('div', { class: 'kpi big', 'data-field': 'oee' }, h('span', {}, t('shift.oee')), h('b', {}, pct(s.oee))),
        factor('availability'), factor('effectiveness')),
      h('div', { class: 'shift-col' },
        h('div', { class: 'kpi big' + (behind ? ' behind' : ''), 'data-field': 'parts' },
          h('span', {}, t('shift.good')),
          h('b', {}, qty(s.good)),
          h('small', {}, t('shift.due', { due: maybeQty(s.target_due) }))),
        h('div', { class: 'kpi', 'data-field': 'target' }, h('span', {}, t('shift.target')), h('b', {}, maybeQty(s.target))),
        h('div', { class: 'kpi-pair' }, factor('quality_ratio'),
          h('div', { class: 'kpi', 'data-field': 'scrap' }, h('span', {}, t('order.scrap')), h('b', {}, qty(s.scrap))))),
      h('div', { class: 'shift-col' },
        h('div', { class: 'section-title' }, t('shift.top_stops')),
        s.top_stops.length
          ? s.top_stops.map((x) => h('div', { class: 'row', 'data-reason': x.reason },
            h('div', { class: 'main' },
              h('div', { class: 'l1' }, stopReasonText(x)),
              h('div', { class: 'l2' }, t(x.stops === 1 ? 'shift.stop_line_one' : 'shift.stop_line', { minutes: qty(x.minutes), stops: x.stops })))))
          : h('div', { class: 'empty' }, t('shift.no_stops')))));
  }

  // ------------------------------------------------------------------ machine and maintenance

  const dueIntervals = () => (S && S.machine ? S.machine.service.filter((x) => x.due) : []);
  // Hours to 0.1 h, counts as they are.
  const hours = (n) => new Intl.NumberFormat(locale(), { minimumFractionDigits: 1, maximumFractionDigits: 1 }).format(n);
  const measured = (measure, n) => t('unit.' + measure, { n: measure === 'hours' ? hours(n) : qty(n) });

  // The machine's hours, starts, cycles and parts and each maintenance interval as the
  // gateway counts them (the due ones first, framed yellow); the general call for maintenance.
  function machineCard(m) {
    const figure = (key, value) => h('div', { class: 'kpi', 'data-field': 'machine-' + key },
      h('span', {}, t('machine.' + key)), h('b', {}, value));
    const rows = m.service.map((x) => {
      const left = x.remaining < 0
        ? t('machine.overdue', { over: measured(x.measure, -x.remaining) })
        : t('machine.remaining', { left: measured(x.measure, x.remaining) });
      const when = [];
      if (x.due_since) when.push(t('machine.due_since', { time: dateTime(x.due_since) }));
      when.push(x.done_at ? t('machine.done_at', { time: dateTime(x.done_at) }) : t('machine.never_done'));
      const row = h('div', { class: 'row' + (x.due ? ' warn' : ''), 'data-service': x.name },
        h('div', { class: 'main' },
          h('div', { class: 'l1' }, x.text ? `${x.text} · ${x.name} ` : `${x.name} `,
            x.due ? h('span', { class: 'flag ok', 'data-field': 'due' }, t('machine.due')) : null),
          h('div', { class: 'l2', 'data-field': 'standing' }, [
            t('machine.every', { every: measured(x.measure, x.every) }),
            t('machine.since_done', { used: measured(x.measure, x.since_done) }),
            left,
          ].join(' · ')),
          h('div', { class: 'l3' }, when.join(' · '))));
      // Due: the supervisor's PIN is asked for; early (not due yet) only in a session.
      if (x.due || supervisor) {
        row.append(button(t('btn.service_done'), 'super', () => withSupervisor(() => serviceSheet(x)), { 'data-cmd': 'service-done' }));
      }
      return row;
    });
    return h('div', { class: 'machine', 'data-machine': '' },
      h('div', { class: 'section-title' }, t('machine.title', { since: dateTime(m.since) })),
      h('div', { class: 'machine-figures' },
        figure('hours', hours(m.hours)), figure('starts', qty(m.starts)),
        figure('cycles', qty(m.cycles)), figure('parts', qty(m.parts))),
      h('div', { class: 'row' },
        h('div', { class: 'main' },
          h('div', { class: 'l1' }, t(m.running ? 'machine.running' : 'machine.not_running')),
          h('div', { class: 'l2' }, t('machine.call_text'))),
        button(t('btn.call_maintenance'), 'blue', () => maintenanceSheet(), { 'data-cmd': 'request-maintenance' })),
      h('div', { class: 'section-title' }, t('machine.service')),
      rows.length ? rows : h('div', { class: 'empty' }, t('machine.no_service')));
  }

  // Maintenance asked for from a stop (once per stop): no words needed, the stop says it.
  async function callMaintenance(stop) {
    const r = await command('request-maintenance', { stop_id: stop.stop_id });
    // Asked from the reason sheet: it stays open and shows the request now.
    if (r.done && sheet && sheet.kind === 'reason') {
      const fresh = stopList().find((x) => x.stop_id === stop.stop_id);
      if (fresh) reasonSheet(fresh, false);
    }
    return r;
  }

  // A stop's maintenance request, or the button that raises it.
  function maintenanceFor(stop) {
    if (stop.maintenance_request) {
      return h('span', { class: 'chip', 'data-field': 'maintenance-request' }, t('stops.maintenance', { id: stop.maintenance_request }));
    }
    return button(t('btn.call_maintenance'), 'blue', () => callMaintenance(stop), { 'data-cmd': 'request-maintenance', 'data-stop': stop.stop_id });
  }

  // Maintenance asked for without a stop: the operator says in words what is wrong.
  function maintenanceSheet() {
    let note = '';
    openSheet('maintenance', (el) => {
      const ok = button(t('btn.call_maintenance'), 'primary', async () => {
        if (!note.trim()) return;
        const r = await command('request-maintenance', { note: note.trim() });
        if (r.done) closeSheet();
      }, { 'data-cmd': 'ok' });
      const kb = keyboard(note, (v) => { note = v; ok.disabled = !v.trim(); }, S.max_text);
      el.append(
        h('div', { class: 'sheet-head' }, h('h2', {}, t('sheet.maintenance.title')), kb.display),
        kb, foot(ok));
      ok.disabled = true;
    });
  }

  // A supervisor says an interval's task was done, with an optional note of what was done.
  function serviceSheet(x) {
    let note = '';
    openSheet('service', (el) => {
      const ok = button(t('btn.service_done'), 'primary', async () => {
        const body = { name: x.name };
        if (note.trim()) body.note = note.trim();
        const r = await superCommand('service-done', body);
        if (r.done) closeSheet();
      }, { 'data-cmd': 'ok' });
      const kb = keyboard(note, (v) => { note = v; }, S.max_text);
      el.append(
        h('div', { class: 'sheet-head' }, h('h2', {}, t('sheet.service.title', { name: x.text || x.name })), kb.display),
        h('div', { class: 'sub' }, t('sheet.service.text', { since: measured(x.measure, x.since_done) })),
        kb, foot(ok));
    });
  }

  function stopReasonText(x) {
    if (x.reason === 'PENDING') return t('shift.reason_pending');
    if (x.reason === 'MICRO') return t('shift.micro');
    return x.reason_text || x.reason;
  }

  function show(name) {
    view = name;
    for (const section of document.querySelectorAll('.view')) section.hidden = section.id !== 'view-' + name;
    renderAll();
  }

  function startButtons(op, long) {
    if (op.status !== 'dispatched') return [];
    if (S.active.length && !S.family_tool) return [];
    return [
      button(t(long ? 'btn.start_setup' : 'btn.setup'), 'warn', () => command('start-setup', { op: op.op }), { 'data-cmd': 'start-setup', 'data-op': op.op }),
      button(t(long ? 'btn.start_production' : 'btn.production'), 'primary', () => command('start-production', { op: op.op }), { 'data-cmd': 'start-production', 'data-op': op.op }),
    ];
  }

  function renderOrder(el) {
    const op = S.active[0];
    // With components the view scrolls: their card lies below the order.
    const components = Boolean(op && op.components && op.components.length);
    el.classList.toggle('list', components);
    el.toggleAttribute('data-scroll', components);
    if (!op) {
      const next = S.dispatch.find((o) => o.status === 'dispatched');
      const main = h('div', { class: 'order-main' }, h('div', { class: 'empty' }, t('order.none')));
      const actions = h('div', { class: 'actions' });
      for (const held of S.dispatch.filter((o) => o.status === 'held')) {
        main.append(h('div', { class: 'held', 'data-held': held.op },
          h('div', { class: 'held-title' }, `${t('order.held')} · ${held.op} · ${opName(held)}`),
          held.status_reason ? h('div', { class: 'held-reason' }, held.status_reason) : null));
        if (supervisor) actions.append(button(`${t('btn.release')} ${held.op}`, 'super wide', () => releaseSheet(held), { 'data-cmd': 'release', 'data-op': held.op }));
      }
      if (next) {
        main.append(
          h('div', { class: 'section-title' }, t('order.next')),
          h('div', { class: 'op-title' }, `${next.op} · ${opName(next)}`),
          h('div', { class: 'op-sub' }, `${qty(next.target_qty)} ${next.unit}` + (next.due ? ' · ' + t('orders.due', { due: dateTime(next.due) }) : '')),
        );
        actions.append(...startButtons(next, true).map((b) => { b.classList.add('wide'); return b; }));
      } else {
        main.append(h('div', { class: 'empty' }, t('orders.none')));
      }
      actions.append(button(t('btn.to_orders'), 'wide', () => show('orders')));
      el.append(h('div', { class: 'order' }, main, actions));
      return;
    }
    const pct = Math.min(100, op.target_qty > 0 ? (op.good / op.target_qty) * 100 : 0);
    const te = op.time_elements;
    const flags = [];
    if (op.target_reached) flags.push(h('span', { class: 'flag ok' }, t('order.target_reached')));
    if (op.over_tolerance) flags.push(h('span', { class: 'flag bad' }, t('order.over_tolerance')));
    const main = h('div', { class: 'order-main' },
      // The material text gets two whole lines: an operator tells parts apart by it.
      h('div', { class: 'op-title', 'data-field': 'material-text' }, opName(op)),
      h('div', { class: 'op-sub' }, `${op.op} · ${op.material} · ${statusText(op.status)}`),
      h('div', { class: 'counts' },
        h('span', { class: 'big', 'data-field': 'good' }, qty(op.good)),
        h('span', { class: 'of' }, `/ ${qty(op.target_qty)} ${op.unit}`)),
      h('div', { class: 'progress' + (op.target_reached ? ' done' : '') }, h('div', { style: `width:${pct.toFixed(1)}%` })),
      h('div', { class: 'facts' },
        h('span', {}, t('order.scrap') + ' ', h('b', { 'data-field': 'scrap' }, qty(op.scrap))),
        h('span', {}, t('order.remaining') + ' ', h('b', {}, qty(op.remaining))),
        h('span', {}, t('order.pending') + ' ', h('b', {}, qty(op.pending_good))),
        op.rework > 0 ? h('span', {}, t('order.rework') + ' ', h('b', { 'data-field': 'rework' }, qty(op.rework))) : null,
        op.setup_scrap_pending > 0 ? h('span', {}, t('order.setup_scrap') + ' ', h('b', { 'data-field': 'setup-scrap' }, qty(op.setup_scrap_pending))) : null,
        components ? h('span', { 'data-field': 'components-below' }, t('order.components', { n: op.components.length })) : null,
        flags),
      h('div', { class: 'te' },
        h('div', {}, t('te.setup'), h('b', {}, dur(te.setup_s))),
        h('div', {}, t('te.production'), h('b', {}, dur(te.production_s))),
        h('div', {}, t('te.down'), h('b', {}, dur(te.down_s))),
        h('div', {}, t('te.waiting'), h('b', {}, dur(te.waiting_s)))));
    const a = [];
    const ref = { op: op.op };
    const tag = (name) => ({ 'data-cmd': name });
    if (op.over_tolerance && !op.over_tolerance_acknowledged) {
      a.push(button(t('btn.go_on'), 'warn wide', () => command('acknowledge-over-delivery', ref), tag('go-on')));
    }
    if (op.status === 'setup') {
      a.push(
        button(t('btn.start_production'), 'primary wide', () => command('start-production', ref), tag('start-production')),
        button(t('btn.interrupt'), '', () => command('interrupt', ref), tag('interrupt')),
        button(t('btn.scrap'), 'warn', () => scrapSheet(op), tag('scrap')),
      );
    } else if (op.status === 'running') {
      a.push(
        button(t('btn.scrap'), 'warn', () => scrapSheet(op), tag('scrap')),
        button(t('btn.confirm_now'), '', () => confirmSheet(op), tag('confirm')),
        button(t('btn.interrupt'), '', () => command('interrupt', ref), tag('interrupt')),
        button(t('btn.split'), '', () => splitSheet(op), tag('split')),
        button(t('btn.complete'), 'primary wide', () => completeSheet(op), tag('complete')),
      );
    } else if (op.status === 'interrupted') {
      a.push(
        button(t('btn.resume'), 'primary wide', () => command('resume', ref), tag('resume')),
        button(t('btn.scrap'), 'warn', () => scrapSheet(op), tag('scrap')),
        button(t('btn.confirm_now'), '', () => confirmSheet(op), tag('confirm')),
        button(t('btn.split'), '', () => splitSheet(op), tag('split')),
        button(t('btn.complete'), 'primary', () => completeSheet(op), tag('complete')),
      );
    }
    const sup = supervisor ? [
      button(t('btn.correct_counts'), 'super', () => correctSheet(op), tag('correct')),
      button(t('btn.cancel_order'), 'super', () => cancelSheet(op), tag('cancel')),
      button(t('btn.hold'), 'super', () => holdSheet(op), tag('hold')),
    ] : [];
    // The open stop: maintenance called from here, while the buttons still fit four rows of
    // two (the stop list and the reason sheet offer it too).
    if (S.stop && !S.stop.maintenance_request && a.length + sup.length < 8) a.push(maintenanceFor(S.stop));
    a.push(...sup);
    // Four rows of two fit beside the counts: with more buttons none spans both columns.
    const slots = a.reduce((n, b) => n + (b.classList.contains('wide') ? 2 : 1), 0);
    if (slots > 8) a.forEach((b) => b.classList.remove('wide'));
    el.append(h('div', { class: 'order' }, main, h('div', { class: 'actions' }, a)));
    if (components) el.append(componentsCard(op));
    const notice = (S.notices || []).find((n) => n.op === op.op && !seenNotice(n));
    if (notice) el.append(noticeStrip(notice));
  }

  // The active operation's components as the gateway keeps them: the batch loaded now (a
  // batch-managed component without one is framed yellow), what was consumed so far and what no
  // confirmation took yet, per batch, in the component's unit.
  function componentsCard(op) {
    const rows = op.components.map((c) => {
      const lines = (list) => (list.length
        ? list.map((x) => `${qty(x.qty)} ${c.unit}` + (x.batch ? ` (${x.batch})` : '')).join(', ')
        : '–');
      const kind = [t(c.backflush ? 'comp.backflush' : 'comp.manual'), c.batch_managed ? t('comp.batch_managed') : null];
      const buttons = [];
      if (c.batch_managed) {
        buttons.push(button(t('btn.load_batch'), 'warn', () => batchSheet(op, c), { 'data-cmd': 'load-batch', 'data-material': c.material }));
      }
      if (!c.backflush) {
        buttons.push(button(t('btn.consume'), '', () => consumeSheet(op, c), { 'data-cmd': 'consume', 'data-material': c.material }));
      }
      return h('div', { class: 'row' + (c.batch_managed && !c.loaded ? ' warn' : ''), 'data-component': c.material },
        h('div', { class: 'main' },
          h('div', { class: 'l1' }, c.material_text ? `${c.material_text} · ${c.material}` : c.material),
          h('div', { class: 'l2' }, t('comp.per_unit', { qty: qty(c.qty_per_unit), unit: c.unit, per: op.unit }) + ' · ' + kind.filter(Boolean).join(' · ')),
          c.batch_managed
            ? h('div', { class: 'l3', 'data-field': 'batch' }, c.loaded
              ? t('comp.loaded', { batch: c.loaded.batch, time: time(c.loaded.at), who: c.loaded.actor })
              : t('comp.no_batch'))
            : null,
          h('div', { class: 'l3', 'data-field': 'consumed' }, t('comp.consumed', { lines: lines(c.consumed) })),
          h('div', { class: 'l3', 'data-field': 'pending' }, t('comp.pending', { lines: lines(c.pending) }))),
        buttons);
    });
    return h('div', { class: 'components', 'data-components': op.op },
      h('div', { class: 'section-title' }, t('comp.title')), rows);
  }

  // Central changed the running order (quantity, due date, standard cycle ...): shown over the
  // order until the operator taps "Seen" on this panel, or the next change replaces it.
  const seenNotice = (n) => localStorage.getItem('panel.notice.' + n.op) === n.notice_id;

  function changeValue(field, value) {
    if (value === null || value === undefined || value === '') return '–';
    if (field === 'due') return dateTime(String(value));
    if (field.endsWith('_s') && typeof value === 'number') return t('change.seconds', { s: qty(value) });
    return typeof value === 'number' ? qty(value) : String(value);
  }

  function noticeStrip(n) {
    const items = Object.entries(n.changes).map(([field, [before, after]]) =>
      h('div', { class: 'notice-item', 'data-change': field },
        `${has('change.' + field) ? t('change.' + field) : field}: ${changeValue(field, before)} → ${changeValue(field, after)}`));
    return h('div', { class: 'notice', role: 'alert', 'data-notice': n.notice_id },
      h('div', { class: 'notice-body' },
        h('div', { class: 'notice-title' }, t('change.title', { time: time(new Date(n.at_wall_ms).toISOString()) })),
        items),
      button(t('btn.seen'), '', () => {
        localStorage.setItem('panel.notice.' + n.op, n.notice_id);
        renderAll();
      }, { 'data-cmd': 'seen' }));
  }

  function renderOrders(el) {
    if (!S.dispatch.length) el.append(h('div', { class: 'empty' }, t('orders.none')));
    for (const op of S.dispatch) {
      const l2 = [opName(op), statusText(op.status)];
      if (op.due) l2.push(t('orders.due', { due: dateTime(op.due) }));
      const why = statusReason(op);
      const row = h('div', { class: 'row' + (op.status === 'held' ? ' warn' : ''), 'data-op': op.op },
        h('div', { class: 'main' },
          h('div', { class: 'l1' }, `${op.sequence ? op.sequence + ' · ' : ''}${op.op} · ${qty(op.target_qty)} ${op.unit}`),
          h('div', { class: 'l2' }, l2.join(' · ')),
          why ? h('div', { class: 'l3', 'data-field': 'status-reason' }, why) : null),
        startButtons(op));
      if (supervisor && op.status === 'held') row.append(button(t('btn.release'), 'super', () => releaseSheet(op), { 'data-cmd': 'release' }));
      else if (supervisor && op.status === 'dispatched') row.append(button(t('btn.hold'), 'super', () => holdSheet(op), { 'data-cmd': 'hold' }));
      if (supervisor) row.append(button(t('btn.cancel_order'), 'super', () => cancelSheet(op), { 'data-cmd': 'cancel' }));
      el.append(row);
    }
    if (S.unassigned.length) {
      el.append(h('div', { class: 'section-title' }, t('unassigned.title')));
      for (const u of S.unassigned) {
        const row = h('div', { class: 'row warn', 'data-unassigned': u.unassigned_id },
          h('div', { class: 'main' },
            h('div', { class: 'l1' }, t('unassigned.line', { good: qty(u.good_signals), scrap: qty(u.scrap_signals) })),
            h('div', { class: 'l2' }, `${time(u.start)}–${u.open ? t('unassigned.now') : time(u.end)} · ${u.unassigned_id}`)));
        if (supervisor) row.append(button(t('btn.assign'), 'super', () => assignSheet(u), { 'data-cmd': 'assign' }));
        el.append(row);
      }
    }
    if (S.finished.length) {
      el.append(h('div', { class: 'section-title' }, t('orders.finished')));
      for (const op of S.finished) {
        const why = statusReason(op);
        el.append(h('div', { class: 'row', 'data-op': op.op },
          h('div', { class: 'main' },
            h('div', { class: 'l1' }, `${op.op} · ${qty(op.good)} / ${qty(op.target_qty)} ${op.unit}`),
            h('div', { class: 'l2' }, `${opName(op)} · ${statusText(op.status)}`),
            why ? h('div', { class: 'l3', 'data-field': 'status-reason' }, why) : null)));
      }
    }
  }

  function stopList() {
    const seen = new Set();
    const out = [];
    for (const s of [...(S.stop ? [S.stop] : []), ...S.pending_stops, ...S.stops]) {
      if (!seen.has(s.stop_id)) {
        seen.add(s.stop_id);
        out.push(s);
      }
    }
    return out;
  }

  function renderStops(el) {
    const stops = stopList();
    if (!stops.length) el.append(h('div', { class: 'empty' }, t('stops.none')));
    for (const s of stops) {
      const chips = [];
      if (s.reason_pending) chips.push(h('span', { class: 'chip pending' }, t('stops.pending')));
      if (s.open) chips.push(h('span', { class: 'chip' }, t('stops.open')));
      if (s.micro) chips.push(h('span', { class: 'chip' }, t('stops.micro')));
      if (s.maintenance_request) chips.push(maintenanceFor(s));
      const reason = s.reason_text || s.reason || (s.micro ? '' : t('stops.pending'));
      const l2 = [reason, s.alarm ? t('stops.alarm', { alarm: s.alarm }) : '', s.stop_id].filter(Boolean).join(' · ');
      const row = h('div', { class: 'row' + (s.reason_pending ? ' bad' : ''), 'data-stop': s.stop_id },
        h('div', { class: 'main' },
          h('div', { class: 'l1' }, `${time(s.start)} · ${dur(s.duration_s + (s.open ? drift() : 0))} `, chips),
          h('div', { class: 'l2' }, l2)));
      if (!s.reason && !s.micro) {
        row.append(button(t('btn.give_reason'), 'danger', () => reasonSheet(s, false), { 'data-cmd': 'give-reason' }));
      } else if (s.reason && supervisor) {
        row.append(button(t('btn.reclassify'), 'super', () => reasonSheet(s, true), { 'data-cmd': 'reclassify' }));
      }
      if (!s.maintenance_request && !s.micro) row.append(maintenanceFor(s));
      el.append(row);
    }
  }

  function verdict(c) {
    if (c.reversed) {
      const rs = c.reversal_status || 'awaiting_result';
      return h('span', { class: 'chip reversed', 'data-verdict': 'reversal_' + rs }, t('verdict.reversal_' + rs));
    }
    return h('span', { class: 'chip ' + c.status, 'data-verdict': c.status }, t('verdict.' + c.status));
  }

  // The relay passes the ERP's reference through; an object (SAP: confirmation group and
  // counter) is shown as its values.
  function erpRef(text) {
    try {
      const ref = JSON.parse(text);
      if (ref && typeof ref === 'object') {
        return Object.entries(ref).filter(([k]) => k !== 'system').map(([, v]) => v).join(' / ');
      }
    } catch (err) {
      /* plain text */
    }
    return text;
  }

  function renderConfirmations(el) {
    for (const op of [...S.active, ...S.dispatch, ...S.finished].filter((o) => o.final_withheld)) {
      el.append(h('div', { class: 'row bad', 'data-withheld': op.op },
        h('div', { class: 'main' }, h('div', { class: 'l1' }, t('confs.withheld', { op: op.op })),
          h('div', { class: 'l2' }, t('confs.withheld_why')))));
    }
    if (!S.confirmations.length) el.append(h('div', { class: 'empty' }, t('confs.none')));
    for (const c of S.confirmations) {
      const rejected = c.status === 'rejected' && !c.reversed;
      const l2 = [t('confs.line', { good: qty(c.yield_qty), scrap: qty(c.scrap_qty), unit: c.unit }), c.posting_date];
      if (c.erp_ref) l2.push(t('verdict.erp_ref', { ref: erpRef(c.erp_ref) }));
      const main = h('div', { class: 'main' },
        h('div', { class: 'l1' }, `#${c.counter} ${c.op} · ${c.final ? t('confs.final') : t('confs.partial')} `, verdict(c)),
        h('div', { class: 'l2' }, l2.join(' · ')));
      if (c.erp_message) main.append(h('div', { class: 'l3' }, c.erp_message));
      if (c.verdict_conflicts) {
        main.append(h('div', { class: 'l3 conflict', 'data-conflict': c.conf_id },
          t('confs.conflict', { n: c.verdict_conflicts, last: c.last_conflict || '' })));
      }
      const row = h('div', { class: 'row' + (rejected ? ' bad' : ''), 'data-conf': c.conf_id }, main);
      row.append(button(t('btn.history'), '', () => historySheet(c), { 'data-cmd': 'history' }));
      if (rejected) row.append(button(t('btn.retry'), 'warn', () => withSupervisor(() => resendSheet(c)), { 'data-cmd': 'resend' }));
      if (!c.reversed && (supervisor || rejected)) {
        row.append(button(t('btn.reverse'), 'super', () => withSupervisor(() => reverseSheet(c)), { 'data-cmd': 'reverse' }));
      }
      el.append(row);
    }
  }

  function renderHelp(el) {
    const cats = h('div', { class: 'help-cats' }, S.help_categories.map((cat) =>
      button(has('help.' + cat) ? t('help.' + cat) : cat, 'blue', () => command('call-help', { category: cat }), { 'data-cmd': 'call-help', 'data-category': cat })));
    const open = h('div', { class: 'help-open' }, h('div', { class: 'section-title' }, t('help.open')));
    if (!S.help_calls.length) open.append(h('div', { class: 'empty' }, t('help.none')));
    for (const c of S.help_calls) {
      const l2 = c.acknowledged_by ? t('help.acknowledged', { who: c.acknowledged_by }) : (c.escalated ? t('help.escalated') : '');
      const row = h('div', { class: 'row' + (c.escalated && !c.acknowledged_by ? ' bad' : ''), 'data-call': c.call_id },
        h('div', { class: 'main' },
          h('div', { class: 'l1' }, has('help.' + c.category) ? t('help.' + c.category) : c.category),
          h('div', { class: 'l2' }, `${time(c.raised_at)} · ${dur(c.waiting_s + drift())}` + (l2 ? ' · ' + l2 : ''))));
      if (!c.acknowledged_by) row.append(button(t('btn.acknowledge_help'), '', () => command('acknowledge-help', { call_id: c.call_id })));
      row.append(button(t('btn.close_help'), 'primary', () => command('close-help', { call_id: c.call_id })));
      open.append(row);
    }
    el.append(h('div', { class: 'help' }, cats, open));
  }

  // ------------------------------------------------------------------ sheets

  function openSheet(kind, build) {
    sheet = { kind, build };
    renderSheet();
  }

  function renderSheet() {
    const el = $('sheet');
    el.replaceChildren();
    if (!sheet) {
      el.hidden = true;
      delete el.dataset.kind;
      return;
    }
    el.hidden = false;
    el.dataset.kind = sheet.kind;
    sheet.build(el);
  }

  function closeSheet() {
    sheet = null;
    renderSheet();
  }

  function backFromSheet() {
    hideToast(); // a refusal shown in the dialog goes with it
    closeSheet();
  }

  function foot(...buttons) {
    return h('div', { class: 'foot' }, button(t('btn.cancel'), '', backFromSheet, { 'data-cmd': 'back' }), buttons);
  }

  function askSheet(kind, title, text, okLabel, okClass, onOk) {
    openSheet(kind, (el) => {
      el.append(
        h('h2', {}, title),
        h('div', { class: 'body' }, h('div', { class: 'text grow' }, text)),
        foot(button(okLabel, okClass || 'primary', async () => {
          const r = await onOk();
          if (r && r.done && sheet && sheet.kind === kind) closeSheet();
        }, { 'data-cmd': 'ok' })));
    });
  }

  function askForReason() {
    const stop = pendingStop();
    if (!stop || askedStops.has(stop.stop_id) || sheet) return;
    askedStops.add(stop.stop_id); // asked once by itself; the red banner asks again on a tap
    reasonSheet(stop, false);
  }

  function reasonSheet(stop, reclassify) {
    openSheet(reclassify ? 'reclassify' : 'reason', (el) => {
      const groups = new Map();
      for (const r of S.stop_reasons) {
        if (!groups.has(r.group)) groups.set(r.group, []);
        groups.get(r.group).push(r);
      }
      const grow = h('div', { class: 'grow' });
      for (const [group, reasons] of groups) {
        grow.append(
          h('div', { class: 'group-title' }, groupText(group)),
          h('div', { class: 'grid' }, reasons.map((r) => button(r.text, r.code === stop.reason ? 'sel' : (group === 'planned' ? '' : 'danger'), async () => {
            const body = { reason: r.code, stop_id: stop.stop_id };
            const res = reclassify ? await superCommand('reclassify-stop', body) : await command('stop-reason', body);
            if (res.done) closeSheet();
          }, { 'data-reason': r.code }))));
      }
      el.append(
        h('h2', {}, t('sheet.reason.title')),
        h('div', { class: 'sub' }, t('sheet.reason.subtitle', { stop: stop.stop_id, time: time(stop.start), duration: dur(stop.duration_s) })),
        h('div', { class: 'body' }, grow),
        h('div', { class: 'foot' },
          reclassify ? null : maintenanceFor(stop),
          button(t('btn.later'), '', closeSheet, { 'data-cmd': 'later' })));
    });
  }

  // A number pad; ``onChange`` gets the text typed so far.
  function numpad(initial, onChange, opts) {
    const options = opts || {};
    let value = initial || '';
    const display = h('div', { class: 'display', 'data-field': 'pad' });
    const paint = () => {
      display.textContent = options.mask ? '•'.repeat(value.length) : ((options.sign && options.sign() < 0 ? '−' : '') + (value || '0'));
    };
    const press = (key) => {
      if (key === 'C') value = '';
      else if (key === '⌫') value = value.slice(0, -1);
      else if (key === '.') {
        if (!value.includes('.')) value = (value || '0') + '.';
      } else {
        const [whole, frac] = (value + key).split('.');
        if (options.mask ? value.length >= 12 : (whole.length > 6 || (frac && frac.length > 3))) return;
        value = value === '0' ? key : value + key;
      }
      paint();
      onChange(value);
    };
    const keys = ['7', '8', '9', '4', '5', '6', '1', '2', '3', options.decimals ? '.' : 'C', '0', '⌫'];
    const pad = h('div', { class: 'pad' },
      options.label ? h('div', { class: 'label' }, options.label) : null,
      display,
      h('div', { class: 'keys' }, keys.map((k) => button(k, '', () => press(k), { 'data-key': k }))));
    paint();
    pad.repaint = paint;
    return pad;
  }

  // Scrap, rework, or first-off parts of the setup that were good after all: one sheet, three
  // modes, the same number pad.
  function scrapSheet(op, startMode) {
    let reason = null;
    let amount = '';
    let mode = startMode || 'scrap';
    openSheet('scrap', (el) => {
      const texts = Object.fromEntries(S.scrap_reasons.map((r) => [r.code, r.text]));
      const current = S.active.find((o) => o.op === op.op) || op;
      const setupPending = Number(current.setup_scrap_pending || 0);
      if (mode === 'setup_good' && !(setupPending > 0)) mode = 'scrap';
      const ready = () => amount && Number(amount) > 0 && (mode === 'setup_good' ? Number(amount) <= setupPending : Boolean(reason));
      const ok = button(t('btn.ok'), 'primary', async () => {
        if (!ready()) return;
        const r = mode === 'setup_good'
          ? await command('setup-good', { op: op.op, qty: amount })
          : await command('scrap', { op: op.op, qty: amount, reason, rework: mode === 'rework' });
        if (r.done) closeSheet();
      }, { 'data-cmd': 'ok' });
      const update = () => {
        ok.disabled = !ready();
        if (ok.disabled) ok.textContent = t('btn.ok');
        else if (mode === 'setup_good') ok.textContent = t('btn.declare_good', { qty: amount, unit: op.unit });
        else ok.textContent = t(mode === 'rework' ? 'btn.report_rework' : 'btn.report', { qty: amount, reason: texts[reason] });
        for (const b of el.querySelectorAll('[data-reason]')) b.classList.toggle('sel', b.dataset.reason === reason);
      };
      const modes = ['scrap', 'rework', ...(setupPending > 0 ? ['setup_good'] : [])];
      const modeRow = h('div', { class: 'grid modes', style: `grid-template-columns: repeat(${modes.length}, 1fr)` }, modes.map((m) =>
        button(t('sheet.scrap.mode_' + m), m === mode ? 'sel' : '', () => {
          mode = m;
          renderSheet();
        }, { 'data-mode': m })));
      const left = h('div', { class: 'grow' }, modeRow);
      if (mode === 'setup_good') {
        left.append(h('div', { class: 'text', 'data-field': 'setup-pending' },
          t('sheet.scrap.setup_good_text', { qty: qty(setupPending), unit: op.unit })));
      } else {
        left.append(
          h('div', { class: 'group-title' }, t('sheet.scrap.pick_reason')),
          h('div', { class: 'grid two' }, S.scrap_reasons.map((r) =>
            button(r.text, r.group === 'gateway' ? '' : 'warn', () => { reason = r.code; update(); }, { 'data-reason': r.code }))));
      }
      el.append(
        h('h2', {}, `${t('sheet.scrap.title_' + mode)} · ${op.op}`),
        h('div', { class: 'body' },
          left,
          numpad(amount, (v) => { amount = v; update(); }, { label: t('sheet.scrap.qty') + ` (${op.unit})`, decimals: op.unit !== 'PC' })),
        foot(ok));
      update();
    });
  }

  function confirmSheet(op) {
    askSheet('confirm', t('sheet.confirm.title'),
      t('sheet.confirm.text', { good: qty(op.pending_good), scrap: qty(op.pending_scrap), unit: op.unit, op: op.op }),
      t('btn.confirm_now'), 'primary', () => command('confirm', { op: op.op }));
  }

  async function complete(op, varianceReason) {
    const body = { op: op.op };
    if (varianceReason) body.variance_reason = varianceReason;
    const r = await command('complete', body, { quiet: ['variance_reason_required'] });
    if (!r.done && r.data && r.data.code === 'variance_reason_required') varianceSheet(op);
    return r;
  }

  function completeSheet(op) {
    askSheet('complete', t('sheet.complete.title'),
      t('sheet.complete.text', { op: op.op, good: qty(op.good), target: qty(op.target_qty), unit: op.unit }),
      t('btn.complete'), 'primary', () => complete(op, null));
  }

  function varianceSheet(op) {
    openSheet('variance', (el) => {
      el.append(
        h('h2', {}, t('sheet.variance.title')),
        h('div', { class: 'sub' }, t('sheet.variance.text', { op: op.op })),
        h('div', { class: 'body' }, h('div', { class: 'grow' }, h('div', { class: 'grid' }, S.variance_reasons.map((code) =>
          button(has('variance.' + code) ? t('variance.' + code) : code, 'warn', async () => {
            const r = await complete(op, code);
            if (r.done) closeSheet();
          }, { 'data-reason': code }))))),
        foot());
    });
  }

  function splitSheet(op) {
    let amount = op.remaining > 0 ? String(op.remaining) : '';
    openSheet('split', (el) => {
      const ok = button(t('btn.split'), 'primary', async () => {
        if (!amount || Number(amount) <= 0) return;
        const r = await command('split', { op: op.op, quantity: amount });
        if (r.done) closeSheet();
      }, { 'data-cmd': 'ok' });
      el.append(
        h('h2', {}, `${t('sheet.split.title')} · ${op.op}`),
        h('div', { class: 'body' },
          h('div', { class: 'text grow' }, t('sheet.split.text')),
          numpad(amount, (v) => { amount = v; ok.disabled = !(v && Number(v) > 0); }, { label: op.unit, decimals: op.unit !== 'PC' })),
        foot(ok));
      ok.disabled = !(amount && Number(amount) > 0);
    });
  }

  function pinSheet(then) {
    let pin = '';
    openSheet('pin', (el) => {
      const ok = button(t('btn.ok'), 'primary', async () => {
        if (!pin) return;
        const typed = pin;
        busy = true;
        let resp = null;
        let data = null;
        try {
          resp = await fetch('/api/supervisor/login', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ pin: typed }),
          });
          data = await resp.json().catch(() => null);
        } catch (err) {
          toast('error', t('err.title'), t('err.offline'), 0);
        } finally {
          busy = false;
        }
        if (!resp || !resp.ok) {
          if (resp) showError(resp.status, data);
          if (sheet && sheet.kind === 'pin') pinSheet(then); // an empty pad for the next try
          return;
        }
        token = data.token;
        supervisor = data.supervisor;
        sessionSeconds = data.session_s;
        touchSupervisor();
        toast('ok', t('msg.logged_in', { who: supervisor }), '', 2500);
        closeSheet();
        renderAll();
        if (then) then();
      }, { 'data-cmd': 'ok' });
      const pad = numpad('', (v) => { pin = v; }, { mask: true, label: t('sheet.pin.title') });
      el.append(h('h2', {}, t('sheet.pin.title')), h('div', { class: 'body' }, h('div', { class: 'grow' }), pad), foot(ok));
    });
  }

  function cancelSheet(op) {
    askSheet('cancel', t('sheet.cancel.title'), t('sheet.cancel.text', { op: op.op }), t('btn.cancel_order'), 'danger',
      () => superCommand('cancel', { op: op.op }));
  }

  // An on-screen keyboard for a reason in words (the panel has no other); ``onChange`` gets the
  // text so far, at most ``max`` characters.
  function keyboard(initial, onChange, max, opts) {
    const upper = Boolean(opts && opts.upper); // a code: capitals until shift is tapped
    let value = initial || '';
    let caps = upper || !value;
    let join = false; // after a picked reason, what is typed next follows ": "
    const display = h('div', { class: 'display words', 'data-field': 'words' });
    const rows = lang === 'de'
      ? ['1234567890', 'qwertzuiopü', 'asdfghjklöä', 'yxcvbnm,.-:']
      : ['1234567890', 'qwertyuiop', 'asdfghjkl', 'zxcvbnm,.-:'];
    const letters = [];
    const paint = () => {
      display.textContent = value;
      for (const b of letters) b.textContent = caps ? b.dataset.key.toUpperCase() : b.dataset.key;
    };
    const type = (text) => {
      let add = text;
      if (join) add = ': ' + text.trimStart();
      if (value.length + add.length > max) return;
      join = false;
      value += add;
      if (!upper) caps = false;
      paint();
      onChange(value);
    };
    const keyRows = rows.map((row) => h('div', { class: 'kb-row' }, [...row].map((k) => {
      const b = button(k, '', () => type(caps ? k.toUpperCase() : k), { 'data-key': k });
      letters.push(b);
      return b;
    })));
    keyRows.push(h('div', { class: 'kb-row' },
      button('⇧', '', () => { caps = !caps; paint(); }, { 'data-key': 'shift' }),
      button(t('key.space'), 'kb-space', () => { if (value && !value.endsWith(' ')) type(' '); }, { 'data-key': 'space' }),
      button('⌫', '', () => { join = false; value = value.slice(0, -1); paint(); onChange(value); }, { 'data-key': 'back' }),
      button('C', '', () => { join = false; value = ''; caps = true; paint(); onChange(value); }, { 'data-key': 'clear' })));
    const kb = h('div', { class: 'kb' }, keyRows);
    kb.display = display;
    kb.set = (text) => { value = text.slice(0, max); caps = false; join = true; paint(); onChange(value); };
    // Typed on a keyboard of its own (or a scanner that types): taken as it is.
    kb.replace = (text) => { value = text.slice(0, max); join = false; paint(); };
    paint();
    return kb;
  }

  function holdSheet(op) {
    let reason = '';
    openSheet('hold', (el) => {
      const ok = button(t('btn.hold'), 'danger', async () => {
        if (!reason.trim()) return;
        const r = await superCommand('hold', { op: op.op, reason: reason.trim() });
        if (r.done) closeSheet();
      }, { 'data-cmd': 'ok' });
      const kb = keyboard(reason, (v) => { reason = v; ok.disabled = !v.trim(); }, S.max_text);
      const picks = h('div', { class: 'picks' }, HOLD_REASONS.map((k) =>
        button(t(k), 'warn', () => kb.set(t(k)), { 'data-pick': k })));
      el.append(
        h('div', { class: 'sheet-head' }, h('h2', {}, t('sheet.hold.title', { op: op.op })), kb.display),
        picks, kb, foot(ok));
      ok.disabled = true;
    });
  }

  // A text field that takes typed input (a keyboard, or a scanner that types) beside the
  // on-screen keys; Enter taps ``ok``.
  function codeField(name, placeholder, onInput, ok) {
    const input = h('input', {
      class: 'display words',
      type: 'text',
      'data-field': name,
      autocomplete: 'off',
      autocapitalize: 'characters',
      spellcheck: 'false',
      maxlength: S.max_text,
      placeholder,
    });
    input.addEventListener('input', () => onInput(input.value));
    input.addEventListener('keydown', (e) => {
      if (e.key !== 'Enter') return;
      e.preventDefault();
      if (ok && !ok.disabled) ok.click();
    });
    return input;
  }

  // Load a batch of a component: typed or tapped, the gateway (the core) checks it.
  function batchSheet(op, c) {
    let batch = '';
    openSheet('batch', (el) => {
      const ok = button(t('btn.load_batch'), 'primary', async () => {
        if (!batch) return;
        const r = await command('load-batch', { op: op.op, material: c.material, batch });
        if (r.done) closeSheet();
      }, { 'data-cmd': 'ok' });
      let kb = null;
      const input = codeField('batch-input', t('sheet.batch.placeholder'), (v) => {
        batch = v;
        kb.replace(v);
        ok.disabled = !v;
      }, ok);
      kb = keyboard('', (v) => { batch = v; input.value = v; ok.disabled = !v; }, S.max_text, { upper: true });
      el.append(
        h('div', { class: 'sheet-head' }, h('h2', {}, t('sheet.batch.title', { material: c.material })), input),
        h('div', { class: 'sub' }, c.loaded ? t('comp.loaded', { batch: c.loaded.batch, time: time(c.loaded.at), who: c.loaded.actor }) : t('comp.no_batch')),
        kb, foot(ok));
      ok.disabled = true;
      input.focus();
    });
  }

  // Record consumption of a component that is not backflushed: a quantity in its unit, from
  // the loaded batch unless another is typed.
  function consumeSheet(op, c) {
    let amount = '';
    let batch = '';
    openSheet('consume', (el) => {
      const ready = () => Boolean(amount) && Number(amount) > 0;
      const ok = button(t('btn.ok'), 'primary', async () => {
        if (!ready()) return;
        const body = { op: op.op, material: c.material, qty: amount };
        if (batch) body.batch = batch;
        const r = await command('consume', body);
        if (r.done) closeSheet();
      }, { 'data-cmd': 'ok' });
      const update = () => {
        ok.disabled = !ready();
        ok.textContent = ready() ? t('btn.record', { qty: amount, unit: c.unit }) : t('btn.ok');
      };
      const left = h('div', { class: 'grow' },
        h('div', { class: 'text' }, t('sheet.consume.text', { name: c.material_text || c.material, unit: c.unit })));
      if (c.batch_managed) {
        left.append(
          h('div', { class: 'group-title' }, t('sheet.consume.batch')),
          codeField('batch-input', c.loaded ? c.loaded.batch : t('comp.no_batch'), (v) => { batch = v; }, ok));
      }
      el.append(
        h('h2', {}, t('sheet.consume.title', { material: c.material })),
        h('div', { class: 'body' },
          left,
          numpad(amount, (v) => { amount = v; update(); }, { label: t('sheet.consume.qty', { unit: c.unit }), decimals: true })),
        foot(ok));
      update();
    });
  }

  // Unassigned production to an operation: each choice shows the parts it becomes there
  // (signals times that operation's parts per signal).
  function assignSheet(u) {
    openSheet('assign', (el) => {
      const seen = new Set();
      const ops = [...S.active, ...S.dispatch, ...S.finished].filter((o) => {
        if (seen.has(o.op) || o.status === 'cancelled') return false;
        seen.add(o.op);
        return true;
      });
      const choices = ops.map((o) => {
        const good = u.good_signals * o.parts_per_signal;
        const scrap = u.scrap_signals * o.parts_per_signal;
        return button(
          [h('div', {}, `${o.op} · ${opName(o)}`),
            h('div', { class: 'sub' }, t('unassigned.becomes', { good: qty(good), scrap: qty(scrap), unit: o.unit, pps: qty(o.parts_per_signal) }))],
          o.status === 'running' ? 'primary' : '', async () => {
            const r = await superCommand('assign-unassigned', { unassigned_id: u.unassigned_id, op: o.op });
            if (r.done) closeSheet();
          }, { 'data-op': o.op });
      });
      el.append(
        h('h2', {}, t('sheet.assign.title', { id: u.unassigned_id })),
        h('div', { class: 'sub' }, t('unassigned.line', { good: qty(u.good_signals), scrap: qty(u.scrap_signals) })),
        h('div', { class: 'body' }, h('div', { class: 'grow' },
          choices.length ? h('div', { class: 'grid two assign' }, choices) : h('div', { class: 'empty' }, t('orders.none')))),
        foot());
    });
  }

  // How a confirmation got where it is, from the gateway's stored events (read on demand).
  async function historySheet(c) {
    let data = null;
    try {
      const resp = await fetch('/api/confirmation-history?conf_id=' + encodeURIComponent(c.conf_id), { cache: 'no-store' });
      data = await resp.json().catch(() => null);
      if (!resp.ok) {
        showError(resp.status, data);
        return;
      }
    } catch (err) {
      toast('error', t('err.title'), t('err.offline'), 0);
      return;
    }
    const sent = (e) => (e.sent && has('hist.sent_' + e.sent) ? ' · ' + t('hist.sent_' + e.sent) : '');
    const line = (e) => {
      const who = e.actor || '';
      if (e.type === 'created') return t('hist.created', { kind: t(c.final ? 'confs.final' : 'confs.partial') }) + sent(e);
      if (e.type === 'resent') return t('hist.resent', { who }) + sent(e);
      if (e.type === 'reversed') return t('hist.reversed', { who }) + sent(e);
      if (e.type === 'verdict_conflict') return t('hist.conflict', { status: e.status || '' });
      const verdict = has('verdict.' + e.status) ? t('verdict.' + e.status) : (e.status || '');
      let text = (e.reversal ? t('hist.reversal') + ' ' : '') + t('hist.result', { verdict });
      if (e.message) text += ': ' + e.message;
      if (e.erp_ref) text += ' · ' + t('verdict.erp_ref', { ref: erpRef(e.erp_ref) });
      return text;
    };
    openSheet('history', (el) => {
      const list = h('div', { class: 'grow' });
      if (!data.entries.length) list.append(h('div', { class: 'empty' }, t('hist.none')));
      for (const e of data.entries) {
        const bad = e.type === 'result' && e.status === 'rejected';
        list.append(h('div', { class: 'row' + (bad ? ' bad' : ''), 'data-history': e.type },
          h('div', { class: 'main' },
            h('div', { class: 'l2' }, dateTime(new Date(e.at_wall_ms).toISOString())),
            h('div', { class: 'l3' }, line(e)))));
      }
      el.append(h('h2', {}, t('sheet.history.title', { conf: `#${c.counter} ${c.op}` })),
        h('div', { class: 'body' }, list),
        h('div', { class: 'foot' }, button(t('btn.close'), '', closeSheet, { 'data-cmd': 'back' })));
    });
  }

  function releaseSheet(op) {
    askSheet('release', t('sheet.release.title'), t('sheet.release.text', { op: op.op, reason: op.status_reason || '–' }),
      t('btn.release'), 'primary', () => superCommand('release', { op: op.op }));
  }

  function reverseSheet(c) {
    askSheet('reverse', t('sheet.reverse.title'), t('sheet.reverse.text', { conf: `#${c.counter} ${c.op}` }), t('btn.reverse'), 'danger',
      () => superCommand('reverse', { op: c.op, counter: c.counter }));
  }

  function resendSheet(c) {
    askSheet('resend', t('sheet.resend.title'),
      t('sheet.resend.text', { conf: `#${c.counter} ${c.op}`, message: c.erp_message || '' }), t('btn.retry'), 'warn',
      () => superCommand('resend', { op: c.op, counter: c.counter }));
  }

  function correctSheet(op) {
    const vals = { good: '', scrap: '' };
    const sign = { good: 1, scrap: 1 };
    let field = 'good';
    let why = null;
    const whys = ['correct.recount', 'correct.sensor', 'correct.test_parts', 'correct.other'];
    openSheet('correct', (el) => {
      let pad = null;
      const label = (f) => `${t('sheet.correct.' + f)} ${sign[f] < 0 ? '−' : '+'}${vals[f] || '0'}`;
      const fieldButtons = ['good', 'scrap'].map((f) => button(label(f), f === field ? 'sel' : '', () => {
        field = f;
        redraw();
      }, { 'data-field-select': f }));
      const ok = button(t('btn.ok'), 'primary', async () => {
        const delta = (f) => (vals[f] ? String(sign[f] * Number(vals[f])) : '0');
        const r = await superCommand('correct-count', {
          op: op.op,
          good_delta: delta('good'),
          scrap_delta: delta('scrap'),
          reason: catalogs.en[why] || why,
        });
        if (r.done) closeSheet();
      }, { 'data-cmd': 'ok' });
      const redraw = () => {
        fieldButtons.forEach((b, i) => {
          const f = i ? 'scrap' : 'good';
          b.textContent = label(f);
          b.classList.toggle('sel', f === field);
        });
        for (const b of el.querySelectorAll('[data-why]')) b.classList.toggle('sel', b.dataset.why === why);
        ok.disabled = !why || !(vals.good || vals.scrap);
        if (pad) pad.repaint();
      };
      pad = numpad('', (v) => { vals[field] = v; redraw(); }, { sign: () => sign[field] });
      const left = h('div', { class: 'grow' },
        h('div', { class: 'grid two' }, fieldButtons,
          button(t('sheet.correct.minus'), '', () => { sign[field] = -sign[field]; redraw(); }, { 'data-cmd': 'sign' })),
        h('div', { class: 'group-title' }, t('sheet.correct.why')),
        h('div', { class: 'grid two' }, whys.map((w) => button(t(w), '', () => { why = w; redraw(); }, { 'data-why': w }))));
      el.append(h('h2', {}, t('sheet.correct.title', { op: op.op })), h('div', { class: 'body' }, left, pad), foot(ok));
      redraw();
    });
  }

  // ------------------------------------------------------------------ start

  function tick() {
    $('clock').textContent = new Date().toLocaleTimeString(locale(), { hour: '2-digit', minute: '2-digit' });
    if (supervisor && Date.now() > supervisorUntil) dropSupervisor();
    if (S) {
      renderBanner();
      renderHeader();
    }
    if (Date.now() - lastMessage > 12000) {
      setConn(false);
      connect(); // no heartbeat for a while: the stream is dead even if the browser has not noticed
    }
  }

  async function loadCatalogs() {
    await Promise.all(LANGS.map(async (l) => {
      try {
        const resp = await fetch(`/i18n/${l}.json?v=${ASSETS}`);
        catalogs[l] = await resp.json();
      } catch (err) {
        catalogs[l] = catalogs[l] || {};
      }
    }));
  }

  async function start() {
    $('conn').textContent = '…';
    $('btn-lang').addEventListener('click', () => {
      lang = lang === 'en' ? 'de' : 'en';
      localStorage.setItem('panel.lang', lang);
      renderAll();
      renderSheet();
    });
    $('btn-super').addEventListener('click', () => (token ? logout() : withSupervisor(null)));
    $('toast-close').addEventListener('click', hideToast);
    $('state').addEventListener('click', () => {
      const stop = pendingStop() || (S && S.stop && !S.stop.reason ? S.stop : null);
      if (stop) reasonSheet(stop, false);
      else show('order');
    });
    for (const tab of document.querySelectorAll('.tab')) tab.addEventListener('click', () => show(tab.dataset.view));
    await loadCatalogs();
    applyStatic();
    $('conn').textContent = t('conn.connecting');
    connect();
    setInterval(tick, 1000);
    tick();
  }

  start();
})();
