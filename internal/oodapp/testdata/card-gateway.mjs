// Opens the OnDemand session card of the gateway route (the rendered
// view.html.erb) in headless Chromium, follows its link to the session on
// the airlock gateway, logs in there with the gateway's own form (the
// link carries no credential), and waits for the desktop in the session
// page's noVNC canvas.
//
//   node card-gateway.mjs CARD_URL USER PASSWORD SCREENSHOT.png
//
// Prints one JSON object: {error, url, drawn}.
import { launchBrowser, drawn } from '../../gateway/testdata/e2elib.mjs';

const [cardURL, user, password, shot] = process.argv.slice(2);
const out = { error: '', url: '', drawn: false };
const browser = await launchBrowser();
try {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 800 } });
  const card = await ctx.newPage();
  await card.goto(cardURL, { waitUntil: 'load' });
  const [tab] = await Promise.all([
    ctx.waitForEvent('page', { timeout: 30000 }),
    card.click('#airlock-gateway'),
  ]);
  // The gateway asks who this is first.
  await tab.waitForSelector('input[name=user]', { timeout: 30000 });
  await tab.fill('input[name=user]', user);
  await tab.fill('input[name=password]', password);
  await Promise.all([tab.waitForURL(/\/sessions\/s-/, { timeout: 30000 }), tab.click('button[type=submit]')]);
  out.url = tab.url();
  await drawn(tab, 60000);
  out.drawn = true;
  await tab.screenshot({ path: shot });
} catch (e) {
  out.error = String(e);
}
console.log(JSON.stringify(out));
await browser.close();
