// `airlock forward` in a real browser, for forward_test.go. Usage: node
// forward-browser.mjs CONFIG_JSON. The owner logs in to the portal, opens
// the forward's URL (the app host's sign-in through the gateway), reads
// the app's page and talks to its WebSocket from it, then stops the
// forward with the portal's Stop button. One JSON line per step.
import * as lib from './e2elib.mjs';

const cfg = JSON.parse(process.argv[2]);
const { say } = lib;
const browser = await lib.launchBrowser();
const errors = [];
try {
  const page = await lib.newPage(browser, cfg.user, errors);
  await lib.login(page, cfg.base, cfg.user, cfg.password);
  // The portal's link to the app (the forward's own URL sends a visitor
  // without an app cookie to the gateway's configured URL, which a test
  // gateway on a port of its own does not have).
  await page.goto(cfg.base + '/s/' + cfg.id + '/app/');
  await page.waitForFunction(() => document.body && document.body.innerText.includes('echo app'), null, { timeout: 30000 });
  const echoed = await page.evaluate(() => new Promise((resolve) => {
    const ws = new WebSocket(location.origin.replace('https:', 'wss:') + '/ws');
    ws.onopen = () => ws.send('from chromium');
    ws.onmessage = (m) => { resolve(String(m.data)); ws.close(); };
    ws.onerror = () => resolve('error');
  }));
  await page.screenshot({ path: cfg.shots + '/forward-app.png' });
  say('app', { url: page.url(), echoed });
  await page.goto(cfg.base + '/');
  await page.click(`[data-stop="${cfg.id}"]`);
  await page.waitForFunction(() => (document.getElementById('sessions-msg') || {}).textContent.includes('Stopping'), null, { timeout: 15000 });
  say('stopped');
  await browser.close();
} catch (e) {
  say('error', { message: String(e), errors });
  await browser.close();
  process.exit(1);
}
