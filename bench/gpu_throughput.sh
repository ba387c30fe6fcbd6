#!/usr/bin/env bash
# Throughput of the trainer on an NVIDIA GPU machine, in one go (< 8 minutes on one H200):
#   1. seresnet50, synthetic data on the GPU, bf16 + channels_last, eager
#   2. the same with --compile
#   3./4. the same two on JPEG files decoded by the CPU loader (generated here, 224 px)
# 256 images per GPU per step, 200 steps each (the first 20 excluded from throughput).
# One line per configuration: img/s (global, median over log windows), data-wait fraction,
# peak GPU memory. Run from the repository root, in the training environment:
#   bash bench/gpu_throughput.sh            # all GPUs of this machine
#   NPROC=1 bash bench/gpu_throughput.sh    # one GPU
#   bash bench/gpu_throughput.sh --smoke    # the whole script on the CPU, tiny sizes (CI)
# Targets on one H200: synthetic >= 3,000 img/s; JPEG >= 90% of synthetic.
set -euo pipefail

PY=${PYTHON:-python}
SMOKE=0
[[ "${1:-}" == "--smoke" ]] && SMOKE=1
if (( SMOKE )); then
  DEVICE=cpu MODEL=${MODEL:-seresnet18} BS=${BS:-4} STEPS=${STEPS:-6} IMG=${IMG:-32}
  NPROC=${NPROC:-2} N_JPEG=${N_JPEG:-48} JPEG_PX=${JPEG_PX:-48} WORKERS=${WORKERS:-1}
  WARMUP=2 LOG=2 COMPILE_CONFIGS=${COMPILE_CONFIGS:-0}
  export OMP_NUM_THREADS=1
else
  DEVICE=cuda MODEL=${MODEL:-seresnet50} BS=${BS:-256} STEPS=${STEPS:-200} IMG=${IMG:-224}
  NPROC=${NPROC:-$(nvidia-smi -L | wc -l)} N_JPEG=${N_JPEG:-5120} JPEG_PX=${JPEG_PX:-224}
  CORES=$(nproc)
  WORKERS=${WORKERS:-$(( CORES / NPROC - 1 > 1 ? CORES / NPROC - 1 : 1 ))}
  WARMUP=20 LOG=20 COMPILE_CONFIGS=${COMPILE_CONFIGS:-1}
fi
OUT=${OUT_DIR:-$(mktemp -d /tmp/gpu_throughput.XXXXXX)}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
echo "# $(date -u +%FT%TZ) $MODEL bs $BS/proc x $NPROC, $STEPS steps, device $DEVICE, out $OUT"
$PY -c 'import torch, timm; print("# torch", torch.__version__, "timm", timm.__version__)'
[[ $DEVICE == cuda ]] && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | sed 's/^/# /'

train() {  # train NAME ARGS... : one torchrun, then one result line from its metrics
  local name=$1; shift
  local dir="$OUT/$name"
  rm -rf "$dir"; mkdir -p "$dir"
  if ! $PY -m torch.distributed.run --standalone --nproc-per-node "$NPROC" \
      -m trainer.train --device "$DEVICE" --model "$MODEL" --img-size "$IMG" \
      --batch-size "$BS" --precision bf16 --channels-last --no-checkpoint --no-eval \
      --warmup-steps "$WARMUP" --log-interval "$LOG" --output-dir "$dir" "$@" \
      > "$dir/stdout.log" 2>&1; then
    echo "$name FAILED, see $dir/stdout.log"; tail -5 "$dir/stdout.log"; return 0
  fi
  $PY - "$name" "$dir" <<'PYEOF'
import json, sys
name, d = sys.argv[1], sys.argv[2]
recs = [json.loads(l) for l in open(f"{d}/metrics-rank0.jsonl")]
s = next(r for r in recs if r["type"] == "summary")
rs = next(r for r in recs if r["type"] == "rank_summary")
mem = max((r["peak_mem_bytes"] or 0) for r in recs if r["type"] == "step")
f = lambda v, spec: "n/a" if v is None else format(v, spec)
print(f"{name:18s} img/s {f(s['img_s_median'], '8.1f')}  (mean {f(s['img_s_mean'], '.1f')})"
      f"  data-wait {f(rs['data_wait_frac_mean'], '.1%')}  peak-mem {mem / 2**30:.2f} GiB"
      f"  precision {s['precision']}  steps {s['steps']}  world {s['world_size']}", flush=True)
PYEOF
}

train synthetic --synthetic --epochs 1 --steps-per-epoch "$STEPS"
if (( COMPILE_CONFIGS )); then
  train synthetic+compile --synthetic --epochs 1 --steps-per-epoch "$STEPS" --compile
fi

# JPEG data: real photographs (sklearn's two sample images) cut into random crops, so the
# decoder sees natural-image entropy; procedural images if sklearn is absent.
DATA="$OUT/data"  # not a config name: train() empties $OUT/<config>
$PY - "$DATA" "$N_JPEG" "$JPEG_PX" <<'PYEOF'
import os, sys, time
from multiprocessing import Pool
import numpy as np
from PIL import Image

root, n, px = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
CLASSES = 100
try:
    from sklearn.datasets import load_sample_images
    PHOTOS = load_sample_images().images
except ImportError:
    PHOTOS = None

def make(i):
    rng = np.random.default_rng(i)
    if PHOTOS is not None:
        photo = PHOTOS[i % len(PHOTOS)]
        h, w = photo.shape[:2]
        side = int(rng.integers(min(h, w) // 3, min(h, w)))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        img = Image.fromarray(photo[y:y + side, x:x + side]).resize((px, px), Image.BILINEAR)
    else:
        base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((px, px), Image.BICUBIC)
        noise = rng.integers(-20, 20, (px, px, 3))
        img = Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))
    for split in ("train", "val") if i < CLASSES else ("train",):  # val: one per class
        d = os.path.join(root, split, f"c{i % CLASSES:03d}")
        os.makedirs(d, exist_ok=True)
        img.save(os.path.join(d, f"{i:06d}.jpg"), quality=90)

t = time.time()
with Pool() as pool:
    pool.map(make, range(n), chunksize=64)
print(f"# generated {n} JPEGs of {px}px in {time.time() - t:.1f}s under {root}", flush=True)
PYEOF
SPE=$(( N_JPEG / (BS * NPROC) ))
(( SPE >= 1 )) || { echo "N_JPEG=$N_JPEG is less than one global batch"; exit 1; }
EPOCHS=$(( (STEPS + SPE - 1) / SPE ))
echo "# JPEG: $SPE steps/epoch, $EPOCHS epochs, $WORKERS loader workers per process"
train jpeg --data-dir "$DATA" --epochs "$EPOCHS" --workers "$WORKERS"
if (( COMPILE_CONFIGS )); then
  train jpeg+compile --data-dir "$DATA" --epochs "$EPOCHS" --workers "$WORKERS" --compile
fi
echo "# metrics and logs under $OUT"
