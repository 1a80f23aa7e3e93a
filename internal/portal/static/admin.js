// The admin page: every session with its owner and node, stopping one or
// all of them, and the node's load and free memory kept up to date.
import { api, say, tickLeft, updateRows, watchRows } from './api.js';

const $ = (id) => document.getElementById(id);
const table = $('sessions');
const msg = $('sessions-msg');

// list fetches every session and, on the way, refreshes the node figures.
async function list() {
  const r = await api('GET', '/api/v1/admin/sessions');
  if (r.node) {
    const load = Number(r.node.load_per_cpu);
    if (!Number.isNaN(load)) {
      $('load').textContent = load.toFixed(2);
      $('load').classList.toggle('hot', load >= 1);
    }
    if (r.node.free_memory_mb !== undefined) {
      $('free-mem').textContent = `${r.node.free_memory_mb} MB`;
    }
  }
  return (r.sessions || []).map((x) => x.session);
}

document.addEventListener('click', async (ev) => {
  const btn = ev.target.closest('[data-stop]');
  if (!btn) return;
  const id = btn.dataset.stop;
  const owner = btn.closest('tr').querySelector('[data-label=Owner]').textContent;
  if (!confirm(`Stop ${owner}'s session ${id}? Whatever is not saved in it is lost.`)) return;
  btn.disabled = true;
  try {
    const r = await api('DELETE', `/api/v1/sessions/${encodeURIComponent(id)}`);
    updateRows(table, [{ id, state: r.state || 'stopping', reason: '' }]);
    say(msg, `Stopping ${id}.`, 'ok');
  } catch (e) {
    btn.disabled = false;
    say(msg, `Could not stop ${id}: ${e.message}`, 'error');
  }
});

$('stop-all').addEventListener('click', async (ev) => {
  if (!confirm('Stop every running session on this gateway? Their users lose what is not saved.')) return;
  const btn = ev.currentTarget;
  btn.disabled = true;
  try {
    const r = await api('POST', '/api/v1/admin/stop-all');
    const failed = r.failed || [];
    if (failed.length > 0) {
      const which = failed.map((f) => `${f.session} (${f.error.message})`).join(', ');
      say(msg, `Stopping ${r.stopping} session${r.stopping === 1 ? '' : 's'}; could not stop ${which}.`, 'error');
    } else {
      say(msg, `Stopping ${r.stopping} session${r.stopping === 1 ? '' : 's'}.`, 'ok');
    }
    updateRows(table, await list());
  } catch (e) {
    say(msg, `Could not stop them: ${e.message}`, 'error');
  } finally {
    btn.disabled = false;
  }
});

tickLeft();
watchRows(table, list);
