// Drives the portal's pages in headless Chromium for browser_linux_test.go.
//
//   node browser.mjs BASE_URL SCREENSHOT_DIR
//
// Prints one JSON object: {error, steps, pages: {NAME: {console,
// pageErrors, csp, facts}}}. console holds console errors, pageErrors
// uncaught exceptions, csp the Content-Security-Policy violations the
// page reported; facts are what each scenario observed, for the Go test
// to judge. The script fails (error set) only when a step cannot happen
// at all, such as an element that never appears.
import { chromium } from 'playwright-core';
import path from 'node:path';

const [base, shots] = process.argv.slice(2);
if (!base || !shots) {
  console.error('usage: node browser.mjs BASE_URL SCREENSHOT_DIR');
  process.exit(2);
}

const out = { error: '', steps: [], pages: {} };
const t0 = Date.now();
const step = (s) => out.steps.push(`${((Date.now() - t0) / 1000).toFixed(1)}s ${s}`);

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--ignore-certificate-errors'],
});

// open starts a fresh context and page named name that records errors and
// CSP violations, accepts confirm() dialogs, and loads urlPath.
//
// Chromium logs every HTTP error status as a console error. Those of the
// document itself (the login and error pages) and those a scenario asks
// for on purpose (allowed: [status, path] pairs) are not faults.
async function open(name, urlPath, { viewport = { width: 1100, height: 800 }, allowed = [] } = {}) {
  const rec = { console: [], pageErrors: [], csp: [], facts: {} };
  out.pages[name] = rec;
  const ctx = await browser.newContext({ viewport, ignoreHTTPSErrors: true, deviceScaleFactor: 1 });
  await ctx.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__csp.push(`${e.violatedDirective} ${e.blockedURI || ''} ${e.sourceFile || ''}:${e.lineNumber || ''}`.trim());
    });
  });
  const page = await ctx.newPage();
  const url = base + urlPath;
  const expected = [[0, urlPath], ...allowed];
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = m.text();
    const where = m.location().url;
    const status = /^Failed to load resource: the server responded with a status of (\d+)/.exec(text);
    if (status && expected.some(([code, p]) => where === base + p && (code === 0 || code === Number(status[1])))) return;
    rec.console.push(`${text} (${where}:${m.location().lineNumber})`);
  });
  page.on('pageerror', (e) => rec.pageErrors.push(String(e && e.stack || e)));
  page.on('dialog', (d) => d.accept());
  const res = await page.goto(url, { waitUntil: 'load' });
  rec.facts.status = res.status();
  step(`${name}: loaded ${urlPath} (${res.status()})`);
  return { page, ctx, rec };
}

// close collects the page's CSP reports and ends its context.
async function close({ page, ctx, rec }) {
  try {
    rec.csp.push(...await page.evaluate(() => window.__csp || []));
  } catch (e) {
    rec.pageErrors.push(`collect CSP reports: ${e}`);
  }
  await ctx.close();
}

const shot = (page, file, fullPage = false) => page.screenshot({ path: path.join(shots, file), fullPage });
const text = (page, sel) => page.locator(sel).first().innerText();

