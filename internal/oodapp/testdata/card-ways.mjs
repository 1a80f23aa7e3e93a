// Opens the OnDemand card of an RDP desktop on the gateway route in
// headless Chromium: logs in on the gateway through the card's first link
// (the gateway's own form), then follows the card's other ways in as that
// owner: the console link must land on the session page's VNC view with
// the desktop drawn, the RDP link on the page's open RDP panel, whose
// button downloads the session's .airlock file.
//
//   node card-ways.mjs CARD_URL USER PASSWORD SCREENSHOT.png
//
// Prints one JSON object: {error, console, panel, file}.
import { launchBrowser, drawn } from '../../gateway/testdata/e2elib.mjs';

const [cardURL, user, password, shot] = process.argv.slice(2);
const out = { error: '', console: false, panel: false, file: '' };
const browser = await launchBrowser();
try {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, acceptDownloads: true, viewport: { width: 1100, height: 800 } });
  const card = await ctx.newPage();
  await card.goto(cardURL, { waitUntil: 'load' });
  const follow = async (sel) => {
    const [tab] = await Promise.all([ctx.waitForEvent('page', { timeout: 30000 }), card.click(sel)]);
    return tab;
  };
  const first = await follow('#airlock-gateway');
  await first.waitForSelector('input[name=user]', { timeout: 30000 });
  await first.fill('input[name=user]', user);
  await first.fill('input[name=password]', password);
  await Promise.all([first.waitForURL(/\/sessions\/s-/, { timeout: 30000 }), first.click('button[type=submit]')]);
  await first.close();

  const con = await follow('#airlock-console');
  await con.waitForURL(/\/sessions\/s-[0-9a-f]+#console$/, { timeout: 30000 });
  await drawn(con, 60000);
  out.console = (await con.getAttribute('#view-vnc', 'aria-pressed')) === 'true' && (await con.isHidden('#rdp-screen'));
  await con.screenshot({ path: shot });
  await con.close();

  const rdp = await follow('#airlock-rdp');
  await rdp.waitForURL(/\/sessions\/s-[0-9a-f]+#rdp$/, { timeout: 30000 });
  await rdp.waitForSelector('#rdp-panel:not([hidden])', { timeout: 30000 });
  out.panel = true;
  const [dl] = await Promise.all([rdp.waitForEvent('download', { timeout: 30000 }), rdp.click('#rdp-download')]);
  out.file = dl.suggestedFilename();
} catch (e) {
  out.error = String(e);
}
console.log(JSON.stringify(out));
await browser.close();
