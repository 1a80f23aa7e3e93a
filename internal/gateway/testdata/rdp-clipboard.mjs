// The clipboard of browser RDP in headless Chromium, for
// TestRDPWebClipboard: log in with the clipboard permissions granted (as
// a user who allowed them), open the session page (RDP by default) and
// wait for IronRDP to connect. Then, on the Go side's word:
//   "report": the page's clipboard text (navigator.clipboard, which
//             IronRDP writes what the desktop copied to);
//   "paste":  put cfg.inText on the page's clipboard (IronRDP watches it
//             and offers it to the desktop);
//   "stop":   close.
import { launchBrowser, login, say } from './e2elib.mjs';
import { createInterface } from 'node:readline';

const cfg = JSON.parse(process.argv[2]);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const browser = await launchBrowser();
const errors = [];
try {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 800 } });
  await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: cfg.base });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (cfg.verbose) console.error(`console: ${m.text()}`); });
  await login(page, cfg.base, cfg.user, cfg.password);
  // The page's clipboard is empty when the session connects: IronRDP
  // 0.7.0 offers text already there before its clipboard channel is
  // ready, and fails the session (see the README).
  await page.goto(`${cfg.base}/sessions/${cfg.session}`);
  await page.waitForFunction(() => {
    const s = window.airlockRDPState || '';
    return s === 'connected' || s.startsWith('failed:') || s.startsWith('closed:');
  }, null, { timeout: 90000 });
  const state = await page.evaluate(() => window.airlockRDPState);
  if (state !== 'connected') throw new Error(`RDP state ${state}`);
  say('connected');
  for (;;) {
    const { value, done } = await lines.next();
    if (done || value === 'stop') break;
    if (value === 'report') {
      // The page connects again after IronRDP's clipboard start-up race
      // (rdp.js): report once it is settled.
      await page.waitForFunction(() => {
        const s = window.airlockRDPState || '';
        return s === 'connected' || s.startsWith('failed:') || s.startsWith('closed:');
      }, null, { timeout: 60000 });
      const text = await page.evaluate(() => navigator.clipboard.readText().catch((e) => `error: ${e}`));
      say('report', { text, state: await page.evaluate(() => window.airlockRDPState) });
    } else if (value === 'paste') {
      await page.evaluate((t) => navigator.clipboard.writeText(t), cfg.inText);
      say('pasted');
    }
  }
  say('stopped', { errors });
} catch (e) {
  say('error', { message: String(e && e.stack || e), errors });
} finally {
  await browser.close();
}
