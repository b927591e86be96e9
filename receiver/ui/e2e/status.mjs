// End-to-end test of the status page in headless Chromium, run by
// receiver/ui/browser_test.go against a real alertfan server. Input (env):
//   ALERTFAN_URL       the server's base URL (ends with /)
//   ALERTFAN_URL_READONLY  a server without --web.enable-admin-api
//   ALERTFAN_URL_PROXIED   ALERTFAN_URL behind a proxy at a sub-path
//   ALERTFAN_USER, ALERTFAN_PASSWORD   basic auth of the web config
//   CHROMIUM           the browser binary
//   USER_DATA_DIR      a fresh profile directory
//   ALERTFAN_SCREENSHOTS  optional: a directory for the PNGs
//   E2E_SEARCH, E2E_SEARCH_HIT, E2E_DEAD  the matcher to search, the
//     alertname it must find alone, and the alertname of the dead letter
//   E2E_ROUTING_KEY    a routing key that the preview must not show
// Prints one line per step; exits non-zero with the failing step.
import { chromium } from 'playwright-core';
import path from 'node:path';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const base = env('ALERTFAN_URL');
const shots = process.env.ALERTFAN_SCREENSHOTS || '';
const search = env('E2E_SEARCH');
const searchHit = env('E2E_SEARCH_HIT');
const deadName = env('E2E_DEAD');
const T = 30000; // ms per wait; CI machines can be slow

const step = (s) => console.log(`step: ${s}`);
async function shot(page, name) {
  if (!shots) return;
  await page.screenshot({ path: path.join(shots, name), fullPage: true });
  step(`screenshot ${name}`);
}
function expect(cond, msg) {
  if (!cond) throw new Error(msg);
}

const browser = await chromium.launchPersistentContext(env('USER_DATA_DIR'), {
  executablePath: env('CHROMIUM'),
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage'],
  httpCredentials: { username: env('ALERTFAN_USER'), password: env('ALERTFAN_PASSWORD') },
  viewport: { width: 1280, height: 800 },
  colorScheme: 'light',
  timezoneId: 'UTC',
  locale: 'en-US',
});
const problems = [];
function watch(page) {
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // A 4xx/5xx the page handled (e.g. the preview probe's 400) is logged
    // by Chromium as a console error; only script errors count.
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
}

