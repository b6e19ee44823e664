// Real-browser test of the leadscore console (/console): Debian's Chromium driven by
// playwright-core, axe-core for accessibility. Plain node, no test framework; exits non-zero
// with a message on the first failure. Run by scripts/test-console, which starts the server.
//
// Environment: LEADSCORE_URL (server, e.g. http://127.0.0.1:8080), LEADSCORE_ADMIN_KEY,
// LEADSCORE_CLIENT_KEY, LEADSCORE_THRESHOLDS_FILE (the server's thresholds file),
// LEADSCORE_ARTEFACTS (folder for screenshots); optional LEADSCORE_MODEL (propensity),
// LEADSCORE_CHURN_MODEL (a churn model whose panes must speak churn's words; none: not
// checked), LEADSCORE_CHROMIUM (/usr/bin/chromium).
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === '') throw new Error(`console.test: set ${name}`);
  return value;
};
const base = env('LEADSCORE_URL').replace(/\/$/, '');
const adminKey = env('LEADSCORE_ADMIN_KEY');
const clientKey = env('LEADSCORE_CLIENT_KEY');
const thresholdsFile = env('LEADSCORE_THRESHOLDS_FILE');
const artefacts = env('LEADSCORE_ARTEFACTS');
const model = env('LEADSCORE_MODEL', 'propensity');
const churnModel = process.env.LEADSCORE_CHURN_MODEL || '';
const executablePath = env('LEADSCORE_CHROMIUM', '/usr/bin/chromium');
const here = dirname(fileURLToPath(import.meta.url));
const origin = new URL(base).origin;
const NAME = 'Dana Tester';
const VIEWPORTS = { desktop: { width: 1280, height: 800 }, phone: { width: 390, height: 844 } };

let step = 'start';
const log = (text) => console.log(`console.test: ${text}`);
function check(ok, message) { if (!ok) throw new Error(`[${step}] ${message}`); }

// The API, as the test sees it (client key unless told).
async function api(path, { method = 'GET', body, key = clientKey } = {}) {
  const res = await fetch(base + path, {
    method, headers: { Authorization: `Bearer ${key}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new Error(`${method} ${path} answered ${res.status}: ${JSON.stringify(data)}`);
  return data;
}
const inForce = async () => (await api('/v1/models')).models.find((m) => m.name === model).thresholds;
const cutoffFor = async (n) => (await api(`/v1/thresholds/${model}?capacity_per_week=${n}`)).capacity.threshold;

// A capacity whose cut-off moves a stored lead across the sales-ready line (its probability
// between the cut-off in force and the new one, with a margin), and that lead.
async function chooseCapacity(t0, currentCapacity) {
  const leads = (await api(`/v1/leads/top/${model}?limit=300`)).leads;
  check(leads.length > 0, 'the sales queue is empty: the replay stored no lead');
  const fresh = [];
  for (const lead of leads) {
    const score = await api(`/v1/entities/${encodeURIComponent(lead.entity)}/score/${model}?reasons=false`);
    fresh.push({ entity: lead.entity, probability: score.probability });
  }
  for (const n of [20, 30, 15, 40, 25, 12, 50, 10, 60, 8, 80, 5, 100, 150, 200, 3, 300]) {
    if (n === currentCapacity) continue;
    const t1 = await cutoffFor(n);
    const lo = Math.min(t0, t1), hi = Math.max(t0, t1);
    const hit = fresh.find((l) => l.probability > lo * 1.02 && l.probability < hi / 1.02);
    if (hit) return { capacity: n, threshold: t1, lead: hit.entity, probability: hit.probability };
  }
  return null;
}

// axe-core in the page (evaluated through the DevTools protocol, which the page's CSP does
// not govern); fails on serious or critical violations.
const axeSource = readFileSync(join(here, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');
const axeReport = [];
async function axe(page, label) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(`${axeSource}\n;true`);
  const result = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(' ')}: ${n.failureSummary}`) }));
  });
  const bad = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  axeReport.push(`${label}: ${result.length ? result.map((v) => `${v.id} (${v.impact})`).join(', ') : 'no violations'}`);
  check(!bad.length, `axe found serious/critical violations on ${label}:\n${bad.map((v) => `  ${v.id} (${v.impact}): ${v.help}\n    ${v.nodes.join('\n    ')}`).join('\n')}`);
}

async function shot(page, name) {
  await page.screenshot({ path: join(artefacts, `${name}.png`), fullPage: true });
}

