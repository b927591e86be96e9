// Dead letters: deliveries that failed for good, with Retry and Drop.
// Both are admin calls: the server answers 403 unless it runs with
// --web.enable-admin-api, and the banner then shows its message.
import { api, h, showError, clearError, time, pills, badge, table, row, alertLink } from './lib.js';

// retried lists what was retried in this session, to follow each one
// until its destination is delivered (or dead again).
const retried = [];

export function deadView(main) {
  const list = h('div', { class: 'table-wrap' });
  const summary = h('div', { class: 'summary muted' }, 'Loading…');
  const follow = h('div', { id: 'retried', class: 'retried' });
  const retryAll = h('button', { type: 'button', class: 'btn', id: 'retry-all' }, 'Retry all');
  main.append(
    h('div', { class: 'title-row' }, h('h1', {}, 'Dead letters'), retryAll),
    h('p', { class: 'muted' }, 'Deliveries that failed for good (a rejected payload, or retries past max_age). Retry queues the newest state again; Drop forgets the delivery.'),
    follow, summary, list);
  let letters = [];
  let stopped = false;

  async function load() {
    try {
      letters = await api('dead-letters');
      clearError();
    } catch (e) {
      summary.textContent = '';
      showError(e);
      return;
    }
    summary.textContent = letters.length === 0 ? 'No dead letters.' : `${letters.length} dead letter${letters.length === 1 ? '' : 's'}`;
    const cols = ['ID', 'Alert', 'Target', 'Reason', 'Error', 'Attempts', 'Died', ''];
    list.replaceChildren(letters.length === 0 ? '' : table('dead', cols, letters.map((d) => row(cols, [
      h('span', { class: 'mono' }, `#${d.id}`),
      h('div', { class: 'alert-cell' },
        keyLooksLikeIdentity(d.key)
          ? h('a', { href: alertLink(d.key), class: 'alertname' }, d.alertname || d.key)
          : h('span', { class: 'alertname' }, d.alertname || d.key),
        ' ', pills(d.labels, ['alertname'])),
      h('span', { class: 'mono target' }, d.target),
      h('b', {}, d.reason || '–'),
      h('span', { class: 'err', title: d.error }, d.error || '–'),
      String(d.attempts),
      time(d.created_at),
      h('span', { class: 'actions' },
        h('button', { type: 'button', class: 'btn btn-primary btn-sm', dataset: { action: 'retry', id: d.id }, onclick: () => retry(d) }, 'Retry'),
        h('button', { type: 'button', class: 'btn btn-danger btn-sm', dataset: { action: 'drop', id: d.id }, onclick: () => drop(d) }, 'Drop')),
    ], { dataset: { id: d.id } }))));
  }

  async function retry(d) {
    try {
      await api(`dead-letters/${d.id}/retry`, { method: 'POST' });
    } catch (e) {
      showError(e);
      return;
    }
    retried.unshift({ letter: d, state: 'queued', since: Date.now() });
    renderFollow();
    load();
    track();
  }

  async function drop(d) {
    if (!confirm(`Drop dead letter #${d.id} (${d.alertname || d.key} → ${d.target})? It will not be delivered.`)) return;
    try {
      await api(`dead-letters/${d.id}`, { method: 'DELETE' });
    } catch (e) {
      showError(e);
      return;
    }
    load();
  }

  retryAll.addEventListener('click', async () => {
    if (letters.length === 0) return;
    if (!confirm(`Retry all ${letters.length} dead letters?`)) return;
    try {
      await api('dead-letters/retry', { method: 'POST' });
    } catch (e) {
      showError(e);
      return;
    }
    for (const d of letters) retried.unshift({ letter: d, state: 'queued', since: Date.now() });
    renderFollow();
    load();
    track();
  });

  function renderFollow() {
    if (retried.length === 0) { follow.replaceChildren(); return; }
    follow.replaceChildren(h('h2', {}, 'Retried'), h('ul', { class: 'retried-list' }, retried.slice(0, 20).map((r) => {
      const d = r.letter;
      const name = d.alertname || d.key;
      return h('li', { dataset: { id: d.id, state: r.state } },
        badge(r.state, r.error), ' ',
        keyLooksLikeIdentity(d.key) ? h('a', { href: alertLink(d.key) }, name) : h('span', {}, name),
        ' → ', h('span', { class: 'mono' }, d.target),
        h('span', { class: 'muted' }, ` (dead letter #${d.id})`),
        r.error ? h('div', { class: 'err small' }, r.error) : null);
    })));
  }

  // track polls each retried delivery's alert until it leaves
  // queued/retrying, for at most two minutes.
  let timer = null;
  async function track() {
    clearTimeout(timer);
    let open = false;
    for (const r of retried) {
      if (r.state !== 'queued' && r.state !== 'retrying') continue;
      if (Date.now() - r.since > 120000) continue;
      open = true;
      try {
        const a = await api('alerts/' + encodeURIComponent(r.letter.key));
        const dest = (a.destinations || []).find((x) => x.target === r.letter.target);
        if (dest) {
          r.state = dest.state;
          r.error = dest.last_error;
        }
      } catch {
        // Group keys have no alert page; the dead-letter list still shows
        // whether it died again.
      }
    }
    if (stopped) return;
    renderFollow();
    if (open) timer = setTimeout(track, 1000);
    if (retried.some((r) => r.state === 'dead')) load();
  }

  renderFollow();
  load();
  track();
  return () => { stopped = true; clearTimeout(timer); };
}

// keyLooksLikeIdentity: in alert mode a state key is the alert's identity
// (am:…, pd:…, mackerel:…); in group mode it is a group key, which has no
// alert page.
function keyLooksLikeIdentity(key) {
  return /^(am|pd|mackerel):/.test(key || '');
}
