// The session page's controls that do not need noVNC: the status line,
// the lifetime countdown and its warning banner, the message banner, the
// panels, sharing and stopping. desktop.js (loaded only when the noVNC
// client was built) imports this module for the status and messages.
import { api, say, short, clock, localTime, localTimes, copyButtons, followSession } from './api.js';

const $ = (id) => document.getElementById(id);
const root = $('session');
const d = root.dataset;

// page is what the server told us about the session.
export const page = {
  id: d.id,
  state: d.state,
  reason: d.reason,
  ends: d.ends ? Date.parse(d.ends) : 0,
  ws: d.ws,
  app: d.app,
  viewOnly: d.viewOnly === 'true',
  owner: d.owner === 'true',
};

// ui holds what desktop.js and this module share.
export const ui = {
  stopRequested: false, // the user pressed Stop: a disconnect is expected
  reconnect: null, // set by desktop.js
};

const statusEl = $('status');

// A link from outside the gateway (an Open OnDemand card, gateway's
// waysIn) picks a way in by its fragment: #console the VNC console beside
// an RDP desktop, #rdp the panel with the native RDP client's file. This
// module runs before desktop.js and rdp.js, which read the view from the
// page.
if (location.hash === '#console' && d.view === 'rdp' && $('view-vnc') && $('screen')) {
  d.view = 'vnc';
  $('view-rdp').setAttribute('aria-pressed', 'false');
  $('view-vnc').setAttribute('aria-pressed', 'true');
  $('rdp-screen').hidden = true;
  $('screen').hidden = false;
}

// setStatus shows label in the status line; kind is a state name or one
// of ok / busy / bad, and picks the colour.
export function setStatus(label, kind = label) {
  statusEl.textContent = label;
  statusEl.className = `pill state-${kind}`;
}

// showMessage shows text in the banner under the toolbar, with a
// Reconnect button when offerReconnect.
export function showMessage(text, offerReconnect = false, kind = 'info') {
  $('message-text').textContent = text;
  $('message-reconnect').hidden = !offerReconnect || !ui.reconnect;
  const m = $('message');
  m.className = `banner ${kind}`;
  m.hidden = false;
}

export function clearMessage() {
  $('message').hidden = true;
}

// ended shows that the session is over and removes what no longer works.
export function ended(reason) {
  page.state = 'ended';
  if (page.ws) window.airlockState = 'disconnected:ended';
  setStatus('ended');
  showMessage(`The session has ended: ${reason || 'no reason was given'}.`, false, 'error');
  for (const id of ['stop', 'reconnect', 'ctrl-alt-del', 'message-reconnect']) {
    const el = $(id);
    if (el) el.hidden = true;
  }
  $('countdown').hidden = true;
  $('ending').hidden = true;
}

// waitUntil follows the session's state (pushed by the gateway; polled
// every everyMs only if the push fails) until want(state) holds, and
// returns that answer; onChange sees the states before it. It returns
// null if the API stops answering, and after timeoutMs (0: never) the
// last answer it had.
export function waitUntil(want, everyMs = 1000, onChange = null, timeoutMs = 0) {
  return new Promise((resolve) => {
    let last = null;
    let timer = null;
    const done = (s) => {
      clearTimeout(timer);
      resolve(s);
    };
    const stop = followSession(page.id, (s) => {
      last = s;
      if (want(s.state)) {
        done(s);
        return true;
      }
      if (onChange) onChange(s);
      return false;
    }, { pollMs: everyMs, onError: () => done(null) });
    if (timeoutMs) {
      timer = setTimeout(() => {
        stop();
        resolve(last);
      }, timeoutMs);
    }
  });
}

// ---- lifetime countdown --------------------------------------------------

const WARN_MS = 5 * 60 * 1000;

function tick() {
  if (!page.ends || page.state === 'ended') return;
  const left = page.ends - Date.now();
  const cd = $('countdown');
  cd.textContent = left > 0 ? `${short(left)} left` : 'time is up';
  cd.classList.toggle('warn', left <= WARN_MS);
  const banner = $('ending');
  if (left <= 0) {
    banner.textContent = 'This session has reached the end of its lifetime and is being stopped.';
    banner.hidden = false;
  } else if (left <= WARN_MS) {
    banner.textContent = `This session ends in ${clock(left)}. Save your work now.`;
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
}

if (page.ends) {
  tick();
  setInterval(tick, 1000);
}

// ---- panels --------------------------------------------------------------

function togglePanel(id, open) {
  for (const p of document.querySelectorAll('.panel')) {
    const show = p.id === id && (open ?? p.hidden);
    p.hidden = !show;
    const btn = document.querySelector(`[aria-controls="${p.id}"]`);
    if (btn) btn.setAttribute('aria-expanded', String(show));
  }
}

document.addEventListener('click', (ev) => {
  const t = ev.target.closest('[aria-controls], [data-close]');
  if (!t) return;
  if (t.dataset.close) togglePanel(t.dataset.close, false);
  else togglePanel(t.getAttribute('aria-controls'));
});
document.addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape') togglePanel('', false);
});

