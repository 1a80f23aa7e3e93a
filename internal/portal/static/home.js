// The home page: launching a session (and following it from queued to
// ready without a reload), stopping sessions, and API tokens.
import { api, say, localTimes, copyButtons, tickLeft, updateRows, watchRows, followSession } from './api.js';

const $ = (id) => document.getElementById(id);

const stateWords = {
  queued: 'Queued — waiting for a place on a node',
  starting: 'Starting — sealing the session',
  ready: 'Ready — opening it',
  stopping: 'Stopping',
};

// ---- launch form -------------------------------------------------------

const form = $('launch');
const profile = $('profile');
const cpus = $('cpus');
const memory = $('memory');
const lifetime = $('lifetime');
let lastReason = ''; // the followed session's last reason

// setLimit puts a profile's limit on an input; 0 means no limit.
function setLimit(input, max) {
  if (Number(max) > 0) input.max = max;
  else input.removeAttribute('max');
}

// applyProfile fills the form with the selected profile's defaults and
// limits, and says what they are.
function applyProfile() {
  const o = profile.selectedOptions[0];
  if (!o) return;
  const d = o.dataset;
  setLimit(cpus, d.maxCpus);
  setLimit(memory, d.maxMemory);
  setLimit(lifetime, d.maxLifetime);
  cpus.value = d.cpus;
  memory.value = d.memory;
  lifetime.value = d.lifetime;
  $('keep-disk-row').hidden = d.keepDisk !== 'true';
  const desc = $('profile-description');
  desc.textContent = d.description || '';
  desc.hidden = !d.description;
  const parts = [];
  if (Number(d.maxCpus) > 0) parts.push(`up to ${d.maxCpus} CPUs`);
  if (Number(d.maxMemory) > 0) parts.push(`${d.maxMemory} MB of memory`);
  if (Number(d.maxLifetime) > 0) parts.push(`${d.maxLifetime} hours`);
  say($('limits'), parts.length ? `This profile allows ${parts.join(', ')}.` : '');
}

// checkInput returns a message when input is outside its limits.
function checkInput(input, what) {
  const v = Number(input.value);
  if (input.value === '' || Number.isNaN(v)) return `${what}: enter a number`;
  if (input.min !== '' && v < Number(input.min)) return `${what}: at least ${input.min}`;
  if (input.max !== '' && v > Number(input.max)) return `${what}: at most ${input.max} for this profile`;
  return '';
}

async function launch(ev) {
  ev.preventDefault();
  const status = $('launch-status');
  const problem = checkInput(cpus, 'CPUs') || checkInput(memory, 'Memory') || checkInput(lifetime, 'Lifetime');
  if (problem) {
    say(status, problem, 'error');
    return;
  }
  const body = {
    profile: profile.value,
    cpus: Math.round(Number(cpus.value)),
    memory_mb: Math.round(Number(memory.value)),
    lifetime: `${Math.max(1, Math.round(Number(lifetime.value) * 60))}m`,
    persistent: $('persistent').checked,
  };
  if (!$('keep-disk-row').hidden && $('keep-disk').checked) body.keep_disk = true;
  if ($('notify-email') && $('notify-email').checked) body.notify_email = true;
  const btn = $('launch-btn');
  btn.disabled = true;
  say(status, 'Asking the gateway…');
  try {
    const s = await api('POST', '/api/v1/sessions', body);
    await follow(s.id, s.state, status);
  } catch (e) {
    say(status, `Not started: ${e.message || e}`, 'error');
  } finally {
    btn.disabled = false;
  }
}

// follow shows a new session's progress (pushed by the gateway; polled
// every 500 ms only if the push fails) until it is ready (then opens it)
// or ends (then says why).
function follow(id, state, status) {
  say(status, stateWords[state] || state);
  return new Promise((resolve, reject) => {
    followSession(id, (s) => {
      lastReason = s.reason || '';
      if (s.state === 'ready') {
        say(status, stateWords.ready, 'ok');
        location.assign(`/sessions/${encodeURIComponent(id)}`);
        resolve();
        return true;
      }
      if (s.state === 'ended') {
        reject(new Error(lastReason || 'the session ended before it was ready'));
        return true;
      }
      say(status, `${stateWords[s.state] || s.state}${lastReason ? ` (${lastReason})` : ''}`);
      return false;
    }, { onError: reject });
  });
}

if (form) {
  profile.addEventListener('change', applyProfile);
  form.addEventListener('submit', (ev) => { lastReason = ''; launch(ev); });
  applyProfile();
}

// ---- the session list ----------------------------------------------------

const sessions = $('sessions');
const listSessions = async () => (await api('GET', '/api/v1/sessions')).sessions || [];

document.addEventListener('click', async (ev) => {
  const btn = ev.target.closest('[data-stop]');
  if (!btn) return;
  const id = btn.dataset.stop;
  if (!confirm(`Stop session ${id}? Whatever is not saved in it is lost.`)) return;
  btn.disabled = true;
  try {
    const r = await api('DELETE', `/api/v1/sessions/${encodeURIComponent(id)}`);
    updateRows(sessions, [{ id, state: r.state || 'stopping', reason: '' }]);
    say($('sessions-msg'), `Stopping ${id}.`, 'ok');
  } catch (e) {
    btn.disabled = false;
    say($('sessions-msg'), `Could not stop ${id}: ${e.message}`, 'error');
  }
});

tickLeft();
watchRows(sessions, listSessions);

// ---- API tokens ------------------------------------------------------------

const tokens = $('tokens');

function tokenRow(id, name) {
  const tr = document.createElement('tr');
  tr.dataset.id = id;
  const cell = (label) => {
    const td = document.createElement('td');
    if (label) td.dataset.label = label;
    tr.append(td);
    return td;
  };
  const n = cell('Name');
  const code = document.createElement('code');
  code.className = 'id';
  code.textContent = id;
  n.append(`${name} `, code);
  cell('Created').textContent = 'just now';
  cell('Last used').textContent = 'never';
  const act = cell('');
  act.className = 'actions';
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'small danger';
  b.dataset.revokeToken = id;
  b.textContent = 'Revoke';
  act.append(b);
  return tr;
}

$('new-token')?.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = $('token-name').value.trim();
  say($('tokens-msg'), '');
  try {
    const t = await api('POST', '/api/v1/tokens', { name });
    $('token-value').value = t.token;
    $('token-out').hidden = false;
    $('token-value').select();
    tokens.querySelector('tbody').prepend(tokenRow(t.id, name || 'new token'));
    tokens.hidden = false;
    $('no-tokens')?.remove();
    $('token-name').value = '';
  } catch (e) {
    say($('tokens-msg'), `No token made: ${e.message}`, 'error');
  }
});

tokens?.addEventListener('click', async (ev) => {
  const btn = ev.target.closest('[data-revoke-token]');
  if (!btn) return;
  const id = btn.dataset.revokeToken;
  if (!confirm(`Revoke token ${id}? Scripts using it stop working.`)) return;
  btn.disabled = true;
  try {
    await api('DELETE', `/api/v1/tokens/${encodeURIComponent(id)}`);
    btn.closest('tr').remove();
  } catch (e) {
    btn.disabled = false;
    say($('tokens-msg'), `Could not revoke ${id}: ${e.message}`, 'error');
  }
});

copyButtons();
localTimes();
