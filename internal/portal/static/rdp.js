// The desktop over RDP, in the page: the IronRDP web client (WebAssembly,
// from npm, embedded by scripts/build-web.sh) talking RDCleanPath to the
// gateway's /rdp/{id} WebSocket with a one-time ticket from the API. The
// ticket travels in the RDCleanPath request, never in a URL. It is the
// default view of a desktop that serves RDP (xrdp, TLS only); "Console
// (VNC)" switches to noVNC (desktop.js) and back. A VM's guest wants NLA:
// there the console is the default, and "Desktop (RDP)" first asks for the
// guest's user name and password, which stay in this page's memory and go
// to the guest inside CredSSP (the gateway never sees them).
//
// window.airlockRDPState, for tests and for reading in the console:
//   'connecting' | 'connected' | 'failed:WORDS' | 'closed:REASON' | 'off'
// and window.airlockRDPDetail, after a failure: IronRDP's kind and backtrace.
import './vendor/ironrdp/iron-remote-desktop.js';
import { Backend, init, enableCredssp, displayControl } from './vendor/ironrdp/iron-remote-desktop-rdp.js';
import { api } from './api.js';
import { page, ui, setStatus, showMessage, clearMessage, ended, waitUntil } from './session.js';

const $ = (id) => document.getElementById(id);
const root = $('session');
const holder = $('rdp-screen');
const credssp = root.dataset.rdpCredssp === 'true';
// With the profile's clipboard none the client does not ask for the
// clipboard channel at all (the gateway would take it out anyway, and
// IronRDP fails a session whose channel never opens once the page's
// clipboard changes). One way (in, out) is the gateway's to enforce.
const clipboard = root.dataset.rdpClipboard !== 'off';
// A desktop's Xvnc has a fixed size, which xrdp serves whatever the client
// asks for: ask for that size. A VM's guest follows the window.
const fixed = /^(\d+)x(\d+)$/.exec(root.dataset.rdpSize || '');

let irgUI = null; // the web component's UserInteraction, once it is ready
// A session with a generated password (a shadow desktop, a VM image with
// rdp_password: generate) names its account and password in the page
// (never in a URL): the client logs on with them inside CredSSP, so the
// owner types neither, and the gateway relays them only encrypted.
const logon = root.dataset.rdpUser && root.dataset.rdpPassword
  ? { user: root.dataset.rdpUser, password: root.dataset.rdpPassword } : null;
let creds = credssp ? logon : { user: 'airlock', password: 'airlock' }; // see connect
let active = false; // a session is open or opening
let generation = 0; // bumps on every connect, so a stale end is ignored
let clipRetries = 0; // reconnects after IronRDP's clipboard start-up race (see connect)

function setState(s) {
  window.airlockRDPState = s;
}

// component adds the <iron-remote-desktop> element once and resolves with
// its UserInteraction.
let wasm = null; // the WebAssembly module's start, once
async function component() {
  if (irgUI) return irgUI;
  wasm = wasm || init('WARN');
  await wasm;
  return new Promise((resolve) => {
    const el = document.createElement('iron-remote-desktop');
    el.setAttribute('scale', 'fit');
    el.setAttribute('flexcenter', 'true');
    el.setAttribute('verbose', 'false');
    el.addEventListener('ready', (e) => {
      irgUI = e.detail.irgUserInteraction;
      clipboardSettled().then(() => resolve(irgUI));
    }, { once: true });
    el.module = Backend;
    holder.appendChild(el);
  });
}

// clipboardSettled waits for the component's clipboard set-up, which it
// starts only after its ready event (an asynchronous permission check,
// then its clipboard callbacks): a session built before that has no
// clipboard channel at all (seen in CI under load: the client asked for
// no cliprdr). Its check is asked first, so ours is answered after it.
async function clipboardSettled() {
  const turn = () => new Promise((r) => setTimeout(r, 0));
  await turn(); // its set-up has begun
  try {
    await navigator.permissions.query({ name: 'clipboard-read' });
  } catch {
    // No such permission here: the component has no clipboard to set up.
  }
  await turn(); // and has set its callbacks
}

