// A hostile web app's page, opened by a viewer through a view-only share,
// for apphost_browser_test.go. Usage: node hostile-app.mjs CONFIG_JSON.
// The viewer logs in, opens the share, clicks the portal's "Open the app";
// the app's page (written by the Go test) tries to use the viewer's
// gateway credentials and leaves what it got in window.attack. Then the
// page's form posts to the gateway's API, as a navigation. One JSON line
// per step; the Go side checks the gateway's state.
import * as lib from './e2elib.mjs';

const cfg = JSON.parse(process.argv[2]);
const { say } = lib;
const browser = await lib.launchBrowser();
const errors = [];
try {
  const bob = await lib.newPage(browser, 'bob', errors);
  await lib.login(bob, cfg.base, cfg.viewer, cfg.password);
  await bob.goto(cfg.shareURL);
  await bob.waitForURL(/\/sessions\//);
  say('shared-page');
  const [app] = await Promise.all([bob.context().waitForEvent('page'), bob.click('#open-app')]);
  const seen = [];
  app.on('console', (m) => seen.push(m.text()));
  app.on('pageerror', (e) => seen.push(String(e)));
  await app.waitForFunction(() => window.attack, null, { timeout: 30000 }).catch(async (e) => {
    throw new Error(`${e.message}; the app's tab is at ${app.url()} showing ${((await app.content()) || '').slice(0, 300)}; console: ${seen.join(' | ')}; attack: ${await app.evaluate(() => JSON.stringify(window.attack))}`);
  });
  const attack = await app.evaluate(() => window.attack);
  await app.screenshot({ path: cfg.shots + '/hostile-app.png' });
  say('attacked', { attack, url: app.url() });
  await Promise.all([app.waitForNavigation({ timeout: 15000 }), app.evaluate(() => document.getElementById('f').submit())]);
  say('form', { url: app.url(), body: ((await app.textContent('body')) || '').slice(0, 300) });
  await browser.close();
} catch (e) {
  say('error', { message: String(e), errors });
  await browser.close();
  process.exit(1);
}
