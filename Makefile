# Two commands do all the set-up: `make app` (the dashboard) and `make test` (the whole suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Developers of prunekit keep the CIFAR-10 JPEG copy in ../shared/data; users set PRUNEKIT_DATA or use the cache.
SHARED_DATA := $(abspath $(wildcard ../shared/data))
ifneq ($(SHARED_DATA),)
export PRUNEKIT_DATA ?= $(SHARED_DATA)
endif

.PHONY: app test install lint clean-venv default-model gpu gpu-bundle

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# `make app CLASSROOM=1`: serve a class on this machine's network (README "Serving on a network"): the audience
# explores, only the presenter (with the key printed in this terminal) prunes and runs jobs.
app: $(STAMP)
	$(VENV)/bin/streamlit run app.py --server.address $(if $(CLASSROOM),0.0.0.0,127.0.0.1) --server.port 8501 \
		$(if $(CLASSROOM),-- --classroom)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)

# Re-train the bundled default (assets/README.md): CIFAR-10 ResNet-20, 75 epochs in bf16; on 2 quiet CPU cores with bf16
# units about 45-50 minutes (63 on a busy machine).
DEFAULT_RUN := runs/train-resnet20-cifar10
default-model: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m prunekit train --model resnet20 --data cifar10 --epochs 75 --batch-size 128 \
		--lr 0.1 --schedule cosine --warmup-epochs 1 --seed 0 --threads 2 --precision bf16 --out $(DEFAULT_RUN)
	cp $(DEFAULT_RUN)/model.safetensors assets/resnet20_cifar10.safetensors
	cp $(DEFAULT_RUN)/epoch001.safetensors assets/resnet20_cifar10_epoch001.safetensors
	cp $(DEFAULT_RUN)/metrics.jsonl assets/resnet20_cifar10_metrics.jsonl

# The GPU check (benchmarks/gpu.sh, README "On a GPU"): the CUDA tests, ResNet-20 to >= 91%, the CUDA benchmarks,
# all into OUT (default artifacts/gpu-<time>); `make gpu DRY=1` runs the same steps on the CPU at toy size.
gpu: $(STAMP)
	PYTHON=$(PY) bash benchmarks/gpu.sh

# The GPU check where the GPU machine has no package registry (README "On a GPU"): the wheels its image lacks and the
# CIFAR-10 copy into gpu-bundle/ (git-ignored; refused over the 64 MiB that travel); there, with gpu-bundle carried:
# `bash benchmarks/gpu_offline.sh`.
gpu-bundle: $(STAMP)
	$(PY) benchmarks/gpu_bundle.py
