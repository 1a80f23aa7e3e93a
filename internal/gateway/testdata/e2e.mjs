// End-to-end drive of the portal in headless Chromium, for e2e_test.go.
// Usage: node e2e.mjs CONFIG_JSON. Prints one JSON line per step; exits
// non-zero on failure. The Go test checks what the typing did inside the
// session (files the shell wrote), since that is the effect that matters.
import * as lib from './e2elib.mjs';

const cfg = JSON.parse(process.argv[2]);
const { say, drawn, type } = lib;
const browser = await lib.launchBrowser();
const errors = [];
const newPage = (who) => lib.newPage(browser, who, errors);
const login = (page, user) => lib.login(page, cfg.base, user, cfg.password);

// The VM flow (cfg.mode "vm"): launch the vm profile, wait until the noVNC
// canvas shows the guest's console (QEMU's VGA text is grey on black, so
// "drawn" means enough pixels that are not black), then stop on the Go
// side's signal.
if (cfg.mode === 'vm') {
  try {
    const page = await newPage('owner');
    await login(page, cfg.owner);
    await page.selectOption('#profile', cfg.profile);
    await Promise.all([page.waitForURL(/\/sessions\//, { timeout: 60000 }), page.click('#launch-btn')]);
    const id = page.url().split('/sessions/')[1];
    say('launched', { id });
    await page.waitForFunction(() => window.airlockState === 'connected', null, { timeout: 60000 });
    await page.waitForFunction(() => {
      const c = document.querySelector('#screen canvas');
      if (!c || !c.width) return false;
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4 * 13) if (d[i] + d[i + 1] + d[i + 2] > 300) n++;
      return n > 200;
    }, null, { polling: 500, timeout: 120000 });
    const accel = await page.textContent('#accel');
    await page.screenshot({ path: cfg.shots + '/vm-1-console.png' });
    say('vm-drawn', { id, accel });
    // Once the Go side has seen the banner in the serial log, the guest's
    // lines must show below the firmware's: lit pixels in the middle of
    // the screen, where nothing is before the guest prints.
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
    await lines();
    const lit = await page.waitForFunction(() => {
      const c = document.querySelector('#screen canvas');
      const h = c.height;
      const d = c.getContext('2d').getImageData(0, Math.floor(h * 0.45), c.width, Math.floor(h * 0.3)).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 300) n++;
      return n > 2000 ? n : false;
    }, null, { polling: 500, timeout: 60000 });
    await page.screenshot({ path: cfg.shots + '/vm-2-banner.png' });
    say('vm-banner', { lit: await lit.jsonValue() });
    // "stop": press Stop; "ended": the session ended by itself (the guest
    // powered off), which the page must notice.
    if ((await lines()) === 'stop') await page.click('#stop');
    await page.waitForFunction(() => /ended/.test(document.body.innerText), null, { timeout: 30000 });
    await page.screenshot({ path: cfg.shots + '/vm-3-ended.png' });
    say('stopped', { errors });
    await browser.close();
  } catch (e) {
    say('error', { message: String(e), errors });
    await browser.close();
    process.exit(1);
  }
  process.exit(0);
}

try {
  const alice = await newPage('alice');
  await login(alice, cfg.owner);
  say('logged-in');
  await alice.screenshot({ path: cfg.shots + '/e2e-1-home.png' });
  await alice.selectOption('#profile', 'desktop');
  await Promise.all([alice.waitForURL(/\/sessions\//, { timeout: 60000 }), alice.click('#launch-btn')]);
  const id = alice.url().split('/sessions/')[1];
  say('launched', { id });
  await drawn(alice);
  await alice.screenshot({ path: cfg.shots + '/e2e-2-desktop.png' });
  say('drawn');
  // The desktop takes the window's size: noVNC's canvas is the remote
  // screen, and it ends up the size of the page's screen area (the
  // profile's geometry is 1280x800, the window 1100x800), and again
  // after the window changes.
  const fits = async () => {
    const h = await alice.waitForFunction(() => {
      const s = document.getElementById('screen');
      const c = s.querySelector('canvas');
      const near = (a, b) => Math.abs(a - b) <= 4;
      return c && near(c.width, s.clientWidth) && near(c.height, s.clientHeight) ? [c.width, c.height] : false;
    }, null, { polling: 200, timeout: 30000 });
    return h.jsonValue();
  };
  const first = await fits();
  await alice.setViewportSize({ width: 900, height: 700 });
  say('sized', { first, second: await fits() });
  await type(alice, cfg.aliceCommand);
  say('owner-typed');

  // Share view-only with the second user.
  await alice.click('#share-toggle');
  await alice.selectOption('#share-mode', 'view');
  await alice.click('#share-form button[type=submit]');
  await alice.waitForFunction(() => document.querySelector('#share-url').value.startsWith('https://'), null, { timeout: 10000 });
  const shareURL = await alice.inputValue('#share-url');
  say('shared');

  const bob = await newPage('bob');
  await login(bob, cfg.viewer);
  await bob.goto(shareURL);
  await bob.waitForURL(/\/sessions\//);
  await drawn(bob);
  const viewOnly = await bob.isVisible('#viewonly');
  await type(bob, cfg.viewerCommand);
  await bob.screenshot({ path: cfg.shots + '/e2e-3-viewer.png' });
  say('viewer-typed', { viewOnly });

  await type(alice, cfg.afterCommand);
  say('owner-typed-after');
  process.stdout.write(''); // flush
  // Wait for the Go side to check the files, then stop.
  await new Promise((resolve) => process.stdin.once('data', resolve));
  await alice.screenshot({ path: cfg.shots + '/e2e-4-after.png' });
  await alice.click('#stop');
  await alice.waitForFunction(() => /ended/.test(document.body.innerText), null, { timeout: 30000 });
  await alice.screenshot({ path: cfg.shots + '/e2e-5-stopped.png' });
  say('stopped', { errors });
  await browser.close();
} catch (e) {
  say('error', { message: String(e), errors });
  await browser.close();
  process.exit(1);
}
