// Browser RDP with NLA in headless Chromium: the session page logs on to
// the desktop's shadow server with the session's generated account and
// password (from the page, typed by nobody), inside CredSSP. The Go side
// counts pixels in shots of the desktop; then the same page, served with
// a wrong password in place of the right one, must show the server's
// refusal in words.
import { launchBrowser, newPage, login, say } from './e2elib.mjs';
import { createInterface } from 'node:readline';

const cfg = JSON.parse(process.argv[2]);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const settled = () => {
  const s = window.airlockRDPState || '';
  return s === 'connected' || s.startsWith('failed:') || s.startsWith('closed:');
};

const browser = await launchBrowser();
const errors = [];
try {
  const page = await newPage(browser, cfg.user, errors);
  await login(page, cfg.base, cfg.user, cfg.password);
  await page.goto(`${cfg.base}/sessions/${cfg.session}`);
  await page.waitForFunction(settled, null, { timeout: 90000 });
  const state = await page.evaluate(() => window.airlockRDPState);
  if (state !== 'connected') throw new Error(`RDP state ${state}; message: ${await page.textContent('#message-text')}`);
  say('connected', { url: page.url() });
  for (let i = 0; ; i++) {
    const path = `${cfg.shots}/rdp-nla-${i % 2}.png`;
    await page.locator('#rdp-screen').screenshot({ path });
    say('shot', { path });
    const { value } = await lines.next();
    if (value === 'drawn') break;
    await page.waitForTimeout(500);
  }
  await page.close();

  // The same page with a wrong password where the right one was.
  const wrong = await newPage(browser, cfg.user, errors);
  await login(wrong, cfg.base, cfg.user, cfg.password);
  // Before the page's module reads it: the parser inserts the element,
  // the observer's microtask edits it, the deferred module runs later.
  await wrong.addInitScript(() => {
    new MutationObserver((_, obs) => {
      const el = document.getElementById('session');
      if (el && el.dataset.rdpPassword) {
        el.dataset.rdpPassword = 'Wrong2Password3x';
        obs.disconnect();
      }
    }).observe(document, { childList: true, subtree: true });
  });
  await wrong.goto(`${cfg.base}/sessions/${cfg.session}`);
  await wrong.waitForFunction(settled, null, { timeout: 90000 });
  say('refused', {
    state: await wrong.evaluate(() => window.airlockRDPState),
    message: await wrong.textContent('#message-text'),
    detail: await wrong.evaluate(() => window.airlockRDPDetail || ''),
    url: wrong.url(),
  });
  await lines.next();
  say('done', { errors });
} catch (e) {
  say('error', { message: String(e && e.stack || e), errors });
} finally {
  await browser.close();
}
