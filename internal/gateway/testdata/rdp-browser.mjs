// Browser RDP in headless Chromium: log in, open the session page (which
// opens the desktop over RDP by default, through the gateway's
// RDCleanPath WebSocket), wait for the IronRDP client to connect, take a
// screenshot of the desktop for the Go side to count pixels in, type a
// line into the xterm, and resize the window.
import { launchBrowser, newPage, login, say } from './e2elib.mjs';
import { createInterface } from 'node:readline';

const cfg = JSON.parse(process.argv[2]);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const goOn = async () => { await lines.next(); };

const browser = await launchBrowser();
const errors = [];
try {
  const page = await newPage(browser, cfg.user, errors);
  page.on('console', (m) => { if (cfg.verbose) console.error(`console: ${m.text()}`); });
  await login(page, cfg.base, cfg.user, cfg.password);
  await page.goto(`${cfg.base}/sessions/${cfg.session}`);
  await page.waitForFunction(() => {
    const s = window.airlockRDPState || '';
    return s === 'connected' || s.startsWith('failed:') || s.startsWith('closed:');
  }, null, { timeout: 90000 });
  const state = await page.evaluate(() => window.airlockRDPState);
  if (state !== 'connected') throw new Error(`RDP state ${state}; message: ${await page.textContent('#message-text')}`);
  const vncState = await page.evaluate(() => window.airlockState || '');
  say('connected', { vncState });
  if (cfg.hold) {
    // The benchmark measures while the page shows the desktop.
    await goOn();
    say('done', { errors });
    process.exit(0);
  }

  // The Go side counts pixels in each shot until the desktop is drawn.
  for (let i = 0; ; i++) {
    const path = `${cfg.shots}/rdp-browser-${i % 2}.png`;
    await page.locator('#rdp-screen').screenshot({ path });
    say('shot', { path });
    const { value } = await lines.next();
    if (value === 'drawn') break;
    await page.waitForTimeout(500);
  }

  const box = await page.locator('#rdp-screen').boundingBox();
  await page.mouse.move(box.x + 80, box.y + 60);
  await page.mouse.click(box.x + 80, box.y + 60);
  await page.waitForTimeout(300);
  await page.keyboard.type(cfg.line, { delay: 40 });
  await page.keyboard.press('Enter');
  await page.waitForTimeout(1000);
  await page.locator('#rdp-screen').screenshot({ path: `${cfg.shots}/rdp-browser-typed.png` });
  say('typed', { active: await page.evaluate(() => `${document.activeElement && document.activeElement.tagName}`) });
  await goOn();

  await page.setViewportSize({ width: 900, height: 650 });
  await page.waitForTimeout(1500);
  say('resized', { state: await page.evaluate(() => window.airlockRDPState) });
  await goOn();
  say('done', { errors });
} catch (e) {
  say('error', { message: String(e && e.stack || e), errors });
} finally {
  await browser.close();
}
