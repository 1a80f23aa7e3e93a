// The recordings page's player: noVNC's own RFB client, view only, on the
// gateway's replay WebSocket, which plays the recorded server stream paced
// by its timestamps (at a speed, from a point: the blocks before it are
// sent at once so the screen is whole). An RDP recording plays in IronRDP
// instead (replay-rdp.js, loaded when one is played).
import RFB from '/static/vendor/novnc/core/rfb.js';
import { api } from './api.js';

const $ = (id) => document.getElementById(id);
let rfb = null;
let current = null;
let kind = 'vnc';
let channels = [];
let rdpPlayer = null; // replay-rdp.js, once an RDP recording was played
// The viewer's pointer track ({ms, x, y, buttons}, in order), drawn over
// the replayed screen: the server's stream has no pointer (viewers draw
// their own), so the recording keeps it beside.
let track = [];
let trackOf = null;
let frame = 0;

async function loadTrack(id) {
  if (trackOf === id) return;
  try {
    track = (await api('GET', `/api/v1/admin/recordings/${id}/pointer`)).events || [];
  } catch {
    track = []; // a recording from before pointer tracks: no pointer
  }
  trackOf = id;
}

// pointerAt is the last pointer event at or before ms, or null.
function pointerAt(ms) {
  let lo = 0, hi = track.length; // first event after ms
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (track[mid].ms <= ms) lo = mid + 1; else hi = mid;
  }
  return lo > 0 ? track[lo - 1] : null;
}

// drawPointer puts the pointer mark over canvas at event e (framebuffer
// pixels, scaled as noVNC scales the canvas), or hides it.
function drawPointer(canvas, e) {
  const mark = $('replay-pointer');
  if (!mark) return;
  if (!canvas || !e || !canvas.width) {
    mark.hidden = true;
    return;
  }
  const box = canvas.getBoundingClientRect();
  const holder = $('replay-screen').getBoundingClientRect();
  const x = box.left - holder.left + (e.x * box.width) / canvas.width;
  const y = box.top - holder.top + (e.y * box.height) / canvas.height;
  mark.style.transform = `translate(${x}px, ${y}px)`;
  mark.classList.toggle('down', e.buttons !== 0);
  mark.hidden = false;
  window.airlockReplayPointer = { x: e.x, y: e.y, buttons: e.buttons, ms: e.ms };
}

async function playRDP() {
  const screen = $('replay-screen');
  if ($('player').dataset.ironrdp !== 'true') {
    const p = document.createElement('p');
    p.id = 'replay-error';
    p.className = 'error';
    p.textContent = 'This is an RDP recording, and the IronRDP web client was not built into this gateway (run make web): download it instead.';
    screen.replaceChildren(p);
    window.airlockReplay = 'failed:no IronRDP';
    return;
  }
  rdpPlayer = rdpPlayer || await import('./replay-rdp.js');
  rdpPlayer.play(screen, current, Number($('speed').value), Number($('seek').value), channels);
}

async function play() {
  if (!current) return;
  if (rfb) rfb.disconnect();
  rfb = null;
  if (rdpPlayer) rdpPlayer.stop();
  cancelAnimationFrame(frame);
  if (kind === 'rdp') {
    playRDP();
    return;
  }
  const id = current;
  await loadTrack(id);
  if (id !== current) return;
  const screen = $('replay-screen');
  const mark = document.createElement('div');
  mark.id = 'replay-pointer';
  mark.className = 'replay-pointer';
  mark.hidden = true;
  mark.setAttribute('aria-hidden', 'true');
  screen.replaceChildren(mark);
  window.airlockReplayPointer = null;
  const speed = Number($('speed').value), from = Number($('seek').value);
  const q = new URLSearchParams({ speed, from });
  const url = `wss://${location.host}/api/v1/admin/recordings/${current}/replay?${q}`;
  const r = new RFB(screen, url);
  r.viewOnly = true;
  r.scaleViewport = true;
  // State for whoever watches the page (the browser test): only the
  // current player's, not one just replaced.
  window.airlockReplay = 'connecting';
  let canvas = null;
  r.addEventListener('connect', () => {
    canvas = screen.querySelector('canvas');
    if (rfb !== r) return;
    window.airlockReplay = 'playing';
    // The gateway paces the blocks from the connection on: the
    // recording's time is from + elapsed × speed, near enough for a
    // pointer.
    const t0 = performance.now();
    const tick = () => {
      if (rfb !== r) return;
      drawPointer(canvas, pointerAt(from + (performance.now() - t0) * speed));
      frame = requestAnimationFrame(tick);
    };
    tick();
  });
  r.addEventListener('disconnect', () => {
    if (rfb !== r) return;
    cancelAnimationFrame(frame);
    // noVNC takes its screen away when the stream ends; the last frame
    // of the recording stays on show, with the pointer where it ended.
    if (canvas && !canvas.isConnected) screen.append(canvas);
    drawPointer(canvas, track.length ? track[track.length - 1] : null);
    window.airlockReplay = 'ended';
  });
  rfb = r;
}

document.addEventListener('click', (ev) => {
  const btn = ev.target.closest('[data-play]');
  if (!btn) return;
  current = btn.dataset.play;
  kind = btn.dataset.kind || 'vnc';
  channels = (btn.dataset.channels || '').split(',').filter(Boolean);
  $('player').hidden = false;
  $('player-h').textContent = `Replay ${current}`;
  $('seek').max = btn.dataset.length;
  $('seek').value = 0;
  $('position').textContent = '0 s';
  play();
});
$('seek').addEventListener('input', () => { $('position').textContent = `${($('seek').value / 1000).toFixed(1)} s`; });
$('restart').addEventListener('click', play);
$('speed').addEventListener('change', play);
