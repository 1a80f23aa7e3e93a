// End-to-end drive of the portal in headless Chromium, for e2e_test.go.
// Usage: node e2e.mjs CONFIG_JSON. Prints one JSON line per step; exits
// non-zero on failure. The Go test checks what the typing did inside the
// session (files the shell wrote), since that is the effect that matters.
import { chromium } from 'playwright-core';

const cfg = JSON.parse(process.argv[2]);
const say = (step, extra = {}) => console.log(JSON.stringify({ step, ...extra }));

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--ignore-certificate-errors'],
});
const errors = [];
async function newPage(who) {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 800 } });
  const page = await ctx.newPage();
  page.on('dialog', (d) => d.accept());
  page.on('pageerror', (e) => errors.push(`${who}: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`${who} console: ${m.text()}`); });
  return page;
}
async function login(page, user) {
  await page.goto(cfg.base + '/');
  await page.waitForSelector('input[name=user]');
  await page.fill('input[name=user]', user);
  await page.fill('input[name=password]', cfg.password);
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
}
// drawn waits until the noVNC canvas shows the xterm: enough white pixels.
async function drawn(page) {
  await page.waitForFunction(() => window.airlockState === 'connected', null, { timeout: 30000 });
  await page.waitForFunction(() => {
    const c = document.querySelector('#screen canvas');
    if (!c || !c.width) return false;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4 * 97) if (d[i] > 200 && d[i + 1] > 200 && d[i + 2] > 200) n++;
    return n > 50;
  }, null, { polling: 200, timeout: 30000 });
}
async function type(page, text) {
  await page.click('#screen canvas', { position: { x: 60, y: 60 } });
  await page.keyboard.type(text, { delay: 15 });
  await page.keyboard.press('Enter');
}

try {
  const alice = await newPage('alice');
  await login(alice, cfg.owner);
  say('logged-in');
  await alice.screenshot({ path: cfg.shots + '/e2e-1-home.png' });
  await alice.selectOption('#profile', 'desktop');
  await Promise.all([alice.waitForURL(/\/sessions\//, { timeout: 60000 }), alice.click('#launch-btn')]);
  const id = alice.url().split('/sessions/')[1];
  say('launched', { id });
  await drawn(alice);
  await alice.screenshot({ path: cfg.shots + '/e2e-2-desktop.png' });
  say('drawn');
  await type(alice, cfg.aliceCommand);
  say('owner-typed');

  // Share view-only with the second user.
  await alice.click('#share-toggle');
  await alice.selectOption('#share-mode', 'view');
  await alice.click('#share-form button[type=submit]');
  await alice.waitForFunction(() => document.querySelector('#share-url').value.startsWith('https://'), null, { timeout: 10000 });
  const shareURL = await alice.inputValue('#share-url');
  say('shared');

  const bob = await newPage('bob');
  await login(bob, cfg.viewer);
  await bob.goto(shareURL);
  await bob.waitForURL(/\/sessions\//);
  await drawn(bob);
  const viewOnly = await bob.isVisible('#viewonly');
  await type(bob, cfg.viewerCommand);
  await bob.screenshot({ path: cfg.shots + '/e2e-3-viewer.png' });
  say('viewer-typed', { viewOnly });

  await type(alice, cfg.afterCommand);
  say('owner-typed-after');
  process.stdout.write(''); // flush
  // Wait for the Go side to check the files, then stop.
  await new Promise((resolve) => process.stdin.once('data', resolve));
  await alice.screenshot({ path: cfg.shots + '/e2e-4-after.png' });
  await alice.click('#stop');
  await alice.waitForFunction(() => /ended/.test(document.body.innerText), null, { timeout: 30000 });
  await alice.screenshot({ path: cfg.shots + '/e2e-5-stopped.png' });
  say('stopped', { errors });
  await browser.close();
} catch (e) {
  say('error', { message: String(e), errors });
  await browser.close();
  process.exit(1);
}
