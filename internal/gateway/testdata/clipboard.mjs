// The clipboard policy in headless Chromium, for clipboard_browser_test.go.
// Usage: node clipboard.mjs CONFIG_JSON. Logs in, launches cfg.profile,
// watches every WebSocket frame the page receives for cfg.outText, and
// answers the Go side's lines on standard input:
//   "report": whether any frame held cfg.outText, and the clipboard
//             panel's state (absent, its text, whether sending is on);
//   "paste":  fill the panel with cfg.inText and send it to the desktop;
//   "stop":   stop the session and end.
import * as lib from './e2elib.mjs';

const cfg = JSON.parse(process.argv[2]);
const { say, drawn } = lib;
const browser = await lib.launchBrowser();
const errors = [];

const lines = (() => {
  let buf = '';
  const waiters = [];
  process.stdin.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const w = waiters.shift();
      if (w) w(line);
    }
  });
  return () => new Promise((resolve) => waiters.push(resolve));
})();

try {
  const page = await lib.newPage(browser, 'owner', errors);
  let framesWithText = 0;
  let frames = 0;
  const needle = Buffer.from(cfg.outText, 'latin1');
  page.on('websocket', (ws) => {
    ws.on('framereceived', (f) => {
      frames++;
      const b = typeof f.payload === 'string' ? Buffer.from(f.payload, 'latin1') : f.payload;
      if (b.includes(needle)) framesWithText++;
    });
  });
  await lib.login(page, cfg.base, cfg.owner, cfg.password);
  await page.selectOption('#profile', cfg.profile);
  await Promise.all([page.waitForURL(/\/sessions\//, { timeout: 60000 }), page.click('#launch-btn')]);
  const id = page.url().split('/sessions/')[1];
  await drawn(page, 60000);
  say('connected', { id });
  for (;;) {
    const cmd = await lines();
    if (cmd === 'report') {
      const panel = await page.$('#clipboard');
      say('report', {
        frames, framesWithText,
        panel: panel !== null,
        text: panel ? await page.inputValue('#clipboard') : '',
        sendEnabled: panel ? await page.isEnabled('#clip-send') : false,
      });
    } else if (cmd === 'paste') {
      await page.click('#clip-toggle');
      await page.fill('#clipboard', cfg.inText);
      await page.click('#clip-send');
      await page.screenshot({ path: `${cfg.shots}/clipboard-${cfg.profile}.png` });
      say('pasted');
    } else {
      await page.click('#stop');
      await page.waitForFunction(() => /ended/.test(document.body.innerText), null, { timeout: 30000 });
      say('stopped', { errors });
      break;
    }
  }
  await browser.close();
} catch (e) {
  say('error', { message: String(e), errors });
  await browser.close();
  process.exit(1);
}