// words says why a connection failed, from what IronRDP reports: the
// gateway's RDCleanPath error (an HTTP status, a socket error, a TLS
// alert) or the server's own refusal.
export function words(err) {
  if (!err || typeof err.kind !== 'function') return `the RDP client failed: ${err}`;
  const d = err.rdcleanpathDetails && err.rdcleanpathDetails();
  if (d) {
    switch (d.httpStatusCode) {
      case 400: return 'the gateway could not read the RDP client\'s request';
      case 401: return 'the gateway did not accept this page\'s ticket; reload the page';
      case 403: return 'you may not open this session\'s desktop';
      case 404: return 'this session does not exist or serves no RDP';
      case 409: return 'the session is not running';
      case 502: return 'the desktop\'s RDP server gave an answer the gateway cannot use';
      case 503: return 'the gateway is busy; try again in a moment';
      default:
    }
    if (d.httpStatusCode) return `the gateway refused the connection (HTTP ${d.httpStatusCode})`;
    if (d.wsaErrorCode === 10061) return 'the desktop\'s RDP server is not running (connection refused)';
    if (d.wsaErrorCode === 10060) return 'the desktop\'s RDP server did not answer in time';
    if (d.wsaErrorCode) return `the gateway could not reach the desktop (socket error ${d.wsaErrorCode})`;
    if (d.tlsAlertCode) return `the desktop's RDP server ended the secure connection (TLS alert ${d.tlsAlertCode})`;
  }
  switch (err.kind()) {
    case 1: return 'the user name or password was wrong';
    case 2: return 'the desktop refused the logon';
    case 3: return 'the desktop denied access';
    case 5: return 'the page could not reach the gateway';
    case 6: return 'the desktop refused the connection\'s security settings (it may require NLA, or not support it)';
    default: return 'the RDP connection failed';
  }
}

// detail is IronRDP's own account of a failure (its kind and backtrace),
// for the console and tests; it names no credential.
function detail(err) {
  try {
    return err instanceof Error ? String(err.stack || err) : `kind ${err.kind()}: ${err.backtrace()}`;
  } catch {
    return String(err);
  }
}

// closedInLogon words a server that hung up while the connection was
// being set up with NLA: FreeRDP's shadow server refuses a wrong user
// name or password by closing the connection inside CredSSP, with no
// error code, which IronRDP reports only as a frame cut short: "not
// enough bytes", or the WebSocket's close (the gateway's, once the server
// hung up) when that comes first.
function closedInLogon(err) {
  if (!err || typeof err.kind !== 'function' || err.kind() !== 0) return '';
  let bt = '';
  try { bt = String(err.backtrace()); } catch { return ''; }
  if (!/not enough bytes|unexpected end|connection reset|WebSocket Closed/i.test(bt)) return '';
  return 'the desktop\'s RDP server refused the logon and closed the connection (the user name or password was wrong, or the account may not log on)';
}

// askCredentials shows a small form in the RDP view for NLA's user name
// and password, and connects with them.
function askCredentials() {
  if ($('rdp-login')) return;
  const form = document.createElement('form');
  form.id = 'rdp-login';
  form.className = 'card inline-form';
  const field = (label, name, type) => {
    const l = document.createElement('label');
    l.textContent = label;
    const i = document.createElement('input');
    i.name = name;
    i.type = type;
    i.autocomplete = type === 'password' ? 'current-password' : 'username';
    l.appendChild(i);
    form.appendChild(l);
    return i;
  };
  const user = field('User name', 'user', 'text');
  if (logon) user.value = logon.user;
  const pass = field('Password', 'password', 'password');
  const go = document.createElement('button');
  go.type = 'submit';
  go.className = 'primary';
  go.textContent = 'Connect';
  form.appendChild(go);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    creds = { user: user.value, password: pass.value };
    form.remove();
    connect();
  });
  holder.appendChild(form);
  (logon ? pass : user).focus();
}

