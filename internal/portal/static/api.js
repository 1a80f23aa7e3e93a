// Helpers shared by the portal's pages: calls to the gateway's JSON API,
// durations and times for people, and the bits of table upkeep the
// session lists share. Pages get their data from data-* attributes; the
// Content-Security-Policy allows no inline script.

// APIError is a refused or failed API call, with the gateway's message
// (error bodies are {"error": {"code": ..., "message": ...}}).
export class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// api calls the gateway with the login cookie and returns the decoded JSON
// body (null for an empty one). body, when given, is sent as JSON: the API
// refuses form encodings.
export async function api(method, path, body) {
  const init = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new APIError(0, 'network', 'the gateway could not be reached; check your connection');
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const e = data && data.error;
    throw new APIError(res.status, (e && e.code) || `http_${res.status}`,
      (e && e.message) || `the gateway answered ${res.status} ${res.statusText}`.trim());
  }
  return data;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// followSession calls onState(s) with session id as GET
// /api/v1/sessions/{id} shows it: at once, then on every change, until
// onState returns true or the returned stop() is called. The gateway
// pushes the changes as server-sent events; only when that stream fails
// (an old gateway, a proxy that buffers, a dropped connection) does this
// fall back to asking every pollMs (a number, or a function giving one).
// A refused poll, or the gateway unreachable for ten polls in a row, ends
// the following with onError(e). window.airlockFollow says which way it
// follows ('events' or 'poll'), for tests and curious people.
//
// The stream is closed while the tab is hidden and opened again (its
// first event is the state then) when it is shown: a browser keeps at most
// six HTTP/1.1 connections to a host, and a stream holds one for as long
// as it is open, so a dozen background tabs must not hold them all.
export function followSession(id, onState, { pollMs = 500, onError = null } = {}) {
  const path = `/api/v1/sessions/${encodeURIComponent(id)}`;
  let stopped = false;
  let polling = false;
  let es = null;
  const close = () => {
    if (es) es.close();
    es = null;
  };
  const onVisibility = () => {
    if (document.hidden) close();
    else open(); // defined below; runs only after it is
  };
  const stop = () => {
    stopped = true;
    close();
    document.removeEventListener('visibilitychange', onVisibility);
  };
  const deliver = (s) => {
    if (!stopped && onState(s) === true) stop();
  };
  const poll = async () => {
    polling = true;
    close();
    window.airlockFollow = 'poll';
    let failures = 0;
    while (!stopped) {
      try {
        const s = await api('GET', path);
        failures = 0;
        deliver(s);
      } catch (e) {
        // A blip is retried; a refusal (or a gateway gone for long) is not.
        if (e.status !== 0 || ++failures > 10) {
          if (!stopped && onError) onError(e);
          stop();
          return;
        }
      }
      if (!stopped) await sleep(typeof pollMs === 'function' ? pollMs() : pollMs);
    }
  };
  const open = () => {
    if (stopped || polling || es) return;
    window.airlockFollow = 'events';
    es = new EventSource(`${path}/events`);
    es.addEventListener('state', (ev) => {
      let s;
      try {
        s = JSON.parse(ev.data);
      } catch {
        return;
      }
      deliver(s);
    });
    es.onerror = () => {
      // The stream was refused, dropped, or closed before the caller was
      // done (the right it was opened by ran out): ask by polling instead.
      if (!stopped) poll();
    };
  };
  if (typeof EventSource !== 'function') {
    poll();
    return stop;
  }
  document.addEventListener('visibilitychange', onVisibility);
  if (!document.hidden) open();
  return stop;
}

// short formats a duration in milliseconds as portal.go's short does.
export function short(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const m = Math.floor(s / 60);
  const h = Math.floor(m / 60);
  if (s < 60) return `${s}s`;
  if (m < 60) return `${m}m`;
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

// clock formats a short countdown as m:ss.
export function clock(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

// timeLeft is what a "time left" cell says for an RFC 3339 end time.
export function timeLeft(iso) {
  if (!iso) return '—';
  const ms = Date.parse(iso) - Date.now();
  return ms > 0 ? short(ms) : 'over';
}

const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

// localTime formats an RFC 3339 time in the viewer's own time zone.
export function localTime(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? '' : timeFormat.format(new Date(t));
}

// localTimes rewrites time.when elements (rendered in UTC) in the
// viewer's own time zone; the UTC text stays in the title.
export function localTimes(root = document) {
  for (const el of root.querySelectorAll('time.when[datetime]')) {
    const local = localTime(el.getAttribute('datetime'));
    if (local) {
      if (!el.title) el.title = el.textContent;
      el.textContent = local;
    }
  }
}

// say shows text in el (or hides el when text is empty); kind picks the
// look: '' (plain), 'ok', 'error'.
export function say(el, text, kind = '') {
  if (!el) return;
  el.textContent = text || '';
  el.hidden = !text;
  el.classList.toggle('error', kind === 'error');
  el.classList.toggle('ok', kind === 'ok');
}

// copyButtons wires [data-copy="inputID"] buttons to copy that input.
export function copyButtons(root = document) {
  root.addEventListener('click', async (ev) => {
    const btn = ev.target.closest('[data-copy]');
    if (!btn) return;
    const input = document.getElementById(btn.dataset.copy);
    if (!input) return;
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
    } catch {
      document.execCommand('copy');
    }
    const label = btn.textContent;
    btn.textContent = 'Copied';
    setTimeout(() => { btn.textContent = label; }, 1500);
  });
}

// active reports whether a session in state may still be opened or stopped.
export const active = (state) => state === 'queued' || state === 'starting' || state === 'ready';

// updateRows brings a session table (rows tr[data-id]) up to date with
// sessions from the API: state, reason, time left, and drops the Open and
// Stop actions of sessions that are no longer active.
export function updateRows(table, sessions) {
  if (!table) return;
  const byID = new Map(sessions.map((s) => [s.id, s]));
  for (const tr of table.querySelectorAll('tbody tr[data-id]')) {
    const s = byID.get(tr.dataset.id);
    if (!s) continue;
    tr.dataset.state = s.state;
    const st = tr.querySelector('[data-role=state]');
    if (st) {
      st.textContent = s.state;
      st.className = `state state-${s.state}`;
    }
    const reason = tr.querySelector('[data-role=reason]');
    if (reason) reason.textContent = s.reason || '';
    const left = tr.querySelector('[data-role=left]');
    if (left) left.dataset.ends = s.ends || '';
    if (!active(s.state)) {
      for (const a of tr.querySelectorAll('.actions > *')) a.remove();
    }
  }
  tickLeft(table);
}

// tickLeft refreshes the "time left" cells under root.
export function tickLeft(root = document) {
  for (const el of root.querySelectorAll('[data-role=left]')) {
    el.textContent = timeLeft(el.dataset.ends);
  }
}

// watchRows keeps a session table fresh while the tab is visible and any
// of its sessions is still active: list() returns the API's sessions.
export function watchRows(table, list, everyMs = 5000) {
  if (!table) return;
  const anyActive = () => [...table.querySelectorAll('tbody tr[data-id]')].some((tr) => active(tr.dataset.state));
  const loop = async () => {
    for (;;) {
      await sleep(everyMs);
      if (document.hidden || !anyActive()) {
        tickLeft(table);
        continue;
      }
      try {
        updateRows(table, await list());
      } catch {
        // A failed refresh is not worth an alert; the next one may work.
      }
    }
  };
  loop();
}
