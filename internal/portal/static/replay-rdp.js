// The recordings page's player for RDP recordings: the same IronRDP web
// client as the session page (rdp.js), connected to the gateway's replay
// WebSocket, which answers its RDCleanPath request as the live gateway did
// (the recorded X.224 Confirm, TLS chosen, and certificate chain) and then
// plays the server's recorded stream, paced; what the client sends back is
// dropped there. The client must ask for the channels the recorded one
// asked for, in the same order, or the recorded channel ids would not
// match its own: the clipboard channel is asked for exactly when the
// recording's list has it.
//
// window.airlockReplay, for tests: 'connecting' | 'playing' | 'ended' |
// 'failed:WORDS'.
import './vendor/ironrdp/iron-remote-desktop.js';
import { Backend, init, enableCredssp, displayControl } from './vendor/ironrdp/iron-remote-desktop-rdp.js';

let wasm = null;
let el = null;
let ui = null;
let generation = 0;

async function component(screen) {
  if (ui) {
    if (!el.isConnected) screen.replaceChildren(el);
    return ui;
  }
  wasm = wasm || init('WARN');
  await wasm;
  return new Promise((resolve) => {
    el = document.createElement('iron-remote-desktop');
    el.setAttribute('scale', 'fit');
    el.setAttribute('flexcenter', 'true');
    el.setAttribute('verbose', 'false');
    el.addEventListener('ready', (e) => {
      ui = e.detail.irgUserInteraction;
      clipboardSettled().then(() => resolve(ui));
    }, { once: true });
    el.module = Backend;
    screen.replaceChildren(el);
  });
}

// clipboardSettled waits for the component's clipboard set-up, which it
// starts after its ready event (as rdp.js does): a client connected before
// it asks for no clipboard channel, and the recorded server's ids for the
// channels after it would not be the client's.
async function clipboardSettled() {
  const turn = () => new Promise((r) => setTimeout(r, 0));
  await turn();
  try {
    await navigator.permissions.query({ name: 'clipboard-read' });
  } catch {
    // No such permission here: nothing to set up.
  }
  await turn();
}

// stop ends the replay on show, if any.
export function stop() {
  generation++;
  if (ui) {
    try { ui.shutdown(); } catch { /* not connected */ }
  }
}

// play replays recording id (SESSION/NAME) in screen from ms from at
// speed; channels are the recorded client's static channels.
export async function play(screen, id, speed, from, channels) {
  stop();
  const gen = generation;
  window.airlockReplay = 'connecting';
  try {
    const rdp = await component(screen);
    if (gen !== generation) return;
    rdp.setEnableClipboard(channels.includes('cliprdr'));
    const q = new URLSearchParams({ speed, from });
    const cfg = rdp.configBuilder()
      // Nothing here is checked: the replay endpoint answers as the
      // recorded server did, whoever this client says it is.
      .withUsername('replay')
      .withPassword('replay')
      .withDestination('replay')
      .withProxyAddress(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/v1/admin/recordings/${id}/replay?${q}`)
      .withAuthToken('replay')
      .withDesktopSize({ width: 1024, height: 768 })
      .withExtension(enableCredssp(false))
      .withExtension(displayControl(channels.includes('drdynvc')))
      .build();
    const info = await rdp.connect(cfg);
    if (gen !== generation) return;
    rdp.setVisibility(true);
    window.airlockReplay = 'playing';
    info.run().then(() => {
      if (gen === generation) window.airlockReplay = 'ended';
    }, (e) => {
      if (gen !== generation) return;
      const trace = e && typeof e.backtrace === 'function' ? e.backtrace() : String(e);
      console.warn(`RDP replay ended: ${trace}`);
      window.airlockReplay = 'ended';
    });
  } catch (e) {
    if (gen !== generation) return;
    let why = String(e);
    try { why = typeof e.backtrace === 'function' ? `kind ${e.kind()}: ${e.backtrace()}` : why; } catch { /* as is */ }
    window.airlockReplay = `failed:${why}`;
    const p = document.createElement('p');
    p.className = 'error';
    p.id = 'replay-error';
    p.textContent = `The RDP recording could not be replayed: ${why}`;
    screen.append(p);
  }
}
