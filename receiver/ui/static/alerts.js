// Alerts: the list with search and filters, and one alert's detail view
// with its destinations, timeline and a preview of the payloads.
import {
  api, h, showError, clearError, time, pills, badge, copyable, external, table, row, alertLink, ago,
} from './lib.js';

const REFRESH_MS = 10000;
// STATES are the server's ?state= values: a destination's state, or the
// alert's own status.
const STATES = ['queued', 'retrying', 'delivered', 'dead', 'none', 'firing', 'acknowledged', 'resolved'];
const PAGE = 100;

// matcherParam turns the search box into the API's selector: Alertmanager
// syntax with or without braces ({severity="critical"} or
// severity=critical, team=~"db|web").
export function matcherParam(text) {
  const t = text.trim();
  if (!t) return '';
  return t.startsWith('{') ? t : `{${t}}`;
}

// receivers caches the receiver names from api/v1/routes for the filter.
let receiversPromise = null;
function receivers() {
  if (!receiversPromise) {
    receiversPromise = api('routes').then((d) => (d.receivers || []).map((r) => r.name)).catch(() => {
      receiversPromise = null;
      return [];
    });
  }
  return receiversPromise;
}

// autoRefresh survives view changes within the session.
let autoRefresh = true;

export function alertsView(main, _arg, params) {
  const q = {
    matchers: params.get('matchers') || '',
    receiver: params.get('receiver') || '',
    state: params.get('state') || '',
  };
  const input = h('input', {
    type: 'search', id: 'matchers', name: 'matchers', class: 'mono grow', value: q.matchers,
    placeholder: '{severity="critical", team=~"db|web"}', 'aria-label': 'Matchers', autocomplete: 'off', spellcheck: 'false',
  });
  const recv = h('select', { id: 'receiver', name: 'receiver', 'aria-label': 'Receiver' },
    h('option', { value: '' }, 'All receivers'));
  if (q.receiver) recv.append(h('option', { value: q.receiver, selected: true }, q.receiver));
  receivers().then((names) => {
    for (const n of names) if (n !== q.receiver) recv.append(h('option', { value: n }, n));
  });
  const state = h('select', { id: 'state', name: 'state', 'aria-label': 'State' },
    h('option', { value: '' }, 'Any state'),
    STATES.map((s) => h('option', { value: s, selected: s === q.state }, s)));
  const auto = h('input', { type: 'checkbox', id: 'autorefresh', checked: autoRefresh });
  const form = h('form', { class: 'filters', role: 'search' },
    input, recv, state,
    h('button', { type: 'submit', class: 'btn btn-primary', id: 'search' }, 'Search'),
    h('label', { class: 'check', title: `Reload every ${REFRESH_MS / 1000} s` }, auto, 'Auto-refresh'));
  const summary = h('div', { class: 'summary muted', id: 'summary' }, 'Loading…');
  const body = h('tbody', {});
  const labels = ['Status', 'Alert', 'Input', 'Last seen', 'Destinations'];
  const tbl = h('table', { class: 'table alerts', id: 'alerts' },
    h('thead', {}, h('tr', {}, labels.map((l) => h('th', {}, l)))), body);
  const more = h('button', { type: 'button', class: 'btn', id: 'more', hidden: true }, 'More');
  main.append(h('h1', {}, 'Alerts'), form, summary, h('div', { class: 'table-wrap' }, tbl), more);

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    if (input.value.trim()) p.set('matchers', input.value.trim());
    if (recv.value) p.set('receiver', recv.value);
    if (state.value) p.set('state', state.value);
    const next = '#/alerts' + (p.toString() ? '?' + p : '');
    if (location.hash === next) load(false); else location.hash = next;
  });
  recv.addEventListener('change', () => form.requestSubmit());
  state.addEventListener('change', () => form.requestSubmit());

  let shown = 0;
  let nextPage = '';
  let busy = false;
  const query = (limit, page) => {
    const p = new URLSearchParams();
    const m = matcherParam(q.matchers);
    if (m) p.set('matchers', m);
    if (q.receiver) p.set('receiver', q.receiver);
    if (q.state) p.set('state', q.state);
    p.set('limit', String(limit));
    if (page) p.set('page', page);
    return 'alerts?' + p;
  };
  // load fetches the first page again (refresh keeps as many rows as were
  // shown) or, with append, the next page.
  async function load(append) {
    if (busy) return;
    busy = true;
    try {
      const limit = append ? PAGE : Math.min(1000, Math.max(PAGE, shown));
      const d = await api(query(limit, append ? nextPage : ''));
      const alerts = d.alerts || [];
      if (!append) { body.replaceChildren(); shown = 0; }
      for (const a of alerts) body.append(alertRow(labels, a));
      shown += alerts.length;
      nextPage = d.next_page || '';
      more.hidden = !nextPage;
      summary.textContent = shown === 0 ? 'No alerts match.' : `${shown} alert${shown === 1 ? '' : 's'}${nextPage ? ' (more available)' : ''}, newest first · updated ${new Date().toLocaleTimeString()}`;
      clearError();
    } catch (e) {
      summary.textContent = '';
      showError(e);
    } finally {
      busy = false;
    }
  }
  more.addEventListener('click', () => load(true));

  let timer = null;
  const schedule = () => {
    clearInterval(timer);
    timer = autoRefresh ? setInterval(() => { if (!document.hidden) load(false); }, REFRESH_MS) : null;
  };
  auto.addEventListener('change', () => { autoRefresh = auto.checked; schedule(); });
  load(false);
  schedule();
  return () => clearInterval(timer);
}

