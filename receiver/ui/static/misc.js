// Rate limits, the route tree and the loaded config.
import { api, h, showError, clearError, time, table, row } from './lib.js';

export function ratelimitsView(main) {
  const wrap = h('div', { class: 'table-wrap' }, h('p', { class: 'muted' }, 'Loading…'));
  main.append(h('h1', {}, 'Rate limits'),
    h('p', { class: 'muted' }, 'Calls per destination key, in this process. Budget: calls that may start now; waiting: calls waiting for a slot; queued: alerts with a delivery owed; held until: set by a 429 answer.'),
    wrap);
  let timer = null;
  async function load() {
    try {
      const rows = await api('ratelimits');
      clearError();
      const cols = ['Target', 'Kind', 'Key', 'Limit / min', 'Budget', 'Waiting', 'Queued', 'Next slot', 'Held until'];
      wrap.replaceChildren((rows || []).length === 0 ? h('p', { class: 'muted' }, 'No targets.') : table('ratelimits', cols, rows.map((r) => row(cols, [
        h('span', {}, h('span', { class: 'mono' }, r.target), h('div', { class: 'muted small' }, r.receiver)),
        r.kind,
        h('code', { class: 'key' }, r.key),
        String(r.limit_per_minute ?? '–'),
        h('span', { class: r.budget === 0 ? 'warn' : '' }, String(r.budget ?? '–')),
        String(r.waiting ?? 0),
        String(r.queued ?? 0),
        r.next_slot ? time(r.next_slot) : '–',
        r.held_until ? time(r.held_until, 'warn') : '–',
      ]))));
    } catch (e) {
      showError(e);
    }
  }
  load();
  timer = setInterval(() => { if (!document.hidden) load(); }, 5000);
  return () => clearInterval(timer);
}

export function routesView(main) {
  const tree = h('div', { class: 'route-tree' }, h('p', { class: 'muted' }, 'Loading…'));
  const recvs = h('div', {});
  main.append(h('h1', {}, 'Routes'), tree, h('h2', {}, 'Receivers'), recvs);
  api('routes').then((d) => {
    clearError();
    // The tree is data.route; the root-level shape of an older draft of
    // the API is still read.
    tree.replaceChildren(h('ul', { class: 'tree' }, routeNode(d.route || d, true)));
    const cols = ['Receiver', 'Targets'];
    recvs.replaceChildren(h('div', { class: 'table-wrap' }, table('receivers', cols, (d.receivers || []).map((r) => row(cols, [
      h('b', {}, r.name),
      (r.targets || []).length === 0 ? h('span', { class: 'muted' }, 'none (drops)')
        : h('ul', { class: 'plain' }, r.targets.map((t) => h('li', {},
          h('span', { class: 'mono' }, t.id), ' ', h('span', { class: 'kind' }, t.kind), ' ', h('code', { class: 'key' }, t.destination || '')))),
    ])))));
  }, showError);
}

function routeNode(r, root) {
  const m = r.matchers || [];
  const box = h('div', { class: 'route' + (root ? ' root' : ''), title: r.path ? 'route ' + r.path : undefined },
    h('span', { class: 'route-recv' }, root ? 'root → ' : '→ ', h('b', {}, r.receiver || '(inherited)')),
    m.length ? h('span', { class: 'pills' }, m.map((x) => h('span', { class: 'pill' }, x))) : (root ? null : h('span', { class: 'muted' }, 'matches all')),
    r.continue ? h('span', { class: 'tag' }, 'continue') : null,
    (r.group_by || []).length ? h('span', { class: 'tag', title: 'group_by' }, 'group by ' + r.group_by.join(', ')) : null);
  const kids = r.routes || [];
  return h('li', {}, box, kids.length ? h('ul', {}, kids.map((k) => routeNode(k, false))) : null);
}

export function configView(main) {
  const meta = h('div', { class: 'meta' });
  const pre = h('pre', { class: 'code config', id: 'config-yaml' }, 'Loading…');
  main.append(h('h1', {}, 'Config'), meta, pre);
  api('status/config').then((d) => {
    clearError();
    meta.replaceChildren(
      d.file ? h('span', {}, 'file ', h('code', {}, d.file)) : null,
      d.loaded_at ? h('span', {}, 'loaded ', time(d.loaded_at)) : null,
      h('span', { class: 'muted' }, 'secrets are shown as <secret>'));
    pre.textContent = d.yaml || '';
    pre.dataset.loaded = 'true';
  }, (e) => { pre.textContent = ''; showError(e); });
}
