# napari-miqsam developer commands. Python 3.10+ on Debian/Ubuntu.
#   make run    install, then open napari with the plugin docked and the sample CT phantom
#   make test   install (system packages for Xvfb/Qt too), then run the test suite under Xvfb
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU wheel of torch, installed before the package so pip does not pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: run test install system-deps benchmark evaluate evaluate-ood evaluate-contrast evaluate-real screenshot train-default clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

system-deps:
	@command -v Xvfb >/dev/null 2>&1 && [ -e /usr/lib/x86_64-linux-gnu/libxcb-cursor.so.0 -o -e /usr/lib/aarch64-linux-gnu/libxcb-cursor.so.0 ] || bash scripts/install-system-deps.sh

run: install
	@if [ -z "$$DISPLAY" ]; then echo "no DISPLAY: starting napari under xvfb-run"; $(MAKE) -s system-deps; xvfb-run -a $(PY) -m napari_miqsam.launch; else $(PY) -m napari_miqsam.launch; fi

test: system-deps install
	QT_API=pyqt6 $(PY) -m pytest -q

benchmark: install
	$(VENV)/bin/miqsam benchmark --json benchmarks/results/benchmark.json

evaluate: install
	$(VENV)/bin/miqsam evaluate phantom:40:0 --clicks 3 --seed 0 --json benchmarks/results/evaluate.json

# 40 phantoms of the second, separately written generator (data/ood_phantom.py; validation only),
# then 40 chest phantoms with lung nodules (data/ood_thorax.py; validation only), baselines beside.
evaluate-ood: install
	$(VENV)/bin/miqsam evaluate ood:40:0 --clicks 3 --seed 0 --no-baselines --json benchmarks/results/evaluate_ood.json --overwrite
	$(VENV)/bin/miqsam evaluate ood-thorax:40:0 --clicks 3 --seed 0 --json benchmarks/results/evaluate_ood_thorax.json --overwrite

# Contrast probes: 20 in-family phantoms as made, mirrored (80 - HU) and halved (0.5 HU + 80), labels
# untouched. A network that reads contrast rather than CT numbers scores about the same on all three.
evaluate-contrast: install
	for s in phantom phantom-mirrored phantom-halved; do $(VENV)/bin/miqsam evaluate $$s:20:970000 --clicks 3 --seed 0 --no-baselines --json benchmarks/results/evaluate_contrast_$$(echo $$s | tr - _).json --overwrite || exit 1; done

# One real CT (LiTS case 117, out of the training family; data/real_ct.py): the largest, the
# median-sized and the smallest tumour clicked in turn. Downloads a 4.5 MB wheel once into the cache.
# Then two lung CTs and two brain MRs, one finding each (data/pyradiomics_scans.py; a 34 MB download
# once), with the region-growing baselines beside the model.
evaluate-real: install
	folder=$$($(VENV)/bin/miqsam fetch-real-ct) && $(VENV)/bin/miqsam evaluate "$$folder" --target largest,median,smallest --clicks 3 --seed 0 --no-baselines --json benchmarks/results/evaluate_real_ct.json --overwrite
	for s in lung-ct brain-mr; do folder=$$($(VENV)/bin/miqsam fetch-real-ct --scans $$s) && $(VENV)/bin/miqsam evaluate "$$folder" --clicks 3 --seed 0 --json benchmarks/results/evaluate_real_$$(echo $$s | tr - _).json --overwrite || exit 1; done

screenshot: install
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) scripts/screenshot.py