async function connect() {
  if (!creds) {
    askCredentials();
    return;
  }
  if (active) return;
  active = true;
  const gen = ++generation;
  clearMessage();
  setState('connecting');
  setStatus('connecting', 'busy');
  try {
    const rdp = await component();
    rdp.setEnableClipboard(clipboard);
    const t = await api('POST', `/api/v1/sessions/${page.id}/rdp-ticket`);
    const size = fixed ? { width: Number(fixed[1]), height: Number(fixed[2]) }
      : { width: Math.max(640, holder.clientWidth & ~1), height: Math.max(480, holder.clientHeight & ~1) };
    const cfg = rdp.configBuilder()
      // A user name and a (any) password make the client ask for an
      // automatic logon, which xrdp's autorun needs to skip its login
      // dialog; xrdp checks no password (the seal's Xvnc is its only
      // target). A Windows guest's own logon is NLA's business.
      .withUsername(creds.user)
      .withPassword(creds.password)
      .withDestination(t.destination)
      .withProxyAddress(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${t.path}`)
      .withAuthToken(t.ticket)
      .withDesktopSize(size)
      .withExtension(enableCredssp(credssp))
      .withExtension(displayControl(true))
      .build();
    const info = await rdp.connect(cfg);
    if (gen !== generation) return;
    rdp.setVisibility(true);
    setState('connected');
    setStatus('connected', 'ok');
    const started = Date.now();
    info.run().then((term) => closed(gen, term && term.reason()), (e) => {
      // The client's own account of a failure, for the console.
      const trace = e && typeof e.backtrace === 'function' ? e.backtrace() : '';
      if (trace) console.warn(`RDP session ended: ${trace}`);
      // IronRDP 0.7.0 answers the server's clipboard Monitor Ready by
      // offering the page's clipboard before its own channel is ready
      // (it waits for the server's Format List Response), and then ends
      // the session. That is a race of the first seconds only: connect
      // again, a few times at most.
      if (gen === generation && trace.includes('clipboard channel is not in Ready state') &&
          Date.now() - started < 15000 && clipRetries < 3) {
        clipRetries++;
        active = false;
        connect();
        return;
      }
      closed(gen, words(e));
    });
  } catch (e) {
    if (gen !== generation) return;
    active = false;
    const why = e instanceof Error ? e.message : (credssp && closedInLogon(e)) || words(e);
    window.airlockRDPDetail = detail(e);
    setState(`failed:${why}`);
    setStatus('refused', 'bad');
    if (credssp) creds = null; // ask again: the password may have been wrong
    showMessage(`The desktop could not be opened over RDP: ${why}.`, true, 'error');
  }
}

async function closed(gen, reason) {
  if (gen !== generation) return;
  active = false;
  setState(`closed:${reason || ''}`);
  setStatus('disconnected', 'bad');
  if (ui.stopRequested) return;
  const s = await waitUntil((st) => st !== 'ready', 500, null, 3000);
  if (s && s.state === 'ended') {
    ended(s.reason);
    return;
  }
  showMessage(`The RDP connection closed${reason ? `: ${reason}` : ''}.`, true, 'info');
}

function disconnect() {
  generation++;
  if (active && irgUI) irgUI.shutdown();
  active = false;
  setState('off');
}

// ---- views -------------------------------------------------------------------

function show(view) {
  $('view-rdp').setAttribute('aria-pressed', String(view === 'rdp'));
  $('view-vnc')?.setAttribute('aria-pressed', String(view === 'vnc'));
  holder.hidden = view !== 'rdp';
  if (view === 'rdp') {
    ui.reconnect = () => { disconnect(); connect(); };
    document.dispatchEvent(new CustomEvent('airlock:view', { detail: 'rdp' }));
    connect();
  } else {
    disconnect();
    document.dispatchEvent(new CustomEvent('airlock:view', { detail: 'vnc' }));
  }
}

$('view-rdp').addEventListener('click', () => show('rdp'));
$('view-vnc')?.addEventListener('click', () => show('vnc'));
$('ctrl-alt-del')?.addEventListener('click', () => {
  if (active && irgUI) irgUI.ctrlAltDel();
});
$('reconnect')?.addEventListener('click', () => {
  if (!holder.hidden) ui.reconnect();
});

// Resize the remote desktop to the window (the DisplayControl channel),
// once the window stops changing.
let resizeTimer = 0;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    if (active && irgUI && !holder.hidden && !fixed) irgUI.resize(holder.clientWidth & ~1, holder.clientHeight & ~1);
  }, 300);
});

// ---- start ---------------------------------------------------------------------

async function start() {
  if (root.dataset.view !== 'rdp') return; // the console is the default
  ui.reconnect = () => { disconnect(); connect(); };
  if (page.state === 'ready') {
    connect();
    return;
  }
  if (page.state === 'queued' || page.state === 'starting') {
    const s = await waitUntil((st) => st === 'ready' || st === 'ended', 1000);
    if (s && s.state === 'ended') {
      ended(s.reason);
      return;
    }
    connect();
  }
}
start();
