// The portal with the Slurm backend, in headless Chromium, for
// slurm_test.go: launch a profile whose job waits in Slurm's queue, see the
// queue's reason and position on the home page, see the desktop once the
// job runs, type a command, stop. Usage: node e2e-slurm.mjs CONFIG_JSON.
import { say, launchBrowser, newPage, login, drawn, type } from './e2elib.mjs';

const cfg = JSON.parse(process.argv[2]);
const browser = await launchBrowser();
const errors = [];
let page;
try {
  page = await newPage(browser, cfg.owner, errors);
  await login(page, cfg.base, cfg.owner, cfg.password);
  await page.selectOption('#profile', cfg.profile);
  // The home page follows the new session until it is ready, saying why
  // it waits.
  await page.click('#launch-btn');
  await page.waitForFunction(() => /Queued/.test(document.body.innerText) && /position \d+ of \d+/.test(document.body.innerText),
    null, { polling: 200, timeout: 30000 });
  const queued = await page.evaluate(() => document.body.innerText.split('\n').find((l) => /position \d+ of/.test(l)));
  await page.screenshot({ path: cfg.shots + '/slurm-1-queued.png' });
  say('queued', { text: queued });
  await page.waitForURL(/\/sessions\//, { timeout: 90000 });
  say('opened', { id: page.url().split('/sessions/')[1] });
  await drawn(page, 90000);
  await page.screenshot({ path: cfg.shots + '/slurm-2-desktop.png' });
  say('drawn');
  await type(page, cfg.command);
  say('typed');
  await new Promise((resolve) => process.stdin.once('data', resolve));
  await page.click('#stop');
  await page.waitForFunction(() => /ended/.test(document.body.innerText), null, { timeout: 30000 });
  say('stopped', { errors });
  await browser.close();
} catch (e) {
  const text = page ? await page.evaluate(() => document.body.innerText).catch(() => '') : '';
  if (page) await page.screenshot({ path: cfg.shots + '/slurm-error.png' }).catch(() => {});
  say('error', { message: String(e), errors, text });
  await browser.close();
  process.exit(1);
}
