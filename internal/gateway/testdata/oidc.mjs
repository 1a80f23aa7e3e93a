// Logs in through an OpenID provider in headless Chromium, as alice (in
// the profile's group and an admin group) and bob (in neither): the
// login page's button, the provider's own form, back to the portal; what
// each sees; then alice logs out, at the provider too.
import { launchBrowser, newPage, say } from './e2elib.mjs';

const cfg = JSON.parse(process.argv[2]);
const errors = [];
// Statuses are checked where they matter (bob's 403 on /admin); a failed
// resource load is not a page error here.
const pageErrors = () => errors.filter((e) => !e.includes('Failed to load resource'));
const browser = await launchBrowser();
try {
  async function ssoLogin(who, password) {
    const page = await newPage(browser, who, errors);
    await page.goto(cfg.base + '/login');
    await Promise.all([page.waitForURL((u) => u.toString().startsWith(cfg.issuer)), page.click('a.button:has-text("Log in with Test IdP")')]);
    await page.waitForSelector('#username');
    await page.fill('#username', who);
    await page.fill('#password', password);
    await Promise.all([page.waitForURL((u) => u.toString().startsWith(cfg.base + '/')), page.click('button[type=submit]')]);
    await page.waitForLoadState('load');
    return page;
  }
  const alice = await ssoLogin('alice', cfg.password);
  const aliceProfiles = await alice.$$eval('#profile option', (os) => os.map((o) => o.value));
  const aliceAdmin = await alice.$('a[href="/admin"]') !== null;
  await alice.screenshot({ path: cfg.shots + '/oidc-alice.png' });
  const adminResp = await alice.goto(cfg.base + '/admin');
  say('alice', { url: alice.url(), profiles: aliceProfiles, adminLink: aliceAdmin, adminStatus: adminResp.status() });

  const bob = await ssoLogin('bob', cfg.password);
  const bobProfiles = await bob.$$eval('#profile option', (os) => os.map((o) => o.value));
  const bobAdmin = await bob.$('a[href="/admin"]') !== null;
  const bobAdminResp = await bob.goto(cfg.base + '/admin');
  say('bob', { url: bob.url(), profiles: bobProfiles, adminLink: bobAdmin, adminStatus: bobAdminResp.status() });

  await alice.goto(cfg.base + '/');
  const trail = [];
  alice.on('framenavigated', (f) => { if (f === alice.mainFrame()) trail.push(f.url()); });
  await alice.click('form[action="/logout"] button');
  await alice.waitForURL((u) => u.toString().startsWith(cfg.base + '/login'), { timeout: 15000 }).catch((e) => say('trail', { trail, message: String(e) }));
  const me = await alice.evaluate(async () => (await fetch('/api/v1/me')).status);
  say('logout', { url: alice.url(), me, trail });
  say('done', { errors: pageErrors() });
} catch (e) {
  say('error', { message: String(e && e.stack || e), errors });
} finally {
  await browser.close();
}
