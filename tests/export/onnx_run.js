// onnx_run.js: runs an exported ONNX model on onnxruntime, the way another
// tool would take it, and writes its logits for test_export compare.
//
//   node onnx_run.js MODEL.onnx IMAGES.f32 OUT.f32 C H W [BATCH]
//
// IMAGES.f32 holds raw images scaled to [0, 1], NCHW, as runner.c reads
// them, C x H x W each (the model's input). onnxruntime-node is found
// through ORT_NODE (its package folder) or node's own resolution.
'use strict';
const fs = require('fs');

async function main() {
  const [model, images, out, c, h, w, batchArg] = process.argv.slice(2);
  if (!model || !images || !out || !w) {
    console.error('usage: node onnx_run.js MODEL.onnx IMAGES.f32 OUT.f32 C H W [BATCH]');
    process.exit(2);
  }
  const ort = require(process.env.ORT_NODE || 'onnxruntime-node');
  const net = await ort.InferenceSession.create(model, {
    intraOpNumThreads: 1,
    graphOptimizationLevel: 'all',
  });
  if (net.inputNames[0] !== 'input' || net.outputNames[0] !== 'logits')
    throw new Error(`expected input 'input' and output 'logits', got ${net.inputNames} -> ${net.outputNames}`);
  const buf = fs.readFileSync(images);
  const all = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  const shape = [Number(c), Number(h), Number(w)];
  const per = shape[0] * shape[1] * shape[2];
  if (all.length % per) throw new Error(`${images}: ${all.length} floats is not a whole number of ${per}-float images`);
  const n = all.length / per, batch = Number(batchArg || 13);
  const chunks = [];
  for (let i = 0; i < n; i += batch) {
    const m = Math.min(batch, n - i);
    const x = new ort.Tensor('float32', all.slice(i * per, (i + m) * per), [m, ...shape]);
    const r = await net.run({ input: x });
    const y = r.logits;
    if (y.dims.length !== 2 || y.dims[0] !== m) throw new Error(`logits of shape ${y.dims} for ${m} images`);
    chunks.push(Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
  }
  fs.writeFileSync(out, Buffer.concat(chunks));
  console.log(`onnx_run: ${n} images through ${model} on onnxruntime ${ort.env.versions ? ort.env.versions.common : ''}`);
}

main().catch((e) => {
  console.error(`onnx_run: ${e.message || e}`);
  process.exit(1);
});
