#!/usr/bin/env bash
# Fine-tune the shipped `cpu` network on one GPU from phantoms: two runs side by side on the same
# GPU, each fed by its own worker processes (--workers), each stopped by a time budget (--minutes; the
# cosine schedule ends there). Run on one H200, 2026-12-04: `bash scripts/gpu_finetune.sh OUT 8 6`
# (code at bcf2d97; two learning rates), the A_FLAGS / B_FLAGS example below (code at 1bc901a; kind
# weight 4, 1.15 mm grid), and with `--cases 8 --refresh-every 100000 --pool 16` to fit eight phantoms
# (a diagnostic). No run beat stage 9 (README Results, "The first GPU run" and "The second GPU run";
# model card evaluation.candidates_not_shipped).
# Usage: bash scripts/gpu_finetune.sh OUT_DIR [MINUTES] [WORKERS_PER_RUN] [TRAINING FLAGS...]
# Flags after the third argument go to both runs, e.g. `bash scripts/gpu_finetune.sh OUT 8 6
# --kind-weight 4` (the kind-weighted run that 50 CPU minutes could not make better; README Results).
# Each run's own flags come from A_FLAGS / B_FLAGS (default: the two learning rates of the first run),
# e.g. `A_FLAGS="--seed 24 --lr 1.5e-4 --kind-weight 4" B_FLAGS='--seed 25 --lr 1.5e-4 --ablation
# {"spacing":[1.15,1.15,1.15]}' bash scripts/gpu_finetune.sh OUT 8 7` (JSON without spaces: the flags
# are split on whitespace; a later --ablation replaces the common one).
# A deeper network grown from stage 9 (mask_blocks: stride-2 blocks that start as the identity, their
# own learning rate via --new-lr-mult), e.g. `A_FLAGS="--seed 28 --lr 2e-5" B_FLAGS='--seed 29 --lr 2e-5
# --new-lr-mult 25 --ablation {"spacing":[1.3,1.3,1.3],"mask_blocks":2}' bash scripts/gpu_finetune.sh OUT 8 7`
# (run A the same recipe without the blocks: the control).
# EVAL_CASES=N (default 0: off) then scores stage 9 and both runs on N fresh phantoms from seed
# EVAL_FIRST (default 970000; move on once a choice has been made there), four click draws, with
# EVAL_PROCS evaluate processes sharing the GPU (default 8), and prints `miqsam compare` of each run
# against stage 9 (paired differences with intervals; README Results, "Judging a candidate").
# EVAL_CONTRAST=1 also scores the same phantoms with their contrasts mirrored and halved
# (phantom-mirrored / phantom-halved, the contrast probes of `miqsam evaluate`) and prints each
# weights' means there: a contrast-invariant network scores about as on the phantoms as made.
# EVAL_FIT=1 prints how well stage 9 and both runs fit the randomized training generator itself
# (benchmarks/randomized_fit.py: clicked lesions found on 20 fresh randomized volumes): a run on
# --data ...randomized has to fit its own family before its out-of-family numbers mean much.
# Runs from the repository root without installing the package (PYTHONPATH=src), so it works on a
# GPU machine whose Python already has torch, numpy, scipy, safetensors and tqdm.
set -u -f
out=${1:?usage: gpu_finetune.sh OUT_DIR [MINUTES] [WORKERS_PER_RUN]}
minutes=${2:-8}
workers=${3:-6}
shift $(( $# < 3 ? $# : 3 ))
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$out"
common=(--config cpu --data phantom --steps 100000 --batch 16 --patch 128 --pool 96 --refresh-every 1
        --threads 2 --warmup 40 --val-every 0 --checkpoint-every 200 --workers "$workers" --minutes "$minutes"
        --init src/napari_miqsam/weights/miqsam_cpu.safetensors --ablation '{"spacing": [1.3, 1.3, 1.3]}' "$@")
read -r -a a_flags <<<"${A_FLAGS:---seed 20 --lr 5e-5}"
read -r -a b_flags <<<"${B_FLAGS:---seed 21 --lr 1.5e-4}"
"${PYTHON:-python3}" -m napari_miqsam.training "${common[@]}" "${a_flags[@]}" --out "$out/a" >"$out/a.log" 2>&1 &
"${PYTHON:-python3}" -m napari_miqsam.training "${common[@]}" "${b_flags[@]}" --out "$out/b" >"$out/b.log" 2>&1 &
wait
for r in a b; do echo "== run $r"; tr "\r" "\n" <"$out/$r.log" | tail -n 3; tail -n 1 "$out/$r/log.jsonl" 2>/dev/null; done
cases=${EVAL_CASES:-0}
if (( cases > 0 )); then
    data="phantom:$cases:${EVAL_FIRST:-970000}"
    for w in stage9:src/napari_miqsam/weights/miqsam_cpu.safetensors a:$out/a/miqsam_cpu.safetensors b:$out/b/miqsam_cpu.safetensors; do
        name=${w%%:*}
        [[ -f ${w#*:} ]] || { echo "== no weights for $name"; continue; }
        "${PYTHON:-python3}" -m torch.distributed.run --nproc_per_node "${EVAL_PROCS:-8}" -m napari_miqsam.cli evaluate "$data" \
            --clicks 3 --seed 0,1,2,3 --no-baselines --quiet --weights "${w#*:}" --json "$out/eval_$name.json" --overwrite \
            >"$out/eval_$name.log" 2>&1 || echo "== evaluate $name failed: $out/eval_$name.log"
    done
    for r in a b; do
        [[ -f $out/eval_$r.json && -f $out/eval_stage9.json ]] &&
            "${PYTHON:-python3}" -m napari_miqsam.cli compare "$out/eval_stage9.json" "$out/eval_$r.json"
    done
    if [[ ${EVAL_CONTRAST:-0} == 1 ]]; then
        for probe in mirrored halved; do
            for w in stage9:src/napari_miqsam/weights/miqsam_cpu.safetensors a:$out/a/miqsam_cpu.safetensors b:$out/b/miqsam_cpu.safetensors; do
                name=${w%%:*}
                [[ -f ${w#*:} ]] || continue
                "${PYTHON:-python3}" -m torch.distributed.run --nproc_per_node "${EVAL_PROCS:-8}" -m napari_miqsam.cli evaluate \
                    "phantom-$probe:$cases:${EVAL_FIRST:-970000}" --clicks 3 --seed 0 --no-baselines --quiet --weights "${w#*:}" \
                    --json "$out/eval_${name}_$probe.json" --overwrite >"$out/eval_${name}_$probe.log" 2>&1 ||
                    { echo "== evaluate $name $probe failed: $out/eval_${name}_$probe.log"; continue; }
                "${PYTHON:-python3}" -c "import json, sys; m = json.load(open(sys.argv[1]))['model']; print('== $name $probe:', ' '.join(f'{k} {m[k]:.3f}' for k in ('dice', 'instance_recall', 'instance_f1', 'clicked_found')))" "$out/eval_${name}_$probe.json"
            done
        done
    fi
fi
if [[ ${EVAL_FIT:-0} == 1 ]]; then
    fit=()
    for w in src/napari_miqsam/weights/miqsam_cpu.safetensors $out/a/miqsam_cpu.safetensors $out/b/miqsam_cpu.safetensors; do
        [[ -f $w ]] && fit+=(--weights "$w")
    done
    "${PYTHON:-python3}" benchmarks/randomized_fit.py "${fit[@]}" || echo "== randomized_fit failed"
fi
