# fuzz: `make demo` and `make test` set everything up on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FUZZ := $(VENV)/bin/fuzz
STAMPS := .stamps
APT_PACKAGES := python3-venv python3-dev libssl-dev runc skopeo umoci busybox-static docker-registry postgresql iptables iproute2 squashfs-tools siftool mmdebstrap gcc libc6-dev openmpi-bin mpich golang-go golang-github-masterminds-sprig-dev git chromium chromium-driver prometheus slurmctld slurmd slurm-client munge podman
DISTRIBUTIONS := . state providers/aws providers/gcp providers/azure providers/baremetal
# fuzz-state's backends, as extras (the default local backend is in fuzz itself)
STATE_EXTRAS := s3,postgres
PYPROJECTS := $(addsuffix /pyproject.toml,$(DISTRIBUTIONS))
PROTOS := $(wildcard fuzz/api/*.proto)
GENERATED := $(PROTOS:.proto=_pb2.py)

.PHONY: setup system-packages venv proto launch-helper native-pump renderer image demo demo-destroy test lint bench clean

setup: system-packages venv proto launch-helper native-pump renderer

# The launch helper bind-mounted into multinode jobs' containers (fuzz/substrate/launch/):
# static, since the image's libc is unknown.
LAUNCH_HELPER := fuzz/substrate/launch/bin/fuzz-launch
# The task server, PID 1 of a task array's sandbox (fuzz/substrate/monitor/sandbox.py): static too.
TASK_SERVER := fuzz/substrate/launch/bin/fuzz-tasks
launch-helper: $(LAUNCH_HELPER) $(TASK_SERVER)

$(TASK_SERVER): fuzz/substrate/launch/fuzz-tasks.c
	@mkdir -p $(@D)
	gcc -static -Os -s -Wall -Wextra -Werror -o $@ $<

$(LAUNCH_HELPER): fuzz/substrate/launch/fuzz-launch.c
	@mkdir -p $(@D)
	gcc -static -Os -s -Wall -Wextra -Werror -o $@ $<

# The direct path's pump in C (fuzz/rpc/native_pump.py loads it with ctypes), linked to the
# system's OpenSSL, the one Python's ssl module runs on.
NATIVE_PUMP := fuzz/rpc/bin/libfuzz-pump.so
native-pump: $(NATIVE_PUMP)

$(NATIVE_PUMP): fuzz/rpc/pump/fuzz-pump.c
	@mkdir -p $(@D)
	gcc -shared -fPIC -O2 -s -Wall -Wextra -Werror -o $@ $< -lssl -lcrypto

# The application-template renderer (fuzz/catalog/renderer/): Go's text/template with sprig,
# both from Debian (golang-go, golang-github-masterminds-sprig-dev), built offline in GOPATH
# mode against /usr/share/gocode.
RENDERER := fuzz/catalog/bin/fuzz-render
renderer: $(RENDERER)

$(RENDERER): fuzz/catalog/renderer/main.go
	@mkdir -p $(@D)
	GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= go build -trimpath -o $@ $<

system-packages:
	@scripts/install-system-packages.sh $(APT_PACKAGES)

venv: $(STAMPS)/venv

# Extra flags for pip: tests/e2e/test_newcomer_e2e.py sets up a fresh clone in a copy of
# a venv that has every dependency already, with "--no-index --no-deps --no-build-isolation".
PIP_FLAGS ?=

$(STAMPS)/venv: $(PYPROJECTS)
	@mkdir -p $(STAMPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install -q $(PIP_FLAGS) -e '.[dev]' -e 'state[$(STATE_EXTRAS)]' \
		$(addprefix -e ,$(filter-out . state,$(DISTRIBUTIONS)))
	@touch $@

proto: $(GENERATED)

fuzz/api/%_pb2.py: fuzz/api/%.proto $(STAMPS)/venv
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. $<

fuzz/api/orchestrator_pb2.py: fuzz/api/substrate.proto  # it imports substrate's messages

# The OCI image of `fuzz server` that deploy/kubernetes/ runs (deploy/image/image.yaml):
# Debian from mmdebstrap, packed by umoci, into build/image/fuzz-server (an OCI layout).
image: setup
	$(PY) -m fuzz.testing.server_image build/image/fuzz-server

demo: setup
	$(PY) scripts/demo.py

demo-destroy: setup
	$(PY) scripts/demo.py --destroy

lint: setup
	$(VENV)/bin/ruff check fuzz state providers tests bench scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: setup lint
	$(PY) -m pytest -q -n 3 --dist loadfile

bench: setup
	$(PY) bench/plan_scale.py
	$(PY) bench/substrate_start.py
	$(PY) bench/throughput.py
	$(PY) bench/offering_choice.py
	$(PY) bench/port_forward.py
	$(PY) bench/endpoints.py
	$(PY) bench/chaos.py
	$(PY) bench/fuzzfile_validate.py
	$(PY) bench/data_cache.py
	$(PY) bench/mpi.py
	$(PY) bench/app_render.py

clean:
	rm -rf $(VENV) $(STAMPS) fuzz/api/*_pb2*.py