# How the shipped default weights were made (about 10 hours on 2 CPU cores, in nine stages; stages 2-9
# are two processes with gloo): stage 1 trains the network without the kind prior; stage 2 adds
# the kind prior (model/kind.py) and fine-tunes everything from stage 1 on new phantom seeds; stage 3
# fine-tunes stage 2 on new seeds again, with the class-balanced kind loss (stages 1-3: 64^3 crops);
# stages 4 and 5 fine-tune on whole phantoms (--patch 128 is larger than a phantom: one whole case
# per process per step), each on new seeds; stage 6 trains only the stride-1 mask refiner
# (model/refine.py) on the frozen stage-5 network; stage 7 fine-tunes the network on whole phantoms
# with peak-normalised targets (a lesion smaller than a stride-2 cell keeps its most-filled cell;
# the stage-6 refiner is carried along, frozen); stage 8 fine-tunes stage 7 on a 1.3 mm model grid
# instead of 1.5 mm (refiner frozen); stage 9 fine-tunes stage 8 once more at a fifth of its learning
# rate (2e-5). The last line records the model-grid spacing that inference
# runs at (1.3 mm, chosen on validation phantoms with benchmarks/tune_threshold.py --model-spacing;
# see the model card); the next line makes it run with pooled attention keys and windows of up to 168
# voxels (issue #33: the stages were trained with exact attention, "kv_pool": 1; pooled keys scored
# within noise of exact on phantom:40:0 and ood:40:0, docs/results.md), and
# runs/cpu19/miqsam_cpu.safetensors is then the shipped file.
train-default: install
	OMP_NUM_THREADS=1 $(VENV)/bin/miqsam train --config cpu --data phantom --out runs/cpu --steps 5000 --batch 4 --patch 64 --pool 160 --threads 1 --ablation '{"kind_prior": false, "kv_pool": 1}'
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --nproc_per_node=2 -m napari_miqsam.training --config cpu --data phantom --out runs/cpu2 --steps 6000 --batch 2 --patch 64 --pool 120 --threads 1 --seed 1 --lr 5e-4 --warmup 150 --init runs/cpu/miqsam_cpu.safetensors --ablation '{"kv_pool": 1}'
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --nproc_per_node=2 -m napari_miqsam.training --config cpu --data phantom --out runs/cpu3 --steps 5500 --batch 2 --patch 64 --pool 120 --threads 1 --seed 2 --lr 3e-4 --warmup 150 --init runs/cpu2/miqsam_cpu.safetensors --ablation '{"kv_pool": 1}'
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --nproc_per_node=2 -m napari_miqsam.training --config cpu --data phantom --out runs/cpu5 --steps 1400 --batch 1 --patch 128 --pool 80 --threads 1 --seed 4 --lr 2e-4 --warmup 80 --init runs/cpu3/miqsam_cpu.safetensors --ablation '{"kv_pool": 1}'
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --nproc_per_node=2 -m napari_miqsam.training --config cpu --data phantom --out runs/cpu6 --steps 1500 --batch 1 --patch 128 --pool 80 --threads 1 --seed 5 --lr 2e-4 --warmup 50 --init runs/cpu5/miqsam_cpu.safetensors --ablation '{"kv_pool": 1}'
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --nproc_per_node=2 -m napari_miqsam.training --config cpu --data phantom --out runs/cpu7r --steps 3000 --batch 1 --patch 128 --pool 40 --threads 1 --seed 7 --lr 1e-3 --warmup 100 --init runs/cpu6/miqsam_cpu.safetensors --refine-only --ablation '{"kv_pool": 1}'
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --nproc_per_node=2 -m napari_miqsam.training --config cpu --data phantom --out runs/cpu8 --steps 2000 --batch 1 --patch 128 --pool 80 --threads 1 --seed 6 --lr 2e-4 --warmup 50 --init runs/cpu7r/miqsam_cpu.safetensors --ablation '{"kv_pool": 1}'
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --nproc_per_node=2 -m napari_miqsam.training --config cpu --data phantom --out runs/cpu10 --steps 800 --batch 1 --patch 128 --pool 80 --threads 1 --seed 10 --lr 1e-4 --warmup 30 --val-every 0 --init runs/cpu8/miqsam_cpu.safetensors --ablation '{"spacing": [1.3, 1.3, 1.3], "kv_pool": 1}'
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --nproc_per_node=2 -m napari_miqsam.training --config cpu --data phantom --out runs/cpu19 --steps 450 --batch 1 --patch 128 --pool 80 --threads 1 --seed 19 --lr 2e-5 --warmup 30 --val-every 0 --init runs/cpu10/miqsam_cpu.safetensors --ablation '{"spacing": [1.3, 1.3, 1.3], "kv_pool": 1}'
	$(PY) -c "from napari_miqsam.model.weights import update_metadata; update_metadata('runs/cpu19/miqsam_cpu.safetensors', {'inference_spacing': [1.3, 1.3, 1.3]})"
	$(PY) -c "from napari_miqsam.model.weights import update_config; update_config('runs/cpu19/miqsam_cpu.safetensors', kv_pool=2, max_window=168)"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