$('message-reconnect').addEventListener('click', () => ui.reconnect && ui.reconnect());

// ---- native RDP clients: the .airlock file ------------------------------

if ($('rdp-login')) $('rdp-login').textContent = `airlock login ${location.origin}`;
if (location.hash === '#rdp' && $('rdp-panel')) togglePanel('rdp-panel', true);
$('rdp-download')?.addEventListener('click', async (ev) => {
  const btn = ev.currentTarget;
  btn.disabled = true;
  say($('rdp-msg'), '');
  try {
    // The file is JSON: a fresh certificate and key, made for this one
    // download and kept nowhere on the gateway.
    const f = await api('POST', `/api/v1/sessions/${encodeURIComponent(page.id)}/rdp`);
    const url = URL.createObjectURL(new Blob([JSON.stringify(f, null, 2)], { type: 'application/octet-stream' }));
    const a = document.createElement('a');
    a.href = url;
    a.download = `${page.id}.airlock`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    say($('rdp-msg'), `Downloaded; valid until ${localTime(f.expires)}.`);
  } catch (e) {
    say($('rdp-msg'), `No file made: ${e.message}`, 'error');
  } finally {
    btn.disabled = false;
  }
});

// ---- stop ----------------------------------------------------------------

$('stop')?.addEventListener('click', async (ev) => {
  if (!confirm('Stop this session? Whatever is not saved in it is lost.')) return;
  const btn = ev.currentTarget;
  btn.disabled = true;
  ui.stopRequested = true;
  try {
    await api('DELETE', `/api/v1/sessions/${encodeURIComponent(page.id)}`);
    setStatus('stopping');
    showMessage('Stopping the session…');
    const s = await waitUntil((st) => st === 'ended', 500);
    if (s) ended(s.reason);
  } catch (e) {
    ui.stopRequested = false;
    btn.disabled = false;
    showMessage(`Could not stop the session: ${e.message}`, false, 'error');
  }
});

// ---- sharing -------------------------------------------------------------

const shares = $('shares');

function shareRow(id, mode, expires) {
  const tr = document.createElement('tr');
  tr.dataset.id = id;
  const cell = (label, text) => {
    const td = document.createElement('td');
    if (label) td.dataset.label = label;
    td.textContent = text;
    tr.append(td);
    return td;
  };
  cell('Access', mode === 'control' ? 'full control' : 'view only');
  cell('Expires', localTime(expires));
  cell('State', 'valid').dataset.role = 'share-state';
  const act = cell('', '');
  act.className = 'actions';
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'small danger';
  b.dataset.revokeShare = id;
  b.textContent = 'Revoke';
  act.append(b);
  return tr;
}

$('share-form')?.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const mode = $('share-mode').value;
  say($('share-msg'), '');
  try {
    const r = await api('POST', `/api/v1/sessions/${encodeURIComponent(page.id)}/shares`, { mode, ttl: $('share-ttl').value });
    $('share-url').value = r.url;
    $('share-out-mode').textContent = `${mode === 'control' ? 'full control' : 'view only'}, until ${localTime(r.expires)}`;
    $('share-out').hidden = false;
    $('share-url').select();
    shares.querySelector('tbody').prepend(shareRow(r.id, mode, r.expires));
    shares.hidden = false;
    $('no-shares')?.remove();
  } catch (e) {
    say($('share-msg'), `No link made: ${e.message}`, 'error');
  }
});

shares?.addEventListener('click', async (ev) => {
  const btn = ev.target.closest('[data-revoke-share]');
  if (!btn) return;
  const id = btn.dataset.revokeShare;
  btn.disabled = true;
  try {
    await api('DELETE', `/api/v1/sessions/${encodeURIComponent(page.id)}/shares/${encodeURIComponent(id)}`);
    const tr = btn.closest('tr');
    tr.querySelector('[data-role=share-state]').textContent = 'revoked';
    btn.remove();
  } catch (e) {
    btn.disabled = false;
    say($('share-msg'), `Could not revoke the link: ${e.message}`, 'error');
  }
});

// ---- sessions without a desktop --------------------------------------------

// An app session (or one not ready yet) has no connection to watch, so
// the page follows its state: a session that becomes ready reloads into
// its view, one that ends says why.
function watchState() {
  followSession(page.id, (s) => {
    if (s.state === page.state) return false;
    if (s.state === 'ended') {
      ended(s.reason);
      return true;
    }
    if (s.state === 'ready' && !page.app) {
      location.reload();
      return true;
    }
    page.state = s.state;
    setStatus(s.state);
    return false;
  }, { pollMs: () => (page.state === 'ready' ? 5000 : 1000) });
}

if (page.ws && !$('screen')) {
  // The noVNC client is not in this build; the page says so.
  window.airlockState = 'disconnected:no-client';
  setStatus('unavailable', 'bad');
} else if (page.state === 'ended') {
  ended(page.reason);
} else if (!page.ws) {
  watchState();
}

copyButtons();
localTimes();
