// The room page of aiolivekit serve: join a room with the browser's microphone and camera,
// see and hear everyone, chat (text streams on lk.chat), data packets, attributes, mute,
// screen share. Plain JS over the vendored livekit-client UMD bundle (window.LivekitClient).
(() => {
  'use strict';
  const LK = window.LivekitClient;
  const $ = (id) => document.getElementById(id);
  const CHAT_TOPIC = 'lk.chat';
  const TEXT_TOPICS = [CHAT_TOPIC, 'lk.transcription'];
  const LEGACY_CHAT_TOPIC = 'lk-chat-topic';
  let room = null;
  let audioContext = null;
  const meters = new Map(); // track sid -> {analyser, data, identity}

  function setStatus(text, state) {
    $('status').textContent = text;
    if (state) document.body.dataset.state = state;
  }

  // ---- join form -----------------------------------------------------------------------
  const params = new URLSearchParams(location.search);
  $('url').value = params.get('url') || `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
  if (params.get('room')) $('room').value = params.get('room');
  $('identity').value = params.get('identity') || `web-${Math.random().toString(36).slice(2, 7)}`;
  if (params.get('token')) $('token').value = params.get('token');

  async function devToken(roomName, identity, name) {
    const res = await fetch('/dev/token', {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ room: roomName, identity, name: name || undefined }),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error || `token endpoint answered ${res.status}`);
    return body.token;
  }

  $('join').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('join-error').hidden = true;
    $('join-button').disabled = true;
    try {
      await join();
    } catch (e) {
      $('join-error').textContent = String(e?.message ?? e);
      $('join-error').hidden = false;
      setStatus('not connected', 'idle');
      if (room) { await room.disconnect(); room = null; }
    } finally {
      $('join-button').disabled = false;
    }
  });

  async function join() {
    audioContext = audioContext || new AudioContext(); // created on the click (autoplay rules)
    const roomName = $('room').value.trim();
    const identity = $('identity').value.trim();
    setStatus('connecting...', 'connecting');
    const token = $('token').value.trim() || (await devToken(roomName, identity, $('name').value.trim()));
    // 640x360 camera: what a Python bot decodes without strain on a small machine
    room = new LK.Room({
      adaptiveStream: false, dynacast: false,
      videoCaptureDefaults: { resolution: LK.VideoPresets.h360.resolution },
    });
    wire(room);
    await room.connect($('url').value.trim(), token);
    $('join').hidden = true;
    $('room-view').hidden = false;
    setStatus(`in room ${room.name} as ${room.localParticipant.identity}`, 'connected');
    renderParticipant(room.localParticipant);
    for (const p of room.remoteParticipants.values()) {
      renderParticipant(p);
      for (const pub of p.trackPublications.values()) if (pub.track) attachTrack(pub.track, pub, p);
    }
    if ($('with-mic').checked) await room.localParticipant.setMicrophoneEnabled(true);
    if ($('with-camera').checked) await room.localParticipant.setCameraEnabled(true);
    updateControls();
    showStartAudio();
  }

  // autoplay rules: audio elements or the analysers may wait for a click on the page
  function showStartAudio() {
    $('start-audio').hidden = !room || (room.canPlaybackAudio && audioContext?.state === 'running');
  }

  // ---- room events ---------------------------------------------------------------------
  function wire(r) {
    const E = LK.RoomEvent;
    r.on(E.ParticipantConnected, (p) => { renderParticipant(p); log('event', p.identity, 'joined'); })
      .on(E.ParticipantDisconnected, (p) => { removeTile(p.identity); log('event', p.identity, 'left'); })
      .on(E.TrackSubscribed, (track, pub, p) => attachTrack(track, pub, p))
      .on(E.TrackUnsubscribed, (track, pub, p) => detachTrack(track, pub, p))
      .on(E.LocalTrackPublished, (pub, p) => { attachTrack(pub.track, pub, p); updateControls(); })
      .on(E.LocalTrackUnpublished, (pub, p) => { detachTrack(pub.track, pub, p); updateControls(); })
      .on(E.TrackMuted, (pub, p) => { renderParticipant(p); updateControls(); })
      .on(E.TrackUnmuted, (pub, p) => { renderParticipant(p); updateControls(); })
      .on(E.ParticipantAttributesChanged, (changed, p) => renderParticipant(p))
      .on(E.ParticipantMetadataChanged, (old, p) => renderParticipant(p))
      .on(E.ParticipantNameChanged, (name, p) => renderParticipant(p))
      .on(E.ConnectionQualityChanged, (q, p) => renderParticipant(p))
      .on(E.ActiveSpeakersChanged, (speakers) => {
        const ids = new Set(speakers.map((s) => s.identity));
        for (const t of document.querySelectorAll('.tile')) t.classList.toggle('speaking', ids.has(t.dataset.identity));
      })
      .on(E.DataReceived, (payload, p, kind, topic) => onData(payload, p, topic))
      .on(E.AudioPlaybackStatusChanged, () => showStartAudio())
      .on(E.Reconnecting, () => setStatus('reconnecting...', 'reconnecting'))
      .on(E.Reconnected, () => setStatus(`in room ${r.name} as ${r.localParticipant.identity}`, 'connected'))
      .on(E.Disconnected, (reason) => onDisconnected(reason));
    for (const topic of TEXT_TOPICS) {
      r.registerTextStreamHandler(topic, async (reader, info) => {
        const text = await reader.readAll();
        log(topic === CHAT_TOPIC ? 'chat' : 'text', info.identity, text, topic);
      });
    }
  }

  function onData(payload, participant, topic) {
    let text;
    try { text = new TextDecoder('utf-8', { fatal: true }).decode(payload); } catch { text = `<${payload.length} bytes>`; }
    if (topic === LEGACY_CHAT_TOPIC) {
      try { text = JSON.parse(text).message ?? text; } catch { /* plain text */ }
    }
    log('data', participant?.identity ?? '(server)', text, topic ?? '');
  }

  function onDisconnected(reason) {
    setStatus(`disconnected (${LK.DisconnectReason?.[reason] ?? reason ?? ''})`, 'disconnected');
    for (const m of meters.values()) m.source.disconnect();
    meters.clear();
    $('tiles').replaceChildren();
    $('audio-sink').replaceChildren();
    $('room-view').hidden = true;
    $('join').hidden = false;
    room = null;
  }

  // ---- tiles ---------------------------------------------------------------------------
  function tileFor(identity) {
    let tile = document.querySelector(`.tile[data-identity="${CSS.escape(identity)}"]`);
    if (!tile) {
      tile = document.createElement('div');
      tile.className = 'tile';
      tile.dataset.identity = identity;
      tile.innerHTML = '<div class="videos"></div><div class="meter"><div></div></div>'
        + '<div class="who"></div><div class="meta"></div>';
      $('tiles').append(tile);
    }
    return tile;
  }

  function removeTile(identity) {
    tileFor(identity).remove();
  }

  function renderParticipant(p) {
    const tile = tileFor(p.identity);
    const local = room && p === room.localParticipant;
    tile.querySelector('.who').textContent = `${p.name || p.identity}${p.name ? ` (${p.identity})` : ''}${local ? ' - you' : ''}`;
    const muted = [];
    for (const pub of p.trackPublications.values()) if (pub.isMuted) muted.push(`${pub.source} muted`);
    const attrs = Object.entries(p.attributes ?? {}).map(([k, v]) => `${k}=${v}`);
    const lines = [];
    if (attrs.length) lines.push(`attributes: ${attrs.join(', ')}`);
    if (p.metadata) lines.push(`metadata: ${p.metadata}`);
    if (muted.length) lines.push(muted.join(', '));
    if (p.connectionQuality && p.connectionQuality !== 'unknown') lines.push(`quality: ${p.connectionQuality}`);
    const meta = tile.querySelector('.meta');
    meta.textContent = lines.join('\n');
    meta.style.whiteSpace = 'pre-line';
    tile.dataset.attributes = JSON.stringify(p.attributes ?? {});
  }

  function attachTrack(track, pub, p) {
    if (!track) return;
    const tile = tileFor(p.identity);
    const local = room && p === room.localParticipant;
    if (track.kind === 'video') {
      let el = tile.querySelector(`video[data-track-sid="${pub.trackSid}"]`);
      if (!el) {
        el = document.createElement('video');
        el.autoplay = true; el.playsInline = true; el.muted = true;
        el.dataset.trackSid = pub.trackSid;
        el.dataset.source = pub.source;
        tile.querySelector('.videos').append(el);
      }
      track.attach(el);
    } else if (track.kind === 'audio') {
      if (!local && !$('audio-sink').querySelector(`audio[data-track-sid="${pub.trackSid}"]`)) {
        const el = track.attach();
        el.dataset.trackSid = pub.trackSid;
        $('audio-sink').append(el);
      }
      meter(track, pub, p);
    }
    renderParticipant(p);
  }

  function detachTrack(track, pub, p) {
    if (track) for (const el of track.detach()) el.remove();
    const tile = document.querySelector(`.tile[data-identity="${CSS.escape(p.identity)}"]`);
    tile?.querySelector(`video[data-track-sid="${pub.trackSid}"]`)?.remove();
    const m = meters.get(pub.trackSid);
    if (m) { m.source.disconnect(); meters.delete(pub.trackSid); }
    if (tile) renderParticipant(p);
  }

  // ---- audio levels (WebAudio analysers) -----------------------------------------------
  function meter(track, pub, p) {
    if (!audioContext || !track.mediaStreamTrack || meters.has(pub.trackSid)) return;
    const source = audioContext.createMediaStreamSource(new MediaStream([track.mediaStreamTrack]));
    const analyser = audioContext.createAnalyser();
    analyser.fftSize = 2048;
    source.connect(analyser);
    meters.set(pub.trackSid, {
      source, analyser, identity: p.identity,
      data: new Float32Array(analyser.fftSize), spectrum: new Float32Array(analyser.frequencyBinCount),
    });
  }

  setInterval(() => {
    const levels = new Map();
    for (const m of meters.values()) {
      m.analyser.getFloatTimeDomainData(m.data);
      let sum = 0;
      for (const x of m.data) sum += x * x;
      const rms = Math.sqrt(sum / m.data.length);
      m.analyser.getFloatFrequencyData(m.spectrum);
      let best = 1;
      for (let k = 2; k < m.spectrum.length; k++) if (m.spectrum[k] > m.spectrum[best]) best = k;
      const freq = (best * audioContext.sampleRate) / m.analyser.fftSize;
      const prev = levels.get(m.identity);
      if (!prev || rms > prev.rms) levels.set(m.identity, { rms, freq });
    }
    for (const tile of document.querySelectorAll('.tile')) {
      const lv = levels.get(tile.dataset.identity);
      const rms = lv ? lv.rms : 0;
      tile.dataset.level = rms.toFixed(4);
      tile.dataset.peakHz = lv && rms > 0.001 ? lv.freq.toFixed(0) : '';
      tile.querySelector('.meter div').style.width = `${Math.min(100, rms * 300)}%`;
    }
  }, 100);

  // ---- controls ------------------------------------------------------------------------
  function updateControls() {
    if (!room) return;
    const lp = room.localParticipant;
    $('mic').textContent = lp.isMicrophoneEnabled ? 'mute mic' : 'unmute mic';
    $('mic').classList.toggle('off', !lp.isMicrophoneEnabled);
    $('camera').textContent = lp.isCameraEnabled ? 'stop camera' : 'start camera';
    $('camera').classList.toggle('off', !lp.isCameraEnabled);
    $('screen').textContent = lp.isScreenShareEnabled ? 'stop sharing' : 'share screen';
    document.body.dataset.mic = lp.isMicrophoneEnabled ? 'on' : 'off';
    document.body.dataset.camera = lp.isCameraEnabled ? 'on' : 'off';
    document.body.dataset.screen = lp.isScreenShareEnabled ? 'on' : 'off';
  }

  async function toggle(what) {
    if (!room) return;
    const lp = room.localParticipant;
    try {
      if (what === 'mic') await lp.setMicrophoneEnabled(!lp.isMicrophoneEnabled);
      if (what === 'camera') await lp.setCameraEnabled(!lp.isCameraEnabled);
      if (what === 'screen') await lp.setScreenShareEnabled(!lp.isScreenShareEnabled);
    } catch (e) {
      log('error', 'you', `${what}: ${e?.message ?? e}`);
    }
    updateControls();
    renderParticipant(lp);
  }
  $('mic').addEventListener('click', () => toggle('mic'));
  $('camera').addEventListener('click', () => toggle('camera'));
  $('screen').addEventListener('click', () => toggle('screen'));
  $('start-audio').addEventListener('click', async () => {
    await room?.startAudio();
    await audioContext?.resume();
    showStartAudio();
  });
  $('leave').addEventListener('click', async () => { await room?.disconnect(); });

  // ---- chat / data ---------------------------------------------------------------------
  function log(kind, from, text, topic = '') {
    const li = document.createElement('li');
    li.dataset.kind = kind;
    li.dataset.from = from;
    li.dataset.topic = topic;
    const who = document.createElement('span');
    who.className = 'from';
    who.textContent = `${from}: `;
    const body = document.createElement('span');
    body.className = 'text';
    body.textContent = text;
    li.append(who, body);
    if (topic && topic !== CHAT_TOPIC) {
      const t = document.createElement('span');
      t.className = 'topic';
      t.textContent = ` [${kind} ${topic}]`;
      li.append(t);
    }
    $('log').append(li);
    li.scrollIntoView({ block: 'end' });
  }

  async function send(asData) {
    const text = $('chat-text').value;
    const topic = $('chat-topic').value.trim() || CHAT_TOPIC;
    if (!room || !text) return;
    try {
      if (asData) {
        await room.localParticipant.publishData(new TextEncoder().encode(text), { reliable: true, topic });
        log('data', room.localParticipant.identity, text, topic);
      } else {
        await room.localParticipant.sendText(text, { topic });
        log(topic === CHAT_TOPIC ? 'chat' : 'text', room.localParticipant.identity, text, topic);
      }
      $('chat-text').value = '';
    } catch (e) {
      log('error', 'you', `send failed: ${e?.message ?? e}`);
    }
  }
  $('chat').addEventListener('submit', (ev) => { ev.preventDefault(); send(false); });
  $('data-send').addEventListener('click', () => send(true));

  if (params.get('autojoin') === '1') $('join').requestSubmit();
})();
