// Record and replay a browser RDP session in headless Chromium, for
// rdprecord_browser_test.go. Usage: node rdp-replay.mjs CONFIG_JSON. The
// owner opens cfg.session (RDP by default, recorded), types cfg.text into
// the xterm and leaves; the pixels of IronRDP's screen the typing changed
// are kept. An admin then replays the recording at 8x on the recordings
// page (IronRDP on the replay WebSocket); the step "compared" says how
// many of those pixels the replayed screen has as the owner saw them.
import { launchBrowser, newPage, login, say } from './e2elib.mjs';

const cfg = JSON.parse(process.argv[2]);
const browser = await launchBrowser();
const errors = [];

// pixels copies IronRDP's screen (a canvas in the web component's shadow
// root, at the desktop's size) to a 2D canvas and reads it.
const pixels = (page, holder) => page.evaluate((holder) => {
  const el = document.querySelector(`${holder} iron-remote-desktop`);
  const c = el && el.shadowRoot && el.shadowRoot.querySelector('canvas');
  if (!c || !c.width) return null;
  const copy = document.createElement('canvas');
  copy.width = c.width;
  copy.height = c.height;
  const ctx = copy.getContext('2d');
  ctx.drawImage(c, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  return { w: c.width, h: c.height, d: Array.from(d) };
}, holder);

const white = (p) => {
  let n = 0;
  for (let i = 0; i < p.d.length; i += 4) if (p.d[i] > 230 && p.d[i + 1] > 230 && p.d[i + 2] > 230) n++;
  return n;
};
const differ = (a, b) => {
  const out = [];
  for (let i = 0; i < a.d.length; i += 4) {
    if (a.d[i] !== b.d[i] || a.d[i + 1] !== b.d[i + 1] || a.d[i + 2] !== b.d[i + 2]) out.push(i);
  }
  return out;
};
const poll = async (page, what, f, timeout) => {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await page.waitForTimeout(250);
  }
};

try {
  const owner = await newPage(browser, 'owner', errors);
  owner.on('console', (m) => { if (cfg.verbose) console.error(`owner console: ${m.text()}`); });
  await login(owner, cfg.base, cfg.owner, cfg.password);
  await owner.goto(`${cfg.base}/sessions/${cfg.session}`);
  await owner.waitForFunction(() => {
    const s = window.airlockRDPState || '';
    return s === 'connected' || s.startsWith('failed:') || s.startsWith('closed:');
  }, null, { timeout: 90000 });
  const state = await owner.evaluate(() => window.airlockRDPState);
  if (state !== 'connected') throw new Error(`RDP state ${state}`);
  // The xterm (white) is drawn.
  const before = await poll(owner, 'the desktop', async () => {
    const p = await pixels(owner, '#rdp-screen');
    return p && white(p) > 3000 ? p : null;
  }, 60000);
  await owner.waitForTimeout(1000); // the rest of the first screen
  const settled = await pixels(owner, '#rdp-screen');
  const box = await owner.locator('#rdp-screen iron-remote-desktop').boundingBox();
  await owner.mouse.click(box.x + 80, box.y + 60);
  await owner.waitForTimeout(300);
  await owner.keyboard.type(cfg.text, { delay: 40 });
  await owner.keyboard.press('Enter');
  const after = await poll(owner, 'the typing', async () => {
    const p = await pixels(owner, '#rdp-screen');
    return p && differ(settled, p).length > 200 ? p : null;
  }, 30000);
  await owner.waitForTimeout(1500); // the shell's answer, drawn
  const last = await pixels(owner, '#rdp-screen');
  await owner.screenshot({ path: `${cfg.shots}/rdp-replay-1-live.png` });
  await owner.goto('about:blank'); // the viewer leaves: the recording ends
  const changed = differ(settled, last);
  say('typed', { changed: changed.length, first: differ(before, after).length, size: [last.w, last.h] });

  const admin = await newPage(browser, 'admin', errors);
  admin.on('console', (m) => { if (cfg.verbose) console.error(`admin console: ${m.text()}`); });
  await login(admin, cfg.base, cfg.admin, cfg.password);
  for (let i = 0; ; i++) {
    await admin.goto(cfg.base + '/admin/recordings');
    if (await admin.$('tbody tr:first-child td[data-label=End]:has-text("closed")')) break;
    if (i > 50) throw new Error('no complete recording listed');
    await admin.waitForTimeout(200);
  }
  const kind = await admin.textContent('tbody tr:first-child td[data-label=Kind]');
  await admin.click('[data-play]');
  await admin.selectOption('#speed', '8'); // plays again, at 8x
  await admin.waitForFunction(() => {
    const s = window.airlockReplay || '';
    return s === 'ended' || s.startsWith('failed:');
  }, null, { timeout: 90000 });
  const replay = await admin.evaluate(() => window.airlockReplay);
  if (replay !== 'ended') throw new Error(`replay ${replay}`);
  await admin.screenshot({ path: `${cfg.shots}/rdp-replay-2-replayed.png` });
  const replayed = await pixels(admin, '#replay-screen');
  if (!replayed) throw new Error('no replayed screen');
  let same = 0;
  for (const i of changed) {
    if (replayed.d[i] === last.d[i] && replayed.d[i + 1] === last.d[i + 1] && replayed.d[i + 2] === last.d[i + 2]) same++;
  }
  say('compared', { kind, changed: changed.length, same, size: [replayed.w, replayed.h], live: [last.w, last.h], errors });
} catch (e) {
  say('error', { message: String(e && e.stack || e), errors });
} finally {
  await browser.close();
}
