// The room inspector of aiolivekit serve: rooms, participants and tracks with the server's
// counters, live from /inspect/events (server-sent events); actions through the Twirp
// RoomService (mute a track, remove a participant, send data) with an admin token.
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const TWIRP = '/twirp/livekit.RoomService/';
  let source = null;
  let open = false; // the feed needs no token (dev mode): admin tokens come from /dev/token
  const adminTokens = new Map();

  const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const kbps = (bps) => (bps / 1000).toFixed(1);

  function setStatus(text, state) {
    $('status').textContent = text;
    if (state) document.body.dataset.state = state;
  }

  async function start() {
    const token = $('admin-token').value.trim();
    const q = new URLSearchParams();
    const room = $('room-filter').value.trim();
    if (room) q.set('room', room);
    if (token) q.set('access_token', token);
    source?.close();
    let res;
    try {
      res = await fetch(`/inspect/state?${q}`);
    } catch (e) {
      setStatus(`server unreachable: ${e}`, 'error');
      return;
    }
    if (res.status === 401 || res.status === 403) {
      $('token-label').hidden = false;
      const body = await res.json().catch(() => ({}));
      setStatus(`a token is needed: ${body.error ?? res.status}`, 'token');
      return;
    }
    open = !token;
    render(await res.json());
    source = new EventSource(`/inspect/events?${q}`);
    source.onopen = () => setStatus('live', 'live');
    source.onmessage = (ev) => render(JSON.parse(ev.data));
    source.onerror = () => setStatus('feed interrupted, retrying...', 'retrying');
  }

  // ---- actions (Twirp) -----------------------------------------------------------------
  async function actionToken(room) {
    const given = $('admin-token').value.trim();
    if (given || !open) return given;
    if (!adminTokens.has(room)) {
      const res = await fetch('/dev/token', {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ room, admin: true }),
      });
      const body = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(body.error ?? `token endpoint answered ${res.status}`);
      adminTokens.set(room, body.token);
    }
    return adminTokens.get(room);
  }

  async function twirp(method, body) {
    const out = $('action-result');
    try {
      const token = await actionToken(body.room);
      const res = await fetch(TWIRP + method, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
      });
      const text = await res.text();
      out.textContent = `${method}: ${res.ok ? 'ok' : `${res.status} ${text}`}`;
      out.dataset.result = res.ok ? 'ok' : 'error';
    } catch (e) {
      out.textContent = `${method}: ${e?.message ?? e}`;
      out.dataset.result = 'error';
    }
  }

  function utf8Base64(text) {
    let s = '';
    for (const b of new TextEncoder().encode(text)) s += String.fromCharCode(b);
    return btoa(s);
  }

  document.addEventListener('click', (ev) => {
    const b = ev.target.closest('button[data-action]');
    if (!b) return;
    const { action, room, identity, trackSid, muted } = b.dataset;
    if (action === 'mute') twirp('MutePublishedTrack', { room, identity, track_sid: trackSid, muted: muted !== 'true' });
    if (action === 'remove') twirp('RemoveParticipant', { room, identity });
  });

  document.addEventListener('submit', (ev) => {
    const form = ev.target.closest('form.send-data');
    if (!form) return;
    ev.preventDefault();
    const text = form.querySelector('.data-text').value;
    const topic = form.querySelector('.data-topic').value.trim();
    twirp('SendData', { room: form.dataset.room, data: utf8Base64(text), kind: 'RELIABLE', topic: topic || undefined });
  });

  // ---- rendering -----------------------------------------------------------------------
  function section(name) {
    let el = document.querySelector(`section.room[data-room="${CSS.escape(name)}"]`);
    if (!el) {
      el = document.createElement('section');
      el.className = 'room';
      el.dataset.room = name;
      el.innerHTML = '<h2></h2><div class="body"></div>'
        + `<form class="send-data" data-room="${esc(name)}">send data to everyone:
           <input class="data-topic" placeholder="topic" size="10">
           <input class="data-text" placeholder="text" required>
           <button type="submit">send</button></form>`;
      $('rooms').append(el);
    }
    return el;
  }

  function trackRow(room, p, t) {
    const res = t.width ? `${t.width}x${t.height}` : '';
    const subs = (t.subscribers ?? []).map((s) => `${esc(s.identity || s.sid)}: ${kbps(s.bitrate)} kbit/s, `
      + `${s.packets} pkts${s.dropped_queue || s.dropped_socket ? `, ${s.dropped_queue + s.dropped_socket} dropped` : ''}`
      + `${s.paused ? ' (paused)' : ''}`).join('<br>');
    return `<tr class="track" data-identity="${esc(p.identity)}" data-track-sid="${esc(t.sid)}"
        data-kind="${esc(t.kind)}" data-bitrate="${t.bitrate ?? 0}">
      <td>${esc(t.source)} ${esc(t.kind)}<br><small>${esc(t.sid)}</small></td>
      <td>${esc(t.codec || t.mime_type)}</td><td>${res}</td><td>${t.muted ? 'muted' : ''}</td>
      <td class="num bitrate">${kbps(t.bitrate ?? 0)}</td>
      <td class="num">${t.packets_received ?? ''}</td>
      <td class="num">${t.packets_lost ?? ''} (${((t.loss ?? 0) * 100).toFixed(1)} %)</td>
      <td class="num">${t.packets_forwarded ?? ''}</td><td class="num">${t.keyframe_requests ?? ''}</td>
      <td>${subs}</td>
      <td><button data-action="mute" data-room="${esc(room)}" data-identity="${esc(p.identity)}"
        data-track-sid="${esc(t.sid)}" data-muted="${t.muted}">${t.muted ? 'unmute' : 'mute'}</button></td></tr>`;
  }

  function render(snapshot) {
    const seen = new Set();
    for (const r of snapshot.rooms) {
      seen.add(r.name);
      const el = section(r.name);
      el.querySelector('h2').textContent = `${r.name} (${r.sid}): ${r.num_participants} participant(s)`;
      const rows = [];
      for (const p of r.participants) {
        const attrs = Object.entries(p.attributes).map(([k, v]) => `${esc(k)}=${esc(v)}`).join(', ');
        rows.push(`<tr class="participant" data-identity="${esc(p.identity)}">
          <td colspan="4">${esc(p.identity)}${p.name ? ` (${esc(p.name)})` : ''} <small>${esc(p.sid)}</small></td>
          <td colspan="6">${esc(p.kind)}, ${esc(p.state)}${p.signal_connected ? '' : ', signal lost'}
            ${attrs ? `<br>attributes: ${attrs}` : ''}${p.metadata ? `<br>metadata: ${esc(p.metadata)}` : ''}</td>
          <td><button data-action="remove" data-room="${esc(r.name)}" data-identity="${esc(p.identity)}">remove</button></td></tr>`);
        for (const t of p.tracks) rows.push(trackRow(r.name, p, t));
      }
      el.querySelector('.body').innerHTML = `<table><thead><tr><th>track</th><th>codec</th>
        <th>resolution</th><th></th><th>kbit/s in</th><th>packets in</th><th>lost</th>
        <th>forwarded</th><th>PLIs</th><th>subscribers</th><th></th></tr></thead>
        <tbody>${rows.join('')}</tbody></table>`;
    }
    for (const el of document.querySelectorAll('section.room')) if (!seen.has(el.dataset.room)) el.remove();
    if (!snapshot.rooms.length) $('rooms').dataset.empty = 'true'; else delete $('rooms').dataset.empty;
    document.body.dataset.updated = String(snapshot.time);
  }

  $('apply').addEventListener('click', () => start());
  const params = new URLSearchParams(location.search);
  if (params.get('room')) $('room-filter').value = params.get('room');
  start();
})();
