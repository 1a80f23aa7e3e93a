// The desktop view: noVNC's RFB client on the session's console
// WebSocket, sized (else scaled) to the window, with full screen, reconnect, the
// clipboard both ways and Ctrl+Alt+Del.
//
// window.airlockState tells tests (and curious people) where it is:
//   'connecting'                 opening the WebSocket and the RFB handshake
//   'connected'                  the desktop is shown
//   'disconnected:true|false'    the connection closed (clean or not)
//   'disconnected:ended'         ... because the session has ended
//   'disconnected:stopping'      not connected: the session was stopping
//   'securityfailure:REASON'     the desktop refused the handshake
// The view-only flag only spares the server input it would drop: the
// connector enforces view-only shares.
import RFB from '/static/vendor/novnc/core/rfb.js';
import { page, ui, setStatus, showMessage, clearMessage, ended, waitUntil } from './session.js';

const $ = (id) => document.getElementById(id);
const screen = $('screen');
const clip = $('clipboard');

let rfb = null;
let reconnecting = false; // we closed it to open a new one
let switching = false; // we closed it for the RDP view (rdp.js)
let view = document.getElementById('session').dataset.view || 'vnc'; // or 'rdp'

let refused = ''; // the securityfailure reason of this connection

function setState(s) {
  window.airlockState = s;
}

let openedAt = 0; // when the current connection was opened
let quickRetries = 0; // connections closed at once, in a row

function connect() {
  openedAt = Date.now();
  clearMessage();
  refused = '';
  setState('connecting');
  setStatus('connecting', 'busy');
  const url = `wss://${location.host}${page.ws}`;
  const r = new RFB(screen, url, { shared: true, wsProtocols: ['binary'] });
  // The desktop takes the window's size (Xvnc resizes its screen when a
  // viewer asks); scaling is the fallback where the server cannot resize
  // (a VM's console). A view-only viewer asks nothing of the server.
  r.scaleViewport = true;
  r.resizeSession = !page.viewOnly;
  r.viewOnly = page.viewOnly;
  r.focusOnClick = !page.viewOnly;
  r.addEventListener('connect', () => {
    setTimeout(() => { if (rfb === r) quickRetries = 0; }, 5000);
    setState('connected');
    setStatus('connected', 'ok');
    if (!page.viewOnly) r.focus({ preventScroll: true });
  });
  r.addEventListener('disconnect', (e) => onDisconnect(r, e.detail.clean));
  r.addEventListener('securityfailure', (e) => {
    refused = e.detail.reason || `security result ${e.detail.status}`;
    setState(`securityfailure:${refused}`);
  });
  r.addEventListener('credentialsrequired', () => {
    // The connector answers the desktop's password itself; a prompt here
    // means something is misconfigured, and the user has nothing to type.
    refused = 'the desktop asked the browser for a password';
    setState(`securityfailure:${refused}`);
    r.disconnect();
  });
  r.addEventListener('clipboard', (e) => {
    if (!clip) return; // the profile lets no clipboard text out or in
    clip.value = e.detail.text;
    lastSent = clip.value;
  });
  r.addEventListener('desktopname', (e) => {
    if (e.detail.name) document.title = `${e.detail.name} · airlock`;
  });
  rfb = r;
}

