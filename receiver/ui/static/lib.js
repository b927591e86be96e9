// Shared helpers: the API client, DOM building and formatting.
// Everything that came from an alert (labels, errors, keys) is put into
// the page as text, never as HTML.

export class APIError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// api calls api/v1/<path> (relative, so a sub-path behind a proxy works)
// and returns the answer's "data" (or the whole body when it has none).
// A non-2xx answer or {"status":"error"} throws APIError with the server's
// message.
export async function api(path, opts = {}) {
  const init = { credentials: 'same-origin', headers: { Accept: 'application/json' }, ...opts };
  if (opts.json !== undefined) {
    init.body = JSON.stringify(opts.json);
    init.headers['Content-Type'] = 'application/json';
    delete init.json;
  }
  let res;
  try {
    res = await fetch('api/v1/' + path, init);
  } catch (e) {
    throw new APIError(`alertfan is unreachable (${e.message})`, 0);
  }
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  if (!res.ok || !body || body.status === 'error') {
    const msg = (body && body.error) || `${res.status} ${res.statusText}`.trim();
    throw new APIError(msg, res.status);
  }
  return body.data !== undefined ? body.data : body;
}

// h builds an element: h('a', {href: '#', class: 'x', onclick: f}, 'text', child…).
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

// Banner: one visible line for API errors.
export function showError(err) {
  const msg = err instanceof Error ? err.message : String(err);
  document.getElementById('banner-text').textContent = msg;
  document.getElementById('banner').hidden = false;
}

export function clearError() {
  document.getElementById('banner').hidden = true;
}

// ago formats an RFC 3339 time relative to now: "12s ago", "in 3m".
export function ago(t) {
  if (!t) return '';
  const d = (Date.parse(t) - Date.now()) / 1000;
  if (Number.isNaN(d)) return t;
  const a = Math.abs(d);
  let s;
  if (a < 1) return 'now';
  if (a < 60) s = `${Math.round(a)}s`;
  else if (a < 3600) s = `${Math.round(a / 60)}m`;
  else if (a < 86400) s = `${Math.round(a / 3600)}h`;
  else s = `${Math.round(a / 86400)}d`;
  return d < 0 ? `${s} ago` : `in ${s}`;
}

// time renders a <time> with the relative form and the exact UTC time
// as its tooltip.
export function time(t, cls) {
  if (!t) return h('span', { class: 'muted' }, '–');
  return h('time', { datetime: t, title: t, class: cls }, ago(t));
}

// pills renders labels as Alertmanager does: name="value", alertname first.
export function pills(labels, skip = []) {
  const names = Object.keys(labels || {}).filter((n) => !skip.includes(n)).sort((a, b) => {
    if (a === 'alertname') return -1;
    if (b === 'alertname') return 1;
    return a < b ? -1 : a > b ? 1 : 0;
  });
  return h('span', { class: 'pills' }, names.map((n) => h('span', { class: 'pill', title: `${n}="${labels[n]}"` }, `${n}="${labels[n]}"`)));
}

// badge renders a state or status word in its colour.
export function badge(word, extra) {
  return h('span', { class: `badge badge-${word || 'none'}`, title: extra }, word || 'none');
}

// copyable renders a key in monospace with a button that copies it.
// Keys longer than 20 characters (PagerDuty dedup keys are often 64-digit
// hashes) show their start; the tooltip and the copy have all of it.
export function copyable(text, title) {
  const shown = text.length > 20 ? text.slice(0, 12) + '…' : text;
  const code = h('code', { class: 'key', title: (title ? title + ': ' : '') + text }, shown);
  const btn = h('button', {
    type: 'button', class: 'btn-copy', title: 'Copy', 'aria-label': 'Copy ' + (title || ''),
    onclick: async (e) => {
      e.preventDefault();
      try {
        await navigator.clipboard.writeText(text);
        btn.textContent = 'copied';
      } catch {
        // No clipboard (plain HTTP): select the text for Ctrl+C instead.
        code.textContent = text;
        const r = document.createRange();
        r.selectNodeContents(code);
        getSelection().removeAllRanges();
        getSelection().addRange(r);
      }
      setTimeout(() => { btn.textContent = 'copy'; }, 1500);
    },
  }, 'copy');
  return h('span', { class: 'copyable' }, code, btn);
}

// external renders a link that opens in a new tab.
export function external(href, text) {
  return h('a', { href, target: '_blank', rel: 'noopener noreferrer', class: 'ext' }, text, ' ↗');
}

// table renders a compact table; rows are arrays of cells. labels name the
// columns and, on narrow screens where rows become cards, each cell.
export function table(cls, labels, rows) {
  return h('table', { class: 'table ' + cls },
    h('thead', {}, h('tr', {}, labels.map((l) => h('th', {}, l)))),
    h('tbody', {}, rows.map((r) => (r instanceof Node ? r : row(labels, r)))));
}

export function row(labels, cells, attrs) {
  return h('tr', attrs || {}, cells.map((c, i) => h('td', { dataset: { label: labels[i] } }, c)));
}

// alertLink is the fragment URL of an alert's detail view.
export function alertLink(identity) {
  return '#/alert/' + encodeURIComponent(identity);
}