// What a pane says: its visible text, and the names and descriptions its charts and regions
// give to screen readers.
const paneWords = (page, pane) => page.evaluate((id) => {
  const root = document.getElementById(id);
  const said = [root.innerText];
  for (const n of root.querySelectorAll('[aria-label], [aria-valuetext], svg title, svg desc')) {
    said.push(n.getAttribute('aria-label') || '', n.getAttribute('aria-valuetext') || '', n.matches('title, desc') ? n.textContent : '');
  }
  return said.join('\n');
}, pane);
// A propensity model's words, which a churn model's pane must not use.
const LEAD_WORDS = /\bleads?\b|sales-ready|\bsales\b|convert|conversion/i;
function churnWords(said, where) {
  const bad = said.match(LEAD_WORDS);
  check(!bad, `${where} speaks of "${bad && bad[0]}" for a churn model:\n${said}`);
  for (const word of ['customers', 'at risk', 'churn']) check(said.includes(word), `${where} never says "${word}" for a churn model:\n${said}`);
}

async function main() {
  mkdirSync(artefacts, { recursive: true });
  rmSync(join(artefacts, 'failure.png'), { force: true });
  // The server serves the console files of this checkout (a stale binary would test old
  // ones), each with the content security policy.
  step = 'files';
  const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";
  for (const [route, file] of [['/console', 'index.html'], ['/console/app.js', 'app.js'], ['/console/app.css', 'app.css']]) {
    const res = await fetch(base + route);
    check(res.ok, `GET ${route} answered ${res.status}`);
    check(res.headers.get('content-security-policy') === CSP, `GET ${route}: content-security-policy is ${res.headers.get('content-security-policy')}`);
    const served = await res.text();
    check(served === readFileSync(join(here, '..', '..', 'console', file), 'utf8'), `GET ${route} is not serving/console/${file} of this checkout: rebuild leadscore-serve (the console is built into the binary)`);
  }
  const profile = mkdtempSync(join(tmpdir(), 'leadscore-console-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath, headless: true, viewport: VIEWPORTS.desktop, locale: 'en-GB', timezoneId: 'UTC',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const requests = [], problems = [], writes = [];
  context.on('request', (r) => { requests.push(r.url()); if (r.method() !== 'GET') writes.push(`${r.method()} ${r.url()}`); });
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}\n${e.stack}`));
  let acceptDialogs = false;
  page.on('dialog', (d) => (acceptDialogs ? d.accept() : d.dismiss()));
  page.setDefaultTimeout(15000);
  try {
    // a. the sign-in pane at both widths, then sign in with the admin key and a name.
    step = 'sign-in';
    await page.goto(`${base}/console`);
    await page.locator('#pane-signin').waitFor();
    for (const [width, size] of Object.entries(VIEWPORTS)) {
      await page.setViewportSize(size);
      await shot(page, `signin-${width}`);
      await axe(page, `signin at ${width}`);
    }
    await page.setViewportSize(VIEWPORTS.desktop);
    await page.getByRole('button', { name: 'Sign in' }).click();
    check(await page.locator('#signin-key-error').isVisible(), 'signing in with nothing entered shows no error');
    await page.getByLabel('Access key').fill(adminKey);
    await page.getByLabel('Your name').fill(NAME);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#pane-thresholds').waitFor();
    await page.locator('#capacity-figures[data-capacity]').waitFor();
    log('signed in');

    // a2. a churn model's Thresholds and Model health panes in churn's words, axe clean; then
    // the propensity model (whichever model the console showed first).
    const picker = page.getByLabel('Model', { exact: true });
    if (churnModel) {
      step = 'churn words';
      await picker.selectOption(churnModel);
      await page.locator('#in-force', { hasText: 'At risk from probability' }).waitFor();
      await page.locator('#capacity-status', { hasText: 'customers a week: at risk from' }).waitFor();
      await page.locator('#preview-table tbody tr[data-grade="D"]').waitFor();
      await page.locator('#histogram svg.chart').waitFor();
      const churnNumber = page.getByRole('textbox', { name: 'Customers a week your retention team can contact' });
      await churnNumber.fill('0');
      await page.locator('#capacity-number-error[role="alert"]', { hasText: 'Customers a week must be more than 0.' }).waitFor();
      await page.locator('#grade-mode-capacity').check();
      await page.getByLabel('Customers a week in grade A').waitFor();
      let said = await paneWords(page, 'pane-thresholds');
      for (const text of ['At risk: how many customers go to the retention team', 'Precision (share of flagged customers that churn)',
        'Expected churned customers a week', 'held-out customers', 'at-risk cut-off']) check(said.includes(text), `the churn Thresholds pane lacks "${text}":\n${said}`);
      churnWords(said, 'the Thresholds pane');
      await axe(page, 'thresholds of the churn model');
      await shot(page, 'thresholds-churn-desktop');
      await page.locator('#grade-mode-probability').check();
      await page.getByRole('button', { name: 'Revert to the thresholds in force' }).click();
      await page.evaluate(() => { location.hash = '#health'; });
      await page.locator('#health-body svg.chart').first().waitFor();
      await page.getByLabel('Profile field', { exact: true }).selectOption({ index: 1 });
      await page.locator('#health-body table >> nth=1').waitFor();
      said = await paneWords(page, 'pane-health');
      for (const text of ['shown a customer that churned and one that stayed', 'Churn by score decile', 'Churned customers', 'Churn rate'])
        check(said.includes(text), `the churn Model health pane lacks "${text}":\n${said}`);
      churnWords(said, 'the Model health pane');
      await axe(page, 'health of the churn model');
      await shot(page, 'health-churn-desktop');
      check(await page.locator('#nav-queue').textContent() === 'Retention queue', 'the churn model\'s queue is not called the retention queue');
      log(`${churnModel}: Thresholds and Model health in churn's words (customers, churn, at risk), axe clean`);
    }
    step = 'propensity model';
    await picker.selectOption(model);
    await page.evaluate(() => { location.hash = '#thresholds'; });
    await page.locator('#in-force', { hasText: 'Sales-ready from probability' }).waitFor();
    await page.locator('#capacity-status', { hasText: 'leads a week: sales-ready from' }).waitFor();
    check(await page.locator('#nav-queue').textContent() === 'Sales queue', `on ${model}, the queue is not the sales queue`);

    // b. move the capacity; the cut-off shown is the server's for that capacity.
    step = 'capacity';
    const before = await inForce();
    const current = Number(await page.locator('#capacity-number').inputValue());
    const choice = await chooseCapacity(before.sales_ready, current);
    check(choice, `no capacity moves any stored lead across the sales-ready cut-off ${before.sales_ready}`);
    log(`capacity ${choice.capacity} a week: cut-off ${choice.threshold} (in force ${before.sales_ready}); lead ${choice.lead} at ${choice.probability}`);
    const number = page.getByRole('textbox', { name: 'Leads a week your team can work' });
    const slider = page.getByRole('slider', { name: 'Leads a week your team can work' });
    const figuresFor = async (n) => {
      await page.locator(`#capacity-figures[data-capacity="${n}"]`).waitFor();
      return Number(await page.locator('#capacity-cutoff').getAttribute('data-value'));
    };
    await number.fill(String(choice.capacity));
    check(await slider.inputValue() === String(choice.capacity), `the slider did not follow the number field: ${await slider.inputValue()}`);
    let shown = await figuresFor(choice.capacity);
    check(Math.abs(shown - choice.threshold) < 1e-12, `cut-off shown ${shown}, the server's for ${choice.capacity} a week is ${choice.threshold}`);
    const text = await page.locator('#capacity-cutoff').textContent();
    const expectedText = await page.evaluate((t) => new Intl.NumberFormat(undefined, { style: 'percent', maximumFractionDigits: t < 0.01 ? 2 : 1 }).format(t), choice.threshold);
    check(text === expectedText, `cut-off text "${text}", expected "${expectedText}"`);
    for (const id of ['capacity-precision', 'capacity-caught', 'capacity-expected']) {
      check(/\d/.test(await page.locator(`#${id}`).textContent()), `#${id} shows no figure`);
    }
    // The slider by keyboard: one step right moves the number field and the figures too.
    await slider.focus();
    await page.keyboard.press('ArrowRight');
    check(await number.inputValue() === String(choice.capacity + 1), `ArrowRight on the slider left the number field at ${await number.inputValue()}`);
    shown = await figuresFor(choice.capacity + 1);
    check(Math.abs(shown - await cutoffFor(choice.capacity + 1)) < 1e-12, 'the cut-off after the slider moved is not the server\'s');
    await page.keyboard.press('ArrowLeft');
    check(await number.inputValue() === String(choice.capacity), 'ArrowLeft did not bring the slider back');
    shown = await figuresFor(choice.capacity);
    check(Math.abs(shown - choice.threshold) < 1e-12, 'cut-off after ArrowLeft differs');
    await page.locator('#preview-table tbody tr[data-grade="A"]').waitFor();
    log(`cut-off shown ${text} = the server's ${choice.threshold}; slider and number field in step`);

    // c. save; the server's next score uses the new cut-off.
    step = 'save';
    const scoreBefore = await api(`/v1/entities/${encodeURIComponent(choice.lead)}/score/${model}?reasons=false`);
    await page.getByRole('button', { name: 'Save thresholds' }).click();
    const saved = page.locator('#save-result .msg.success');
    await saved.waitFor();
    const savedText = await saved.textContent();
    check(savedText.includes(NAME), `the save message does not say who saved: "${savedText}"`);
    const after = await inForce();
    check(Math.abs(after.sales_ready - choice.threshold) < 1e-9, `GET /v1/models sales_ready ${after.sales_ready}, expected ${choice.threshold}`);
    check(Number(await saved.getAttribute('data-value')) === after.sales_ready, 'the save message\'s cut-off is not the one in force');
    const file = readFileSync(thresholdsFile, 'utf8');
    check(new RegExp(`sales_ready_per_week\\s*=\\s*${choice.capacity}(\\.0)?\\b`).test(file), `thresholds file lacks sales_ready_per_week = ${choice.capacity}:\n${file}`);
    const scoreAfter = await api(`/v1/entities/${encodeURIComponent(choice.lead)}/score/${model}?reasons=false`);
    check(scoreAfter.sales_ready === (scoreAfter.probability >= after.sales_ready), `score after saving: probability ${scoreAfter.probability}, sales_ready ${scoreAfter.sales_ready}, cut-off ${after.sales_ready}`);
    check(scoreBefore.sales_ready === (scoreBefore.probability >= before.sales_ready), 'score before saving did not follow the old cut-off');
    check(scoreBefore.sales_ready !== scoreAfter.sales_ready, `lead ${choice.lead} (probability ${scoreAfter.probability}) did not flip between cut-offs ${before.sales_ready} and ${after.sales_ready}`);
    log(`saved: cut-off in force ${after.sales_ready}; lead ${choice.lead} sales_ready ${scoreBefore.sales_ready} -> ${scoreAfter.sales_ready}`);

    // d. invalid input: a message next to the field, nothing sent, nothing written.
    step = 'invalid input';
    const bytes = readFileSync(thresholdsFile);
    const writesBefore = writes.length;
    const alertShown = async (selector, what) => {
      const box = page.locator(selector);
      check(await box.isVisible(), `${what}: no error shown at ${selector}`);
      check(await box.getAttribute('role') === 'alert', `${what}: the error at ${selector} is not role=alert`);
      check(((await box.textContent()) || '').trim().length > 5, `${what}: the error at ${selector} is empty`);
    };
    for (const bad of ['0', 'abc', '', '-5']) {
      await number.fill(bad);
      await page.getByRole('button', { name: 'Save thresholds' }).click();
      await alertShown('#capacity-number-error', `capacity "${bad}"`);
      await alertShown('#save-result [role="alert"]', `capacity "${bad}"`);
    }
    await number.fill(String(choice.capacity));
    await page.locator('#grade-mode-probability').check();
    await page.getByLabel('Grade A from (%)').fill('1');
    await page.getByLabel('Grade B from (%)').fill('2');
    await page.getByRole('button', { name: 'Save thresholds' }).click();
    await alertShown('#grade-a-error', 'grades a <= b');
    await alertShown('#save-result [role="alert"]', 'grades a <= b');
    await page.locator('#grade-mode-capacity').check();
    await page.getByLabel('Leads a week in grade B').fill('0');
    await page.getByRole('button', { name: 'Save thresholds' }).click();
    await alertShown('#grade-b-error', 'grade B capacity 0');
    await page.waitForTimeout(500);
    check(writes.slice(writesBefore).every((w) => !w.includes('/admin/')), `invalid input was sent: ${writes.slice(writesBefore).join(', ')}`);
    check(readFileSync(thresholdsFile).equals(bytes), 'the thresholds file changed after invalid input');
    check(JSON.stringify(await inForce()) === JSON.stringify(after), 'GET /v1/models thresholds changed after invalid input');
    await page.getByRole('button', { name: 'Revert to the thresholds in force' }).click();
    check(await number.inputValue() === String(Math.max(1, Math.round((await api(`/v1/thresholds/${model}`)).sales_ready.leads_per_week))), 'revert did not restore the capacity in force');
    await page.locator('#grade-mode-probability').check();
    log('invalid input shown as errors; nothing sent, file and thresholds unchanged');

    // e. every pane at both widths: screenshot and axe.
    step = 'panes';
    const lead = choice.lead;
    const panes = [
      ['thresholds', '#thresholds', '#preview-table tbody tr[data-grade="D"]'],
      ['health', '#health', '#health-body svg.chart'],
      ['versions', '#versions', '#versions-body table'],
      ['drift', '#drift', '#drift-body table, #drift-body .note'],
      ['queue', '#queue', '#queue-table a'],
      ['lead', `#lead/${encodeURIComponent(lead)}`, '#lead-timeline svg.chart'],
    ];
    for (const [width, size] of Object.entries(VIEWPORTS)) {
      await page.setViewportSize(size);
      for (const [name, hash, ready] of panes) {
        step = `pane ${name} at ${width}`;
        await page.evaluate((h) => { location.hash = h; }, hash);
        await page.locator(`#pane-${name}`).waitFor();
        await page.locator(ready).first().waitFor();
        await page.waitForTimeout(150);
        if (name === 'health' && width === 'desktop') {
          await page.getByLabel('Profile field', { exact: true }).selectOption({ index: 1 });
          await page.locator('#health-body table >> nth=1').waitFor();
        }
        check(await page.locator('h1').count() === 1, 'not exactly one h1');
        await shot(page, `${name}-${width}`);
        await axe(page, `${name} at ${width}`);
      }
    }
    log('every pane screenshotted and checked with axe at 1280x800 and 390x844');

    // Promote the version not served, from the Versions pane (confirmed), and see it served.
    step = 'promote';
    await page.setViewportSize(VIEWPORTS.desktop);
    await page.evaluate(() => { location.hash = '#versions'; });
    const versions = await api(`/v1/models/${model}/versions`);
    const other = versions.versions.find((v) => !v.served);
    check(other, `no version besides the served ${versions.served} to promote`);
    await page.getByRole('button', { name: `Promote ${other.version}` }).click(); // dismissed: nothing happens
    check((await api(`/v1/models/${model}/versions`)).served === versions.served, 'a dismissed promotion changed the served version');
    acceptDialogs = true;
    await page.getByRole('button', { name: `Promote ${other.version}` }).click();
    await page.locator('#versions-message .msg.success').waitFor();
    acceptDialogs = false;
    const promoted = await api(`/v1/models/${model}/versions`);
    check(promoted.served === other.version && promoted.live === other.version, `after promoting ${other.version} the server serves ${promoted.served} (live ${promoted.live})`);
    check(promoted.log[0].action === 'promote' && promoted.log[0].who === NAME, `the registry log does not show the promotion by ${NAME}: ${JSON.stringify(promoted.log[0])}`);
    await page.locator('#versions-body td', { hasText: 'Live' }).first().waitFor();
    log(`promoted ${other.version} from the Versions pane; the server serves it`);

    // f. nothing from elsewhere, no console errors or CSP violations.
    step = 'requests';
    const foreign = requests.filter((u) => new URL(u).origin !== origin);
    check(!foreign.length, `the console loaded from outside the server:\n  ${foreign.join('\n  ')}`);
    check(!problems.length, `the browser console reported:\n  ${problems.join('\n  ')}`);
    writeFileSync(join(artefacts, 'axe.txt'), `${axeReport.join('\n')}\n`);
    log(`${requests.length} requests, all to ${origin}; no console errors`);

    // g. keys: a wrong key is refused at sign-in; a client key cannot save (403 said plainly).
    // (After f: the browser logs the 401 and 403 answers as console errors.)
    step = 'keys';
    await page.setViewportSize(VIEWPORTS.desktop);
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.locator('#pane-signin').waitFor();
    await page.getByLabel('Access key').fill('not-a-key-of-this-server-0000');
    await page.getByLabel('Your name').fill(NAME);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#signin-message [role="alert"]').waitFor();
    check(await page.locator('#pane-signin').isVisible(), 'a wrong key got past the sign-in');
    await page.getByLabel('Access key').fill(clientKey);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#capacity-figures[data-capacity]').waitFor();
    const fileBefore = readFileSync(thresholdsFile);
    await number.fill(String(choice.capacity + 2));
    await page.getByRole('button', { name: 'Save thresholds' }).click();
    const refused = page.locator('#save-result [role="alert"]');
    await refused.waitFor();
    check(/admin key/i.test(await refused.textContent()), `a client key's save did not say it needs an admin key: "${await refused.textContent()}"`);
    check(readFileSync(thresholdsFile).equals(fileBefore), 'a client key\'s save changed the thresholds file');
    log('a wrong key is refused at sign-in; a client key\'s save is refused as needing an admin key');
    log(`axe: ${axeReport.filter((l) => !l.endsWith('no violations')).length ? axeReport.join('; ') : 'no violations on any pane'}`);
  } catch (e) {
    await page.screenshot({ path: join(artefacts, 'failure.png'), fullPage: true }).catch(() => {});
    if (problems.length) console.error(`browser console:\n  ${problems.join('\n  ')}`);
    throw e;
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().then(() => log('PASS')).catch((e) => { console.error(`console.test: FAIL ${e.message}`); process.exit(1); });
