// Herald's dashboard in headless Chromium, driven by Playwright (playwright-core, with Debian's Chromium).
// Started by tests/api/e2e.rs, which runs Herald on a fresh database and passes everything through the
// environment (see `need` below). Prints one line per step; exits non-zero at the first failure.

import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const need = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (tests/api/e2e.rs sets it)`);
  return value;
};
const base = need('HERALD_URL');
const keys = {
  operator: need('HERALD_OPERATOR_KEY'),
  reader: need('HERALD_READER_KEY'),
  auditor: need('HERALD_AUDITOR_KEY'),
  subscriber: need('HERALD_SUBSCRIBER_KEY'),
};
const projectId = need('HERALD_PROJECT_ID');
const projectName = need('HERALD_PROJECT_NAME');
const secret = need('HERALD_PROJECT_SECRET');
const failingPayload = readFileSync(need('HERALD_FAILING_PAYLOAD'));
const deadBuild = need('HERALD_DEAD_LETTER_BUILD');
const shots = need('HERALD_E2E_SCREENSHOTS');

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const WAIT = 15_000;

const browser = await chromium.launch({ executablePath: need('HERALD_CHROMIUM'), args: ['--no-sandbox'] });
const context = await browser.newContext({ viewport: DESKTOP });
const page = await context.newPage();
page.setDefaultTimeout(WAIT);
const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
// Script errors only: refused requests the steps make on purpose (a wrong key, a bad time zone, the cut stream)
// are logged by the browser as "Failed to load resource", and the page shows them as it should.
page.on('console', (m) => m.type() === 'error' && !m.text().startsWith('Failed to load resource') && problems.push(`console: ${m.text()}`));

const step = async (name, body) => {
  try {
    await body();
    console.log(`ok - ${name}`);
  } catch (e) {
    console.log(`FAILED - ${name}`);
    console.error(e);
    await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
    await browser.close();
    process.exit(1);
  }
};

/// Both widths of the current page; at phone width the page must not scroll sideways.
const screenshots = async (name) => {
  await page.screenshot({ path: join(shots, `${name}-desktop.png`), fullPage: true });
  await page.setViewportSize(PHONE);
  await page.waitForTimeout(150);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `${name} is ${overflow}px wider than a phone`);
  await page.screenshot({ path: join(shots, `${name}-phone.png`), fullPage: true });
  await page.setViewportSize(DESKTOP);
};

const logIn = async (key) => {
  await page.goto(`${base}/ui/#/login`);
  await page.getByLabel('API key', { exact: true }).fill(key);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('button', { name: 'Log out' }).waitFor();
};
const logOut = async () => {
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByLabel('API key', { exact: true }).waitFor();
};
const tile = () => page.locator(`li.tile[data-project="${projectId}"]`);