try {
  // The canary: an inline script the CSP must block and report, so the
  // Go test knows a violation would be seen.
  {
    const p = await open('csp-canary', '/csp-canary');
    await p.page.waitForTimeout(200);
    p.rec.facts.inlineRan = await p.page.evaluate(() => window.inlineRan === true);
    await close(p);
  }

  {
    const p = await open('login', '/login');
    p.rec.facts.error = await text(p.page, '.alert.error');
    await shot(p.page, 'portal-login.png');
    await close(p);
  }

  {
    const p = await open('error', '/error');
    await shot(p.page, 'portal-error.png');
    await close(p);
  }

  // Home: launch refused, launch followed to ready, tokens.
  {
    const p = await open('home', '/', { allowed: [[503, '/api/v1/sessions']] });
    const pg = p.page;
    await shot(pg, 'portal-home.png', true);
    const desc = () => pg.evaluate(() => {
      const el = document.getElementById('profile-description');
      return el.hidden ? '(hidden)' : el.textContent;
    });
    p.rec.facts.descriptionFirst = await desc();
    await pg.selectOption('#profile', 'busy');
    p.rec.facts.descriptionBusy = await desc();
    p.rec.facts.busyMaxCPUs = await pg.getAttribute('#cpus', 'max');
    await pg.click('#launch-btn');
    await pg.waitForFunction(() => /Not started/.test(document.getElementById('launch-status').textContent), null, { timeout: 10000 });
    p.rec.facts.refused = await text(pg, '#launch-status');
    await shot(pg, 'portal-home-refused.png');
    step('home: refused launch shown');

    // New token, and revoking an old one.
    await pg.fill('#token-name', 'e2e');
    await pg.click('#new-token button[type=submit]');
    await pg.waitForFunction(() => document.getElementById('token-value').value !== '', null, { timeout: 10000 });
    p.rec.facts.token = await pg.inputValue('#token-value');
    await pg.click('[data-revoke-token="t-ZyXwVuTs"]');
    await pg.waitForSelector('tr[data-id="t-ZyXwVuTs"]', { state: 'detached', timeout: 10000 });
    p.rec.facts.tokenRows = await pg.locator('#tokens tbody tr').count();
    await shot(pg, 'portal-home-token.png', true);
    step('home: token made and one revoked');

    await close(p);
  }

  // A launch followed from queued to ready: the states shown on the way
  // are kept in sessionStorage, which outlives the navigation.
  {
    const p = await open('launched', '/');
    const pg = p.page;
    await pg.selectOption('#profile', 'desktop');
    await pg.fill('#cpus', '4');
    await pg.fill('#lifetime', '1.5');
    await pg.uncheck('#persistent');
    await pg.evaluate(() => {
      const seen = [];
      const el = document.getElementById('launch-status');
      new MutationObserver(() => {
        seen.push(el.textContent);
        sessionStorage.setItem('seen', JSON.stringify(seen));
      }).observe(el, { childList: true, characterData: true, subtree: true });
    });
    await Promise.all([
      pg.waitForURL('**/sessions/s-new', { timeout: 15000 }),
      pg.click('#launch-btn'),
    ]);
    const seen = JSON.parse(await pg.evaluate(() => sessionStorage.getItem('seen') || '[]'));
    out.pages.home.facts.sawQueued = seen.some((s) => s.startsWith('Queued'));
    out.pages.home.facts.sawStarting = seen.some((s) => s.startsWith('Starting'));
    out.pages.home.facts.seen = seen;
    p.rec.facts.path = new URL(pg.url()).pathname;
    step(`launched: followed ${JSON.stringify(seen)} to ${p.rec.facts.path}`);
    await pg.waitForFunction(() => window.airlockState && window.airlockState !== 'connecting', null, { timeout: 10000 });
    p.rec.facts.state = await pg.evaluate(() => window.airlockState);
    await close(p);
  }

  {
    const p = await open('home-phone', '/', { viewport: { width: 390, height: 844 } });
    await shot(p.page, 'portal-home-phone.png', true);
    p.rec.facts.overflow = await p.page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    await close(p);
  }

  // The desktop: connect, draw, clipboard both ways, share, then the end.
  {
    const p = await open('desktop', '/sessions/s-0a1b2c3d4e5f');
    const pg = p.page;
    await pg.waitForFunction(() => window.airlockState === 'connected', null, { timeout: 15000 });
    p.rec.facts.connected = await pg.evaluate(() => window.airlockState);
    await pg.waitForFunction(() => {
      const c = document.querySelector('#screen canvas');
      if (!c || !c.width) return false;
      const d = c.getContext('2d').getImageData(c.width / 2, c.height / 2, 1, 1).data;
      return d[0] === 46 && d[1] === 125 && d[2] === 50;
    }, null, { polling: 100, timeout: 15000 });
    p.rec.facts.centre = await pg.evaluate(() => {
      const c = document.querySelector('#screen canvas');
      return [...c.getContext('2d').getImageData(c.width / 2, c.height / 2, 1, 1).data.slice(0, 3)];
    });
    step('desktop: connected and drawn');
    await pg.waitForFunction(() => document.getElementById('clipboard').value !== '', null, { timeout: 10000 });
    p.rec.facts.clipboardIn = await pg.inputValue('#clipboard');
    await shot(pg, 'portal-desktop.png');

    await pg.click('#share-toggle');
    await pg.selectOption('#share-mode', 'control');
    await pg.selectOption('#share-ttl', '8h');
    await pg.click('#share-form button[type=submit]');
    await pg.waitForFunction(() => document.getElementById('share-url').value !== '', null, { timeout: 10000 });
    p.rec.facts.shareURL = await pg.inputValue('#share-url');
    await pg.click('[data-revoke-share="sh-valid"]');
    await pg.waitForFunction(() => document.querySelector('tr[data-id="sh-valid"] [data-role=share-state]').textContent === 'revoked', null, { timeout: 10000 });
    p.rec.facts.revoked = await text(pg, 'tr[data-id="sh-valid"] [data-role=share-state]');
    await shot(pg, 'portal-desktop-share.png');
    step('desktop: share made and one revoked');

    await pg.click('#share-panel [data-close]');
    await pg.evaluate(() => { window.airlockState = 'before-reconnect'; });
    await pg.click('#reconnect');
    await pg.waitForFunction(() => window.airlockState === 'connected', null, { timeout: 15000 });
    step('desktop: reconnected');
    await pg.click('#clip-toggle');
    await pg.fill('#clipboard', 'from the browser');
    await shot(pg, 'portal-desktop-clipboard.png');
    await pg.click('#clip-send');
    // The stand-in gateway ends the session when the text arrives.
    await pg.waitForFunction(() => window.airlockState === 'disconnected:ended', null, { timeout: 10000 });
    p.rec.facts.finalState = await pg.evaluate(() => window.airlockState);
    p.rec.facts.message = await text(pg, '#message-text');
    await shot(pg, 'portal-desktop-ended.png');
    step('desktop: clipboard sent, the end reported');
    await close(p);
  }

  // A view-only viewer: connected, marked, and sends no input.
  {
    const p = await open('view-only', '/sessions/s-view');
    const pg = p.page;
    await pg.waitForFunction(() => window.airlockState === 'connected', null, { timeout: 15000 });
    p.rec.facts.connected = await pg.evaluate(() => window.airlockState);
    p.rec.facts.pill = await text(pg, '#viewonly');
    await pg.mouse.click(550, 400);
    await pg.mouse.move(600, 450);
    await pg.keyboard.type('typed by a viewer');
    await pg.waitForTimeout(300);
    await shot(pg, 'portal-view-only.png');
    await close(p);
  }

  // An app session near its end: the warning banner shows.
  {
    const p = await open('app', '/sessions/s-333333333333');
    const pg = p.page;
    await pg.waitForSelector('#ending:not([hidden])', { timeout: 5000 });
    p.rec.facts.banner = /ends in \d+:\d\d/.test(await text(pg, '#ending'));
    await shot(pg, 'portal-app.png');
    await close(p);
  }

  {
    const p = await open('app-phone', '/sessions/s-333333333333', { viewport: { width: 390, height: 844 } });
    await p.page.click('#share-toggle');
    await shot(p.page, 'portal-app-phone-share.png');
    p.rec.facts.overflow = await p.page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    await close(p);
  }

  {
    const p = await open('no-novnc', '/sessions/s-nonovnc');
    const pg = p.page;
    await pg.waitForFunction(() => window.airlockState !== undefined, null, { timeout: 5000 });
    p.rec.facts.state = await pg.evaluate(() => window.airlockState);
    p.rec.facts.message = await text(pg, '#novnc-missing');
    await shot(pg, 'portal-no-novnc.png');
    await close(p);
  }

  {
    const p = await open('admin', '/admin');
    const pg = p.page;
    await shot(pg, 'portal-admin.png', true);
    await pg.click('#stop-all');
    await pg.waitForFunction(() => !document.getElementById('sessions-msg').hidden, null, { timeout: 10000 });
    p.rec.facts.stopAll = await text(pg, '#sessions-msg');
    // Again, when one session cannot be stopped: the page names it.
    await pg.waitForFunction(() => !document.getElementById('stop-all').disabled, null, { timeout: 10000 });
    await pg.click('#stop-all');
    await pg.waitForFunction(() => document.getElementById('sessions-msg').textContent.includes('could not stop'), null, { timeout: 10000 });
    p.rec.facts.stopAllFailed = await text(pg, '#sessions-msg');
    await pg.waitForFunction(() => document.querySelector('tr[data-id="s-444444444444"]').dataset.state === 'stopping', null, { timeout: 10000 });
    await shot(pg, 'portal-admin-stopping.png', true);
    await close(p);
  }
} catch (e) {
  out.error = String(e && e.stack || e);
} finally {
  await browser.close().catch(() => {});
}
step('done');
process.stdout.write(JSON.stringify(out));