function alertRow(labels, a) {
  const name = (a.labels && a.labels.alertname) || a.identity;
  return row(labels, [
    badge(a.status),
    h('div', { class: 'alert-cell' },
      h('a', { href: alertLink(a.identity), class: 'alertname' }, name),
      ' ', pills(a.labels, ['alertname'])),
    h('span', { class: 'input' }, a.input),
    time(a.last_seen),
    h('div', { class: 'dests' }, (a.destinations || []).map(destLine)),
  ], { dataset: { identity: a.identity } });
}

// destLine is one destination in the list: state, target, then what to
// open (the link the API gives, else the key to copy) and, while retrying,
// when and why.
function destLine(d) {
  const why = [d.last_reason, d.last_error].filter(Boolean).join(': ');
  const line = h('div', { class: 'dest', dataset: { target: d.target, state: d.state } },
    badge(d.state, why || undefined),
    h('span', { class: 'target mono', title: `${d.kind} · ${d.key}` }, d.target),
    refOf(d));
  const detail = [];
  if ((d.state === 'retrying' || d.state === 'queued') && d.next_attempt) {
    detail.push(h('span', {}, d.attempt ? `attempt ${d.attempt}, ` : '', 'next ', time(d.next_attempt)));
  }
  if (d.state === 'dead' && d.dead_letter_id) detail.push(h('a', { href: '#/dead' }, `dead letter #${d.dead_letter_id}`));
  if (why && d.state !== 'delivered') detail.push(h('span', { class: 'err', title: why }, why));
  if (detail.length) line.append(h('div', { class: 'dest-detail' }, detail.map((x, i) => [i ? ' · ' : '', x])));
  return line;
}

function refOf(d) {
  if (d.link) return external(d.link, d.ref || (d.kind === 'backlog' ? 'issue' : 'incidents'));
  if (d.ref) return copyable(d.ref, d.kind === 'pagerduty' ? 'PagerDuty dedup key' : 'reference');
  return null;
}

// previewAvailable is learnt once per page load: a server without
// POST api/v1/preview answers 404 (or 405), and then no button is shown.
// The probe sends an empty body, which a server that has it answers with
// 400 or an empty list; nothing is ever sent to a target.
let previewAvailable = null;
function probePreview() {
  if (previewAvailable === null) {
    previewAvailable = fetch('api/v1/preview', {
      method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json' }, body: '{}',
    }).then((r) => r.status !== 404 && r.status !== 405, () => false);
  }
  return Promise.resolve(previewAvailable);
}

