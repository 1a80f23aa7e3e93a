// The recordings page's player: noVNC's own RFB client, view only, on the
// gateway's replay WebSocket, which plays the recorded server stream paced
// by its timestamps (at a speed, from a point: the blocks before it are
// sent at once so the screen is whole).
import RFB from '/static/vendor/novnc/core/rfb.js';

const $ = (id) => document.getElementById(id);
let rfb = null;
let current = null;

function play() {
  if (!current) return;
  if (rfb) rfb.disconnect();
  const screen = $('replay-screen');
  screen.replaceChildren();
  const q = new URLSearchParams({ speed: $('speed').value, from: $('seek').value });
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
    if (rfb === r) window.airlockReplay = 'playing';
  });
  r.addEventListener('disconnect', () => {
    if (rfb !== r) return;
    // noVNC takes its screen away when the stream ends; the last frame
    // of the recording stays on show.
    if (canvas && !canvas.isConnected) screen.append(canvas);
    window.airlockReplay = 'ended';
  });
  rfb = r;
}

document.addEventListener('click', (ev) => {
  const btn = ev.target.closest('[data-play]');
  if (!btn) return;
  current = btn.dataset.play;
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
