// Record and replay in headless Chromium, for recordings_browser_test.go.
// Usage: node replay.mjs CONFIG_JSON. The owner launches cfg.profile
// (recorded), types cfg.text into the xterm and leaves; the pixels the
// typing changed are kept. An admin then replays the recording at 8x on
// the recordings page; the step "compared" says how many of those pixels
// the replayed screen has as the owner saw them.
import * as lib from './e2elib.mjs';

const cfg = JSON.parse(process.argv[2]);
const { say, drawn, type } = lib;
const browser = await lib.launchBrowser();
const errors = [];

const pixels = (page, sel) => page.evaluate((sel) => {
  const c = document.querySelector(sel);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  return { w: c.width, h: c.height, d: Array.from(d) };
}, sel);

try {
  const owner = await lib.newPage(browser, 'owner', errors);
  await lib.login(owner, cfg.base, cfg.owner, cfg.password);
  await owner.selectOption('#profile', cfg.profile);
  await Promise.all([owner.waitForURL(/\/sessions\//, { timeout: 60000 }), owner.click('#launch-btn')]);
  await drawn(owner, 60000);
  const before = await pixels(owner, '#screen canvas');
  await type(owner, cfg.text);
  // Wait until the typing (and the shell's answer) has been drawn: many
  // pixels differ from before.
  await owner.waitForFunction((b) => {
    const c = document.querySelector('#screen canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] !== b[i]) n++;
    return n > 200;
  }, before.d, { polling: 200, timeout: 30000 });
  const after = await pixels(owner, '#screen canvas');
  await owner.screenshot({ path: `${cfg.shots}/replay-1-live.png` });
  await owner.goto('about:blank'); // the viewer leaves: the recording ends
  const changed = [];
  for (let i = 0; i < after.d.length; i += 4) {
    if (after.d[i] !== before.d[i] || after.d[i + 1] !== before.d[i + 1] || after.d[i + 2] !== before.d[i + 2]) changed.push(i);
  }
  say('typed', { changed: changed.length });

  const admin = await lib.newPage(browser, 'admin', errors);
  await lib.login(admin, cfg.base, cfg.admin, cfg.password);
  for (let i = 0; ; i++) {
    await admin.goto(cfg.base + '/admin/recordings');
    if (await admin.$('td[data-label=End]:has-text("closed")')) break;
    if (i > 50) throw new Error('no complete recording listed');
    await admin.waitForTimeout(200);
  }
  await admin.click('[data-play]');
  await admin.selectOption('#speed', '8'); // plays again, at 8x
  await admin.waitForFunction(() => window.airlockReplay === 'ended', null, { timeout: 60000 });
  await admin.screenshot({ path: `${cfg.shots}/replay-2-replayed.png` });
  const replayed = await pixels(admin, '#replay-screen canvas');
  let same = 0;
  for (const i of changed) {
    if (replayed.d[i] === after.d[i] && replayed.d[i + 1] === after.d[i + 1] && replayed.d[i + 2] === after.d[i + 2]) same++;
  }
  // The viewer's pointer, drawn over the replay where the recording ends.
  const pointer = await admin.evaluate(() => {
    const m = document.getElementById('replay-pointer');
    return { at: window.airlockReplayPointer, shown: !!m && !m.hidden };
  });
  say('compared', { changed: changed.length, same, size: [replayed.w, replayed.h], live: [after.w, after.h], pointer, errors });
  await browser.close();
} catch (e) {
  say('error', { message: String(e), errors });
  await browser.close();
  process.exit(1);
}