export function alertView(main, identity) {
  const head = h('div', {});
  const body = h('div', {});
  const back = h('a', { href: '#/alerts', class: 'back' }, '← Alerts');
  main.append(back, head, body);
  let timer = null;
  let busy = false;
  let current = null;
  let preview = null;
  async function load() {
    if (busy) return;
    busy = true;
    try {
      const a = await api('alerts/' + encodeURIComponent(identity));
      clearError();
      renderAlert(head, body, a);
      current = a;
      if (!preview) {
        // Made once, so that a refresh keeps the payloads on screen.
        preview = previewSection(() => current);
        preview.hidden = true;
        main.append(preview);
        probePreview().then((ok) => {
          preview.hidden = !ok;
          window.__previewProbed = true; // for the browser test
        });
      }
      // Keep following the alert while a delivery is still on its way.
      const moving = (a.destinations || []).some((d) => d.state === 'queued' || d.state === 'retrying');
      clearTimeout(timer);
      if (moving) timer = setTimeout(load, 2000);
    } catch (e) {
      showError(e.status === 404 ? `No alert ${identity}: ${e.message}` : e);
    } finally {
      busy = false;
    }
  }
  load();
  return () => clearTimeout(timer);
}

function renderAlert(head, body, a) {
  const name = (a.labels && a.labels.alertname) || a.identity;
  head.replaceChildren(
    h('h1', { class: 'alert-title' }, badge(a.status), ' ', name),
    h('div', { class: 'meta' },
      h('span', {}, 'identity ', copyable(a.identity)),
      h('span', {}, 'input ', h('b', {}, a.input)),
      h('span', {}, 'started ', time(a.starts_at)),
      a.ends_at ? h('span', {}, 'ended ', time(a.ends_at)) : null,
      h('span', {}, 'last seen ', time(a.last_seen))),
    h('div', { class: 'section' }, pills(a.labels)));
  const parts = [];
  const ann = a.annotations || {};
  if (Object.keys(ann).length) {
    parts.push(h('h2', {}, 'Annotations'),
      h('dl', { class: 'annotations' }, Object.keys(ann).sort().map((k) => [h('dt', {}, k), h('dd', {}, ann[k])])));
  }
  const dl = ['Target', 'State', 'Want → phase', 'Attempt', 'Next attempt', 'Reference', 'Last error'];
  parts.push(h('h2', {}, 'Destinations'), h('div', { class: 'table-wrap' }, table('dests-table', dl, (a.destinations || []).map((d) => row(dl, [
    h('span', {}, h('span', { class: 'mono' }, d.target), h('div', { class: 'muted small' }, `${d.kind} · key `, copyable(d.key, 'state key'))),
    badge(d.state),
    h('span', {}, d.want || '–', ' → ', d.phase || h('span', { class: 'muted' }, 'nothing yet')),
    d.attempt ? String(d.attempt) : '–',
    d.next_attempt ? time(d.next_attempt) : '–',
    refOf(d) || '–',
    [d.last_reason ? h('b', {}, d.last_reason) : null, d.last_reason && d.last_error ? ': ' : null,
      d.last_error ? h('span', { class: 'err' }, d.last_error) : null,
      d.dead_letter_id ? h('div', {}, h('a', { href: '#/dead' }, `dead letter #${d.dead_letter_id}`)) : null],
  ], { dataset: { target: d.target, state: d.state } })))));

  const tl = ['Time', 'Event', 'Target', 'Action', 'Outcome', 'HTTP', 'Details'];
  const events = a.history || [];
  parts.push(h('h2', {}, 'Timeline'), events.length === 0
    ? h('p', { class: 'muted' }, 'No history recorded.')
    : h('div', { class: 'table-wrap' }, table('timeline', tl, events.map((ev) => row(tl, [
      h('time', { datetime: ev.at, title: ago(ev.at) }, fmtTime(ev.at)),
      h('span', { class: `event event-${ev.event}` }, ev.event),
      ev.target ? h('span', { class: 'mono target' }, ev.target) : (ev.receiver || '–'),
      [ev.action || (ev.status && ev.event !== 'call' ? ev.status : '') || '–', ev.attempt > 1 ? h('span', { class: 'muted' }, ` #${ev.attempt}`) : null],
      ev.outcome ? badge(ev.outcome) : '–',
      ev.http_status ? String(ev.http_status) : '–',
      eventDetails(ev),
    ], { dataset: { event: ev.event, outcome: ev.outcome || '' } })))));

  body.replaceChildren(...parts);
}