let code = 0;
try {
  const page = browser.pages()[0] || await browser.newPage();
  watch(page);

  step('load /');
  await page.goto(base, { waitUntil: 'domcontentloaded' });
  const rows = page.locator('#alerts tbody tr');
  await rows.nth(3).waitFor({ timeout: T });
  await page.locator('#alerts tbody tr .badge-delivered').first().waitFor({ timeout: T });
  expect(await page.locator('#banner').isHidden(), 'error banner shown on load: ' + await page.locator('#banner').textContent());
  expect(await page.locator('#tabs a.active').textContent() === 'Alerts', 'Alerts tab not active');
  await shot(page, 'status-alerts.png');

  step(`search ${search}`);
  await page.fill('#matchers', search);
  await page.click('#search');
  await page.waitForFunction((name) => {
    const r = document.querySelectorAll('#alerts tbody tr');
    return r.length === 1 && r[0].querySelector('.alertname').textContent === name;
  }, searchHit, { timeout: T });
  const hash = new URL(page.url()).hash;
  expect(new URLSearchParams(hash.slice(hash.indexOf('?') + 1)).get('matchers') === search, `search not in URL: ${page.url()}`);

  step('open the timeline');
  await page.click(`#alerts tbody tr .alertname`);
  await page.locator('.timeline tbody tr[data-event="call"]').first().waitFor({ timeout: T });
  const events = await page.locator('.timeline tbody tr').evaluateAll((trs) => trs.map((tr) => tr.dataset.event));
  expect(events[0] === 'accepted', `first event is ${events[0]}, want accepted (${events})`);
  expect(events.includes('call'), `no call event in ${events}`);
  expect((await page.locator('h1.alert-title').textContent()).includes(searchHit), 'detail shows another alert');
  await page.locator('.dests-table tbody tr[data-state="delivered"]').first().waitFor({ timeout: T });

  // Preview (POST api/v1/preview) is optional: the button shows only when
  // the server has it.
  await page.waitForFunction(() => window.__previewProbed === true, null, { timeout: T });
  if (await page.locator('#preview').isVisible()) {
    step('preview');
    await page.click('#preview');
    await page.locator('#preview-out .payload').first().waitFor({ timeout: T });
    const text = await page.locator('#preview-out').textContent();
    expect(text.includes('team-db/pagerduty/0') && text.includes('DiskFull'), `preview shows: ${text.slice(0, 300)}`);
    // The preview is of this very alert: the dedup key PagerDuty got.
    const sent = await page.evaluate(async () => {
      const id = decodeURIComponent(location.hash.slice('#/alert/'.length));
      const r = await fetch('api/v1/alerts/' + encodeURIComponent(id));
      return (await r.json()).data.destinations.find((d) => d.kind === 'pagerduty').ref;
    });
    expect(sent && text.includes(sent), `preview's dedup key is not ${sent}`);
    expect(!text.includes(process.env.E2E_ROUTING_KEY || '\u0000'), 'preview shows the routing key');
  } else {
    step('preview: not served by this server, button hidden');
  }

  step('dead letters');
  await page.click('#tabs a[data-tab="dead"]');
  const deadRow = page.locator('table.dead tbody tr', { hasText: deadName });
  await deadRow.waitFor({ timeout: T });
  expect((await deadRow.textContent()).includes('400'), `dead letter shows no HTTP 400: ${await deadRow.textContent()}`);

  step('retry');
  const id = await deadRow.getAttribute('data-id');
  await deadRow.locator('button[data-action="retry"]').click();
  await page.locator(`#retried li[data-id="${id}"][data-state="delivered"]`).waitFor({ timeout: T });
  await page.locator(`table.dead tbody tr[data-id="${id}"]`).waitFor({ state: 'detached', timeout: T });
  expect(await page.locator('#banner').isHidden(), 'error banner after retry: ' + await page.locator('#banner').textContent());
  await shot(page, 'status-dead.png');

  step('alert after retry');
  await page.click(`#retried li[data-id="${id}"] a`);
  await page.locator('.dests-table tbody tr[data-state="delivered"]').first().waitFor({ timeout: T });
  // The call that died, the retry, the call that delivered.
  const after = await page.locator('.timeline tbody tr').evaluateAll((trs) => trs.map((tr) => `${tr.dataset.event}:${tr.dataset.outcome}`));
  const died = after.indexOf('call:dead');
  const again = after.indexOf('retried:');
  expect(died >= 0 && again > died && after.indexOf('call:success', again) > again, `timeline after retry: ${after}`);
  await shot(page, 'status-timeline.png');

  step('other views');
  for (const [tab, sel] of [['ratelimits', 'table.ratelimits tbody tr'], ['routes', '.route-tree .route'], ['config', '#config-yaml']]) {
    await page.click(`#tabs a[data-tab="${tab}"]`);
    await page.locator(sel).first().waitFor({ timeout: T });
    expect(await page.locator('#banner').isHidden(), `error banner on ${tab}: ` + await page.locator('#banner').textContent());
  }
  await page.waitForFunction(() => document.querySelector('#config-yaml').dataset.loaded === 'true', null, { timeout: T });
  const yaml = await page.locator('#config-yaml').textContent();
  expect(yaml.includes('<secret>'), 'config view shows no <secret>');

  step('retry without --web.enable-admin-api');
  await page.goto(env('ALERTFAN_URL_READONLY') + '#/dead', { waitUntil: 'domcontentloaded' });
  await page.locator('table.dead tbody tr button[data-action="retry"]').first().click();
  await page.locator('#banner').waitFor({ state: 'visible', timeout: T });
  const refused = await page.locator('#banner-text').textContent();
  expect(refused.includes('--web.enable-admin-api'), `banner after a refused retry: ${refused}`);
  expect(await page.locator('table.dead tbody tr').count() === 1, 'the refused retry changed the list');

  step('phone');
  const phone = await browser.newPage();
  watch(phone);
  await phone.setViewportSize({ width: 375, height: 812 });
  // Through a reverse proxy that serves alertfan under /alertfan/.
  await phone.goto(env('ALERTFAN_URL_PROXIED'), { waitUntil: 'domcontentloaded' });
  await phone.locator('#alerts tbody tr').nth(3).waitFor({ timeout: T });
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow <= 0, `page is ${overflow}px wider than a 375px phone`);
  expect(await phone.locator('#alerts thead').isHidden(), 'table header shown on a phone (rows are not cards)');
  await shot(phone, 'status-phone.png');
  await phone.locator('#alerts tbody tr .alertname').first().click();
  await phone.locator('.timeline tbody tr').first().waitFor({ timeout: T });
  expect(new URL(phone.url()).pathname === '/alertfan/', `left the sub-path: ${phone.url()}`);

  expect(problems.length === 0, problems.join('\n'));
  step('ok');
} catch (e) {
  console.error(`FAIL: ${e.message}`);
  if (problems.length) console.error(problems.join('\n'));
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
