// Router: the view is the URL fragment, #/<view>[/<arg>][?query], so a
// search can be linked and the page itself stays at one (relative) URL.
import { clearError } from './lib.js';
import { alertsView, alertView } from './alerts.js';
import { deadView } from './dead.js';
import { ratelimitsView, routesView, configView } from './misc.js';

const views = {
  alerts: alertsView,
  alert: alertView,
  dead: deadView,
  ratelimits: ratelimitsView,
  routes: routesView,
  config: configView,
};

let cleanup = null;

export function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
  const slash = path.indexOf('/');
  const name = slash < 0 ? path : path.slice(0, slash);
  const arg = slash < 0 ? '' : decodeURIComponent(path.slice(slash + 1));
  return { name: views[name] ? name : 'alerts', arg, params };
}

function render() {
  if (cleanup) cleanup();
  cleanup = null;
  clearError();
  const { name, arg, params } = parseHash();
  const tab = name === 'alert' ? 'alerts' : name;
  for (const a of document.querySelectorAll('#tabs a')) {
    a.classList.toggle('active', a.dataset.tab === tab);
    if (a.dataset.tab === tab) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const main = document.getElementById('main');
  main.replaceChildren();
  main.dataset.view = name;
  cleanup = views[name](main, arg, params) || null;
}

document.getElementById('banner-close').addEventListener('click', clearError);
window.addEventListener('hashchange', render);
render();
