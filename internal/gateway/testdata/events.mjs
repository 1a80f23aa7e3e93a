// Drives the portal in headless Chromium for TestSessionEventsInBrowser:
// launch a session from the home page, follow it to its page, and (once the
// Go side has stopped it) wait until the page says it ended. Every request
// the page makes for the session's state (GET /api/v1/sessions/ID) is
// counted, and so is every event stream it opens.
// Usage: node events.mjs CONFIG_JSON. Prints one JSON line per step.
import * as lib from './e2elib.mjs';

const cfg = JSON.parse(process.argv[2]);
const { say } = lib;
const browser = await lib.launchBrowser();
const errors = [];

// line resolves with the next line the Go side writes to standard input.
const line = (() => {
  let buf = '';
  const waiters = [];
  process.stdin.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const w = waiters.shift();
      if (w) w(l);
    }
  });
  return () => new Promise((resolve) => waiters.push(resolve));
})();

try {
  const page = await lib.newPage(browser, 'owner', errors);
  let polls = 0;
  let streams = 0;
  page.on('request', (req) => {
    const path = new URL(req.url()).pathname;
    if (req.method() === 'GET' && /^\/api\/v1\/sessions\/[^/]+$/.test(path)) polls++;
    if (/^\/api\/v1\/sessions\/[^/]+\/events$/.test(path)) streams++;
  });
  await lib.login(page, cfg.base, cfg.owner, cfg.password);
  await page.selectOption('#profile', cfg.profile);
  await Promise.all([page.waitForURL(/\/sessions\//, { timeout: 60000 }), page.click('#launch-btn')]);
  const id = page.url().split('/sessions/')[1];
  // (A page that polls never sets airlockFollow: go on, and count.)
  await page.waitForFunction(() => window.airlockFollow !== undefined, null, { timeout: 5000 }).catch(() => {});
  say('opened', { id, polls, streams });
  await line();
  await page.waitForFunction(() => document.getElementById('status').textContent === 'ended', null, { timeout: 30000 });
  await page.screenshot({ path: cfg.shots + '/events-ended.png' });
  const follow = await page.evaluate(() => window.airlockFollow);
  say('ended', { polls, streams, follow, errors });
  await browser.close();
} catch (e) {
  say('error', { message: String(e), errors });
  await browser.close();
  process.exit(1);
}
process.exit(0);
