const ort = globalThis.ort;
const $ = (id) => document.getElementById(id);
const CFG = JSON.parse($('config').textContent);
const S = CFG.size, CLASSES = CFG.classes, N = CLASSES.length;
const statusEl = $('status');
const setStatus = (s) => { statusEl.textContent = s; };
window.__timing = { start: performance.now() };

function b64(s) {
  s = s.trim();
  if (Uint8Array.fromBase64) return Uint8Array.fromBase64(s);
  const bin = atob(s), u = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
  return u;
}
async function gunzip(u) {
  const st = new Blob([u]).stream().pipeThrough(new DecompressionStream('gzip'));
  return new Uint8Array(await new Response(st).arrayBuffer());
}
async function block(id, gz) { const u = b64($(id).textContent); return gz ? gunzip(u) : u; }

const sessionReady = (async () => {
  ort.env.wasm.numThreads = 1;   // no worker threads (would need a fetchable URL)
  ort.env.wasm.proxy = false;    // no proxy worker
  ort.env.wasm.wasmBinary = await block('ort-wasm', true);  // ORT will not fetch the .wasm
  const model = await block('model', CFG.modelGzip);
  const s = await ort.InferenceSession.create(model, { executionProviders: ['wasm'] });
  window.__timing.ready = performance.now();
  setStatus('Ready. Choose or drop an image, or start the camera.');
  return s;
})();
sessionReady.catch((e) => { setStatus('Failed to load the model: ' + e); console.error(e); });

// one inference at a time
let chain = Promise.resolve();
function runModel(pixels) {
  const job = chain.then(async () => {
    const session = await sessionReady;
    const t = new ort.Tensor('uint8', pixels, [1, S, S, 3]);
    const r = await session.run({ pixels: t });
    const out = {
      probabilities: Array.from(r.probabilities.data),
      unknownScore: r.unknown_score.data[0],
      unknown: !!r.unknown.data[0],
    };
    if (r.labels) out.labels = Array.from(r.labels.data).map((v, i) => (v ? i : -1)).filter((i) => i >= 0);
    for (const k in r) r[k].dispose?.();
    return out;
  });
  chain = job.catch(() => {});
  return job;
}

// test hooks: run on raw RGB uint8 pixels (S*S*3, row-major HWC)
window.classifyPixelsFull = async (pixels, size) => {
  if (size !== S) throw new Error(`size must be ${S}`);
  if (!(pixels instanceof Uint8Array)) pixels = Uint8Array.from(pixels);
  if (pixels.length !== S * S * 3) throw new Error(`need ${S * S * 3} bytes`);
  return runModel(pixels);
};
window.classifyPixels = async (pixels, size) => (await window.classifyPixelsFull(pixels, size)).probabilities;

// image -> S x S RGB uint8, as the app prepares it (core.data.images.fit_square): transparent parts on white, then
// squished, cropped to the centre, or padded with black to a square (CFG.resize); the canvas resamples smoothly.
const canvas = $('work');
canvas.width = S; canvas.height = S;
const ctx = canvas.getContext('2d', { willReadFrequently: true });
function toPixels(src, w, h) {
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, S, S);
  let from = [0, 0, w, h], to = [0, 0, S, S];
  if (CFG.resize === 'crop') {
    const side = Math.min(w, h);
    from = [(w - side) / 2, (h - side) / 2, side, side];
  } else if (CFG.resize === 'pad') {
    const scale = Math.min(S / w, S / h), dw = Math.round(w * scale), dh = Math.round(h * scale);
    to = [Math.floor((S - dw) / 2), Math.floor((S - dh) / 2), dw, dh];
  }
  ctx.fillStyle = '#fff';
  ctx.fillRect(...to);
  ctx.drawImage(src, ...from, ...to);
  const rgba = ctx.getImageData(0, 0, S, S).data;
  const rgb = new Uint8Array(S * S * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
  }
  return rgb;
}

// a run of label sets (CFG.multiLabel) names every label found (the model's `labels` output) and lists each label's
// own probability, most probable first; one label per image names the top class and lists the top three
function show(res) {
  const order = res.probabilities.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0])
    .slice(0, CFG.multiLabel ? N : 3);
  const list = $('top3');
  list.replaceChildren();
  for (const [p, i] of order) {
    const li = document.createElement('li');
    li.textContent = `${CLASSES[i] ?? ('class ' + i)}: ${(100 * p).toFixed(1)}%`;
    list.append(li);
  }
  $('verdict').textContent = res.unknown ? `Not one of the ${N} classes` : '';
  $('score').textContent = `unknown score ${res.unknownScore.toFixed(3)}`;
  if (CFG.multiLabel) {
    const found = order.filter(([, i]) => res.labels.includes(i)).map(([, i]) => CLASSES[i] ?? ('label ' + i));
    $('top1').textContent = found.length ? found.join(', ') : `None of the ${N} labels`;
  } else {
    $('top1').textContent = CLASSES[order[0][1]] ?? ('class ' + order[0][1]);
  }
  if (window.__timing.first === undefined) window.__timing.first = performance.now();
  window.__lastResult = res;
  window.__timing.count = (window.__timing.count || 0) + 1;
}

async function classifySource(src, w, h) {
  try {
    const res = await runModel(toPixels(src, w, h));
    show(res);
  } catch (e) { setStatus('Error: ' + e); console.error(e); }
}

async function classifyFile(file) {
  if (!file) return;
  stopCamera();
  let bmp;
  try { bmp = await createImageBitmap(file); }
  catch (e) { setStatus('Could not read that file as an image.'); return; }
  const prev = $('preview');
  prev.width = bmp.width; prev.height = bmp.height;
  prev.getContext('2d').drawImage(bmp, 0, 0);
  prev.hidden = false; $('video').hidden = true;
  await classifySource(bmp, bmp.width, bmp.height);
  bmp.close();
}

$('file').addEventListener('change', (e) => classifyFile(e.target.files[0]));
const drop = $('drop');
for (const ev of ['dragenter', 'dragover']) document.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add('over'); });
for (const ev of ['dragleave', 'drop']) document.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove('over'); });
document.addEventListener('drop', (e) => classifyFile(e.dataTransfer.files[0]));

// camera: classify a frame every ~300 ms, skipping frames while busy
let stream = null, timer = null, busy = false;
const video = $('video'), camBtn = $('camera');
function stopCamera() {
  if (timer) clearInterval(timer);
  timer = null;
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  camBtn.textContent = 'Start camera';
}
camBtn.addEventListener('click', async () => {
  if (stream) { stopCamera(); return; }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' }, audio: false });
  } catch (e) { setStatus('Camera not available: ' + e.message); return; }
  video.srcObject = stream;
  video.hidden = false; $('preview').hidden = true;
  await video.play().catch(() => {});
  camBtn.textContent = 'Stop camera';
  timer = setInterval(async () => {
    if (busy || video.readyState < 2) return;
    busy = true;
    try { await classifySource(video, video.videoWidth, video.videoHeight); } finally { busy = false; }
  }, 300);
});
