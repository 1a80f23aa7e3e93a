// What the browser tests share: a headless Chromium, pages that collect
// errors, logging in through the form, waiting for the desktop in the noVNC
// canvas, typing into it.
import { chromium } from 'playwright-core';

export const say = (step, extra = {}) => console.log(JSON.stringify({ step, ...extra }));

export async function launchBrowser() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--ignore-certificate-errors'],
  });
}

// newPage opens a page in a fresh context; errors collects what its
// scripts threw or logged as errors.
export async function newPage(browser, who, errors) {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 800 } });
  const page = await ctx.newPage();
  page.on('dialog', (d) => d.accept());
  page.on('pageerror', (e) => errors.push(`${who}: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`${who} console: ${m.text()}`); });
  return page;
}

export async function login(page, base, user, password) {
  await page.goto(base + '/');
  await page.waitForSelector('input[name=user]');
  await page.fill('input[name=user]', user);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
}

// drawn waits until the noVNC canvas shows the xterm: enough white pixels.
export async function drawn(page, timeout = 30000) {
  await page.waitForFunction(() => window.airlockState === 'connected', null, { timeout }).catch(async (e) => {
    throw new Error(`${e.message}: state ${await page.evaluate(() => window.airlockState)}`);
  });
  await page.waitForFunction(() => {
    const c = document.querySelector('#screen canvas');
    if (!c || !c.width) return false;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4 * 97) if (d[i] > 200 && d[i + 1] > 200 && d[i + 2] > 200) n++;
    return n > 50;
  }, null, { polling: 200, timeout: 30000 }).catch(async (e) => {
    throw new Error(`${e.message}: canvas ${await page.evaluate(() => { const c = document.querySelector('#screen canvas'); return c ? c.width + 'x' + c.height : 'none'; })}`);
  });
}

export async function type(page, text) {
  await page.click('#screen canvas', { position: { x: 60, y: 60 } });
  await page.keyboard.type(text, { delay: 15 });
  await page.keyboard.press('Enter');
}