function eventDetails(ev) {
  const out = [];
  if (ev.route) out.push(h('span', {}, 'route ', h('code', {}, ev.route)));
  if (ev.status && ev.event === 'call') out.push(h('span', {}, ev.status));
  if (ev.ref) out.push(h('span', {}, 'ref ', copyable(ev.ref)));
  if (ev.reason) out.push(h('b', {}, ev.reason));
  if (ev.error) out.push(h('span', { class: 'err' }, ev.error));
  if (ev.labels && ev.event !== 'accepted') out.push(pills(ev.labels));
  return out.length ? h('span', { class: 'details' }, out.map((x, i) => [i ? ' · ' : '', x])) : '–';
}

// fmtTime shows a history time in UTC to the millisecond.
function fmtTime(t) {
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return t || '';
  return d.toISOString().replace('T', ' ').replace('Z', ' UTC');
}

// previewBody asks for the alert as it is: an Alertmanager alert goes as
// a webhook with its own fingerprint and startsAt (which the PagerDuty
// dedup key and the Backlog marker are made from), others in the short
// form (labels, annotations, status).
function previewBody(a) {
  const status = a.status === 'resolved' ? 'resolved' : 'firing';
  if (a.input === 'alertmanager' && a.starts_at && a.identity.startsWith('am:')) {
    const alert = {
      status, labels: a.labels || {}, annotations: a.annotations || {}, startsAt: a.starts_at, fingerprint: a.identity.slice(3),
    };
    if (status === 'resolved' && a.ends_at) alert.endsAt = a.ends_at;
    return { version: '4', status, receiver: '', groupLabels: {}, alerts: [alert] };
  }
  return { labels: a.labels || {}, annotations: a.annotations || {}, status };
}

function previewSection(currentAlert) {
  const out = h('div', { id: 'preview-out' });
  const btn = h('button', { type: 'button', class: 'btn', id: 'preview' }, 'Preview payloads');
  const sec = h('div', { class: 'section preview' }, h('h2', {}, 'Preview'),
    h('p', { class: 'muted' }, 'What each target would get for this alert now. Nothing is sent.'), btn, out);
  btn.addEventListener('click', async () => {
    btn.disabled = true;
    const a = currentAlert();
    try {
      const data = await api('preview', { method: 'POST', json: previewBody(a) });
      // Each item: the call (method, URL without credentials) and its
      // payload, or why there is none (skip) or why it cannot be rendered.
      out.replaceChildren(...(data || []).map((p) => h('div', { class: 'payload', dataset: { target: p.target } },
        h('h3', {}, h('span', { class: 'mono' }, p.target), ' ', h('span', { class: 'kind' }, p.kind),
          p.method ? h('code', { class: 'muted small call' }, ` ${p.method} ${p.url || ''}`) : null),
        p.error ? h('p', { class: 'err' }, p.error) : null,
        p.skip ? h('p', { class: 'muted' }, 'No call: ', p.skip) : null,
        p.names_resolved === false ? h('p', { class: 'muted small' }, 'Backlog names shown as names: not resolved to ids (offline).') : null,
        p.payload !== undefined ? h('pre', { class: 'code' }, JSON.stringify(p.payload, null, 2)) : null)));
      if (!data || data.length === 0) out.replaceChildren(h('p', { class: 'muted' }, 'No target would get this alert.'));
    } catch (e) {
      if (e.status === 404 || e.status === 405) {
        previewAvailable = false;
        sec.hidden = true;
        return;
      }
      showError(e);
    } finally {
      btn.disabled = false;
    }
  });
  return sec;
}
