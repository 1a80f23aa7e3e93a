// Opens the OnDemand session card (the rendered view.html.erb, served by
// the test's nginx on OnDemand's origin) in headless Chromium as a user
// logged in to the front end, presses its button, and waits for noVNC to
// connect to the desktop in the tab the form opens.
//
//   node card.mjs CARD_URL USER PASSWORD SCREENSHOT.png
//
// Prints one JSON object: {error, url, connected, width, height}.
import { chromium } from 'playwright-core';

const [cardURL, user, password, shot] = process.argv.slice(2);
const out = { error: '', url: '', connected: false, width: 0, height: 0 };
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
try {
  const ctx = await browser.newContext({ httpCredentials: { username: user, password }, viewport: { width: 1280, height: 800 } });
  const card = await ctx.newPage();
  await card.goto(cardURL, { waitUntil: 'load' });
  const [tab] = await Promise.all([
    ctx.waitForEvent('page', { timeout: 30000 }),
    card.click('#airlock-desktop'),
  ]);
  await tab.waitForLoadState('load', { timeout: 30000 });
  // noVNC marks the document once the RFB session is up.
  await tab.waitForFunction(() => document.documentElement.classList.contains('noVNC_connected'), null, { timeout: 60000 });
  out.connected = true;
  out.url = tab.url();
  const canvas = await tab.waitForSelector('#noVNC_container canvas', { timeout: 10000 });
  const size = await canvas.evaluate((c) => ({ w: c.width, h: c.height }));
  out.width = size.w;
  out.height = size.h;
  // The desktop is drawn once the first framebuffer update arrives: wait
  // until the canvas holds more than one colour.
  await tab.waitForFunction(() => {
    const c = document.querySelector('#noVNC_container canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const first = d[0] + ',' + d[1] + ',' + d[2];
    for (let i = 4; i < d.length; i += 4 * 97) {
      if (d[i] + ',' + d[i + 1] + ',' + d[i + 2] !== first) return true;
    }
    return false;
  }, null, { timeout: 30000, polling: 250 });
  await canvas.screenshot({ path: shot });
} catch (e) {
  out.error = String(e && e.stack || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