async function onDisconnect(r, clean) {
  if (r !== rfb) return;
  rfb = null;
  if (switching) {
    switching = false;
    setState('disconnected:switched');
    return;
  }
  if (reconnecting) {
    reconnecting = false;
    connect();
    return;
  }
  if (refused) {
    setStatus('refused', 'bad');
    showMessage(`The desktop refused the connection: ${refused}.`, true, 'error');
    return;
  }
  setState(`disconnected:${clean}`);
  setStatus('disconnected', 'bad');
  if (ui.stopRequested) return; // session.js reports the end
  // Xvnc closes a viewer whose screen changes size before the viewer has
  // said it follows size changes (another viewer's window resized it
  // during this one's handshake): a clean close moments after opening.
  // Open again at once (a few times at most) if the session is still
  // ready; a stop or an end closes viewers too, and is reported below.
  if (clean && Date.now() - openedAt < 5000 && quickRetries < 3) {
    const now = await waitUntil(() => true, 500, null, 2000);
    if (now && now.state === 'ready') {
      quickRetries++;
      connect();
      return;
    }
  }
  // Say why, if the gateway tells us: an ended session is the common cause.
  // The runner reports the end a moment after the display closes (a VM
  // that powered off, an X server that exited), so a session still ready
  // is followed for a few seconds before this counts as a lost link.
  const s = await waitUntil((st) => st !== 'ready', 500, null, 5000);
  if (s && s.state === 'ended') {
    ended(s.reason);
    return;
  }
  if (s && s.state === 'stopping') {
    showMessage('The session is stopping.');
    const e = await waitUntil((st) => st === 'ended', 1000);
    ended(e && e.reason);
    return;
  }
  if (s && (s.state === 'queued' || s.state === 'starting')) {
    await waitForReady();
    return;
  }
  showMessage(clean ? 'The desktop closed the connection.' : 'The connection to the desktop was lost.', true,
    clean ? 'info' : 'error');
}

// waitForReady holds off connecting until the session is ready, saying
// where it is meanwhile (a batch scheduler's reason and queue position).
async function waitForReady() {
  const say = (s) => {
    setStatus(s.state);
    const where = s.node ? ` on ${s.node}` : '';
    const why = s.reason ? ` (${s.reason})` : '';
    showMessage(`The session is ${s.state}${where}${why}; the desktop appears when it is ready.`);
  };
  say({ state: page.state, reason: page.reason });
  const s = await waitUntil((st) => st === 'ready' || st === 'ended', 1000, say);
  if (s && s.state === 'ended') {
    ended(s.reason);
    return;
  }
  connect();
}

function reconnect() {
  if (page.state === 'ended') return;
  if (rfb) {
    reconnecting = true;
    rfb.disconnect();
  } else {
    connect();
  }
}
ui.reconnect = reconnect;

// ---- toolbar -----------------------------------------------------------------

$('reconnect').addEventListener('click', () => view === 'vnc' && reconnect());

$('ctrl-alt-del')?.addEventListener('click', () => rfb && rfb.sendCtrlAltDel());

const fsBtn = $('fullscreen');
if (!document.fullscreenEnabled) fsBtn.hidden = true;
fsBtn.addEventListener('click', async () => {
  try {
    if (document.fullscreenElement) await document.exitFullscreen();
    else await $('session').requestFullscreen();
  } catch {
    // Refused (an iframe, a phone browser): nothing to undo.
  }
});
document.addEventListener('fullscreenchange', () => {
  fsBtn.textContent = document.fullscreenElement ? 'Exit full screen' : 'Full screen';
});

// ---- clipboard ---------------------------------------------------------------

let lastSent = '';

function sendClipboard() {
  if (!rfb || page.viewOnly || $('clip-send').disabled || clip.value === lastSent) return;
  rfb.clipboardPasteFrom(clip.value);
  lastSent = clip.value;
}
// The panel is not on the page when the profile's clipboard is none.
if (clip) {
  clip.addEventListener('change', sendClipboard);
  $('clip-send').addEventListener('click', sendClipboard);
}

// ---- the RDP view -------------------------------------------------------------

// rdp.js shows the desktop over RDP instead when the session serves it, and
// switches between the two views with this event.
document.addEventListener('airlock:view', (e) => {
  view = e.detail;
  if (e.detail === 'vnc') {
    ui.reconnect = reconnect;
    screen.hidden = false;
    if (!rfb && page.state === 'ready') connect();
  } else {
    screen.hidden = true;
    if (rfb) {
      switching = true;
      rfb.disconnect();
    }
  }
});

// ---- start ---------------------------------------------------------------------

if (view === 'rdp') {
  // rdp.js connects; this view waits for the user to pick it.
} else if (page.state === 'ready') {
  connect();
} else if (page.state === 'queued' || page.state === 'starting') {
  waitForReady();
} else if (page.state === 'stopping') {
  setState('disconnected:stopping');
  showMessage('The session is stopping.');
  waitUntil((st) => st === 'ended', 1000).then((s) => ended(s && s.reason));
}
