// Enrols a second factor and logs in with it in headless Chromium, as a
// user whose groups require one: password, the enrolment page (the QR
// code must render under the portal's CSP), a code the Go side computes
// from the key on the page (sent on standard input), the recovery codes,
// then a logout and a second login that asks only for a code.
import { launchBrowser, newPage, say } from './e2elib.mjs';

const cfg = JSON.parse(process.argv[2]);
const errors = [];
const lines = [];
let waiter = null;
let buf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  buf += d;
  for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
    const l = buf.slice(0, i);
    buf = buf.slice(i + 1);
    if (waiter) { const w = waiter; waiter = null; w(l); } else lines.push(l);
  }
});
const nextLine = () => (lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => { waiter = r; }));

async function password(page) {
  await page.goto(cfg.base + '/');
  await page.waitForSelector('input[name=user]');
  await page.fill('input[name=user]', cfg.user);
  await page.fill('input[name=password]', cfg.password);
  await Promise.all([page.waitForURL((u) => u.pathname === '/login/totp'), page.click('button[type=submit]')]);
}

async function submitCode(page, code) {
  await page.fill('#totp-form input[name=code]', code);
  await Promise.all([page.waitForNavigation(), page.click('#totp-form button[type=submit]')]);
}

const browser = await launchBrowser();
try {
  const page = await newPage(browser, cfg.user, errors);
  await password(page);
  const qr = await page.$eval('#totp-qr', (img) => ({ width: img.naturalWidth, height: img.naturalHeight, scheme: img.src.slice(0, 22) }));
  const secret = (await page.textContent('#totp-secret')).trim();
  await page.screenshot({ path: cfg.shots + '/totp-enrol.png' });
  const enrolURL = page.url();
  // Skipping the second step: the portal sends the browser back to log in.
  await page.goto(cfg.base + '/');
  const skipped = new URL(page.url()).pathname;
  const skipMe = await page.evaluate(async () => (await fetch('/api/v1/me')).status);
  await page.goto(enrolURL);
  // A fresh enrolment page (a new key) after the detour.
  const secret2 = (await page.textContent('#totp-secret')).trim();
  say('enrol', { url: enrolURL, qr, secretChanged: secret2 !== secret, skipped, skipMe, secret: secret2 });

  await submitCode(page, await nextLine());
  const codes = await page.$$eval('#recovery-codes code', (cs) => cs.map((c) => c.textContent));
  await page.screenshot({ path: cfg.shots + '/totp-recovery.png' });
  await Promise.all([page.waitForNavigation(), page.click('#totp-continue')]);
  const me = await page.evaluate(async () => (await fetch('/api/v1/me')).json());
  say('enrolled', { url: page.url(), codes, me });

  await Promise.all([page.waitForNavigation(), page.click('form[action="/logout"] button')]);
  await password(page);
  const hasQR = (await page.$('#totp-qr')) !== null;
  say('second', { url: page.url(), hasQR });
  await submitCode(page, await nextLine());
  const me2 = await page.evaluate(async () => (await fetch('/api/v1/me')).json());
  say('login', { url: page.url(), me: me2 });
  // The skipped step's 401 is expected; any other failure is an error.
  say('done', { errors: errors.filter((e) => !e.includes('Failed to load resource')) });
} catch (e) {
  say('error', { message: String(e && e.stack || e), errors });
} finally {
  await browser.close();
}