await step('the login page refuses a wrong key and stays put', async () => {
  await page.goto(`${base}/`);
  await page.getByLabel('API key', { exact: true }).waitFor();
  await screenshots('login');
  await page.getByLabel('API key', { exact: true }).fill('hrld_00000000_wrong');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('alert').filter({ hasText: 'Could not log in' }).waitFor();
  assert.match(page.url(), /#\/login$/);
});

await step('an operator logs in and sees the project green, with a live stream', async () => {
  await logIn(keys.operator);
  await tile().waitFor();
  assert.equal(await tile().getAttribute('data-state'), 'green');
  assert.match(await tile().innerText(), new RegExp(projectName));
  assert.match(await tile().innerText(), /Passing/);
  await page.locator('#live', { hasText: 'Live' }).waitFor();
  assert.equal(await page.evaluate(() => document.cookie), '', 'the session cookie is out of the scripts\' reach');
});

await step('a failing webhook turns the tile red without a reload', async () => {
  const marker = await page.evaluate(() => { window.__notReloaded = true; return true; });
  assert.ok(marker);
  const signature = `sha256=${createHmac('sha256', secret).update(failingPayload).digest('hex')}`;
  const response = await fetch(`${base}/api/v1/webhooks/github/${projectId}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-github-event': 'workflow_run',
      'x-github-delivery': `e2e-red-${Date.now()}`,
      'x-hub-signature-256': signature,
    },
    body: failingPayload,
  });
  assert.ok(response.ok, `the webhook answered ${response.status}`);
  await page.locator(`li.tile-red[data-project="${projectId}"]`).waitFor();
  assert.match(await tile().innerText(), /Broken/);
  assert.ok(await page.evaluate(() => window.__notReloaded), 'the page was not reloaded');
  await screenshots('overview');
});

await step('the project page shows the failing run and its charts', async () => {
  await tile().locator('a').click();
  await page.getByRole('heading', { level: 1, name: projectName }).waitFor();
  const rows = page.locator('tr[data-build]');
  await rows.first().waitFor();
  assert.equal(await rows.count(), 16, 'the history, the green run and the failing one are listed');
  await page.locator('tr[data-build] .badge-failed').first().waitFor();
  // The charts come with their own request: wait for a point rather than count at once.
  await page.locator('svg.chart circle.point').first().waitFor();
  await page.getByLabel('Period', { exact: true }).selectOption('week');
  await page.locator('svg.chart circle.point').first().waitFor();
  await page.getByLabel('Outcome', { exact: true }).selectOption('failed');
  await page.getByRole('button', { name: 'Filter' }).click();
  // Only failed runs are left (four of the sixteen), the newest first.
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('tr[data-build]')];
    return rows.length === 4 && rows.every((r) => r.querySelector('.badge-failed'));
  });
  await screenshots('project');
});

await step('the live indicator shows reconnecting while the stream is cut, and recovers', async () => {
  await page.goto(`${base}/ui/#/`);
  await page.locator('#live', { hasText: 'Live' }).waitFor();
  // Cut the stream at the network layer: the browser's EventSource errors and keeps retrying.
  await page.route('**/api/v1/stream*', (route) => route.abort('connectionreset'));
  await page.reload();
  await page.locator('#live', { hasText: 'Reconnecting' }).waitFor();
  await page.unroute('**/api/v1/stream*');
  await page.locator('#live', { hasText: 'Live' }).waitFor({ timeout: 20_000 });
});

await step('an operator redrives the dead letter and it leaves the queue', async () => {
  await page.getByRole('link', { name: 'Notifications' }).click();
  await page.getByRole('heading', { name: 'Delivery by channel' }).waitFor();
  const row = page.locator('tr[data-notification]').filter({ hasText: deadBuild });
  await row.waitFor();
  await screenshots('notifications');
  await row.getByRole('button', { name: 'Redrive' }).click();
  await page.getByRole('status').filter({ hasText: 'Redriven' }).waitFor();
  await row.waitFor({ state: 'detached' });
  await logOut();
});

await step('a reader sees no operator buttons and is refused by the server too', async () => {
  await logIn(keys.reader);
  await page.getByRole('link', { name: 'Notifications' }).click();
  await page.getByRole('heading', { name: 'Delivery by channel' }).waitFor();
  await page.getByText('your role may not see or redrive it').waitFor();
  assert.equal(await page.getByRole('button', { name: 'Redrive' }).count(), 0);
  const status = await page.evaluate(async (id) => {
    const r = await fetch(`/api/v1/dlq/${id}/redrive`, { method: 'POST', headers: { 'X-Herald-Csrf': '1' } });
    return r.status;
  }, '00000000-0000-0000-0000-000000000000');
  assert.equal(status, 403);
  await logOut();
});

await step('an auditor reads who was told what about a build', async () => {
  await logIn(keys.auditor);
  await page.goto(`${base}/ui/#/notifications`);
  await page.getByLabel('Build run id', { exact: true }).fill(deadBuild);
  await page.getByRole('button', { name: 'Show trail' }).click();
  const trail = page.locator('ol.timeline');
  await trail.waitFor();
  const text = await trail.innerText();
  for (const event of ['NotificationPlanned', 'DeadLettered', 'NotificationRedriven']) {
    assert.match(text, new RegExp(event), `the trail shows ${event}`);
  }
  assert.equal(await page.locator('li.tile').count(), 0);
  await logOut();
});

await step('a subscriber links Telegram, subscribes and saves preferences', async () => {
  await logIn(keys.subscriber);
  await page.getByRole('link', { name: 'Subscriptions' }).click();
  await page.getByRole('heading', { level: 1, name: 'Subscriptions' }).waitFor();
  await page.getByRole('button', { name: 'Get a link code' }).click();
  const code = await page.locator('code.code').innerText();
  assert.match(code, /^\/start \S{8,}$/);
  await page.getByLabel('Project', { exact: true }).selectOption({ label: projectName });
  await page.getByRole('button', { name: 'Subscribe', exact: true }).click();
  await page.getByRole('status').filter({ hasText: 'Subscribed.' }).waitFor();
  await page.locator('tr[data-subscription]').first().waitFor();
  assert.match(await page.locator('tr[data-subscription]').first().innerText(), new RegExp(projectName));
  await page.getByLabel('Time zone (IANA, e.g. Europe/Berlin)', { exact: true }).fill('Europe/Berlin');
  await page.getByLabel('Language', { exact: true }).selectOption('de');
  await page.getByRole('button', { name: 'Save preferences' }).click();
  await page.getByRole('status').filter({ hasText: 'Preferences saved: Europe/Berlin, de.' }).waitFor();
  await page.getByLabel('Time zone (IANA, e.g. Europe/Berlin)', { exact: true }).fill('Mars/Olympus');
  await page.getByRole('button', { name: 'Save preferences' }).click();
  await page.getByRole('status').filter({ hasText: 'Could not save' }).waitFor();
  await screenshots('subscriptions');
});

await step('keyboard: the skip link and the navigation are reachable', async () => {
  await page.reload();
  await page.getByRole('heading', { level: 1, name: 'Subscriptions' }).waitFor();
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Herald');
  await page.keyboard.press('Tab');
  await page.keyboard.press('Tab');
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { level: 1, name: 'Notifications' }).waitFor();
  await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'main');
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select')]
    .filter((el) => el.type !== 'checkbox' && !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).length);
  assert.equal(unlabelled, 0, 'every field has a label');
});

/// The lowest WCAG contrast ratio of any visible text on the page against the background it sits on.
const lowestContrast = () => page.evaluate(() => {
  const rgb = (css) => (css.match(/[\d.]+/g) || []).map(Number);
  const luminance = ([r, g, b]) => {
    const channel = (c) => { const v = c / 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  let lowest = { ratio: 21, text: '' };
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
    if (!own || !el.getClientRects().length || el.closest('.skip, svg')) continue;
    const [a, b] = [luminance(rgb(getComputedStyle(el).color)), luminance(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < lowest.ratio) lowest = { ratio, text: el.textContent.trim().slice(0, 40) };
  }
  return lowest;
});

await step('every text on every page has a contrast of at least 4.5:1', async () => {
  for (const route of ['#/subscriptions', '#/', `#/projects/${projectId}`, '#/notifications']) {
    await page.goto(`${base}/ui/${route}`);
    await page.locator('main h1').waitFor();
    await page.waitForTimeout(300);
    const { ratio, text } = await lowestContrast();
    assert.ok(ratio >= 4.5, `${route}: "${text}" has a contrast of ${ratio.toFixed(2)}:1`);
  }
});

await step('no script errors on any page', async () => {
  assert.deepEqual(problems, []);
});

await browser.close();
