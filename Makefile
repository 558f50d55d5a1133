# wwws: make help
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Read VAR from the environment / command line, else from .env, else the default.
env_get = $(or $($(1)),$(shell sed -n 's/^[[:space:]]*$(1)=//p' .env 2>/dev/null | tail -n1),$(2))

export DOCKER_GID ?= $(shell stat -c %g /var/run/docker.sock 2>/dev/null)
export COMPOSE_PROJECT_NAME := $(call env_get,COMPOSE_PROJECT_NAME,wwws)
HTTP_PORT := $(call env_get,HTTP_PORT,80)
HTTPS_PORT := $(call env_get,HTTPS_PORT,443)
PROMETHEUS_PORT := $(call env_get,PROMETHEUS_PORT,9090)
export WWWS_PUBLIC_URL := $(call env_get,WWWS_PUBLIC_URL,https://localhost$(if $(filter 443,$(HTTPS_PORT)),,:$(HTTPS_PORT)))
export WWWS_APP_IMAGE := $(call env_get,WWWS_APP_IMAGE,wwws-app:dev)

# Prefix for commands that need the image names chosen by deploy/offline-images.sh.
IMAGES_ENV := deploy/build/images.env
WITH_IMAGES := set -a; [ ! -f $(IMAGES_ENV) ] || . ./$(IMAGES_ENV); set +a;
COMPOSE := $(WITH_IMAGES) docker compose

.PHONY: help provision images certs env up up-nginx rollout check down ps logs scale compose test test-ci lint check-rules unit e2e cluster requirements provision-bench swarm-up swarm-down swarm-ps local-swarm-up local-swarm-down

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9_-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

provision: ## install/start Docker Engine, Compose v2 and uv (idempotent)
	@bash deploy/provision.sh

images: ## choose public images or build offline stand-ins, then build the app image
	@bash deploy/offline-images.sh
	@$(WITH_IMAGES) t=$$(date +%s); py=$${WWWS_PYTHON_IMAGE:-python:3.11-slim-bookworm}; mkdir -p deploy/build; \
	  echo "[images] $(WWWS_APP_IMAGE): docker build FROM $$py (log: deploy/build/build-app.log)"; \
	  if docker build -f deploy/app/Dockerfile --build-arg PYTHON_IMAGE="$$py" --build-arg WWWS_PIP_OFFLINE="$${WWWS_PIP_OFFLINE:-0}" \
	       -t $(WWWS_APP_IMAGE) . >deploy/build/build-app.log 2>&1; \
	  then echo "[images] $(WWWS_APP_IMAGE): ready in $$(( $$(date +%s) - t ))s"; \
	  else tail -n 30 deploy/build/build-app.log; echo "[images] $(WWWS_APP_IMAGE): build failed" >&2; exit 1; fi

certs: ## create the local CA and the localhost certificate in deploy/certs (idempotent)
	@uv run --quiet --extra ops python -m tools.localca --quiet

env: ## create .env (random secrets) if missing; refresh its DOCKER_GID and image names
	@bash deploy/dotenv.sh

up: provision images certs env ## start the stack (docker compose up -d --wait), check it from outside, print the URLs
	@$(COMPOSE) up -d --wait --no-build
	@$(WITH_IMAGES) COMPOSE="docker compose" deploy/check.sh "$(WWWS_PUBLIC_URL)"
	@echo
	@echo "  wwws is up (project $(COMPOSE_PROJECT_NAME)):"
	@echo "    $(WWWS_PUBLIC_URL)/            landing page"
	@echo "    $(WWWS_PUBLIC_URL)/chat/  $(WWWS_PUBLIC_URL)/ticker/  $(WWWS_PUBLIC_URL)/telephony/"
	@echo "    http://127.0.0.1:$(PROMETHEUS_PORT)/            Prometheus (targets: /api/v1/targets, one per replica)"
	@echo "  TLS is signed by the local CA deploy/certs/ca.crt; e.g."
	@echo "    curl --cacert deploy/certs/ca.crt $(WWWS_PUBLIC_URL)/"
	@echo "  trust it in browsers: uv run --extra ops python -m tools.localca (prints how)"
	@echo "  scale: docker compose up -d --scale chat=3    stop: make down"

up-nginx: provision images certs env ## make up with nginx in front instead of Traefik (compose.nginx.yaml)
	@$(COMPOSE) -f compose.yaml -f compose.nginx.yaml up -d --wait --no-build
	@$(WITH_IMAGES) COMPOSE="docker compose -f compose.yaml -f compose.nginx.yaml" deploy/check.sh "$(WWWS_PUBLIC_URL)"
	@echo "  wwws is up behind nginx (project $(COMPOSE_PROJECT_NAME)): $(WWWS_PUBLIC_URL)/   stop: make down"

rollout: ## replace a service's replicas one at a time, without downtime: make rollout S=chat
	@test -n "$(S)" || { echo "usage: make rollout S=chat (or ticker, telephony, admin)"; exit 2; }
	@$(WITH_IMAGES) COMPOSE="docker compose" deploy/rollout.sh "$(S)"

check: ## is the stack usable? every container healthy AND the public URL answering (make up runs it)
	@$(WITH_IMAGES) COMPOSE="docker compose" deploy/check.sh "$(WWWS_PUBLIC_URL)"

down: ## stop and remove the stack (keeps the volumes; `make down V=1` removes them too)
	@$(COMPOSE) down --remove-orphans $(if $(V),-v)

ps: ## list the stack's containers
	@$(COMPOSE) ps

logs: ## follow the stack's logs (S=chat for one service)
	@$(COMPOSE) logs -f --tail=100 $(S)

scale: ## scale one service with the stack's settings: make scale S=chat N=3
	@$(COMPOSE) up -d --wait --no-build --scale $(S)=$(N)

compose: ## any docker compose command with the stack's settings: make compose ARGS="top chat"
	@$(COMPOSE) $(ARGS)

# Tests. PYTEST_ARGS passes options through, e.g. make test PYTEST_ARGS="-x -k chat".
# The bench harness has its own smoke (make bench-smoke): it needs the bench group.
PYTEST := $(WITH_IMAGES) uv run --extra ops pytest -p no:cacheprovider --ignore=tests/bench $(PYTEST_ARGS)

test: check-tools lint images check-rules certs ## run every test: unit, contract (memory + real Redis), e2e (real stack), browser
	@t=$$(date +%s); $(PYTEST); rc=$$?; echo "[test] finished in $$(( $$(date +%s) - t ))s"; exit $$rc

test-ci: provision-test test ## what .ci/run runs: provision a clean machine first, then `make test`

provision-test: ## provision for the tests: what `provision` does, plus Debian's Chromium
	@WWWS_WITH_BROWSER=1 bash deploy/provision.sh

# `make test` provisions nothing: it says what is missing and which command installs it.
check-tools:
	@missing=; command -v uv >/dev/null || missing="$$missing uv"; \
	  docker info >/dev/null 2>&1 || missing="$$missing docker-engine"; \
	  docker compose version >/dev/null 2>&1 || missing="$$missing compose-v2"; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then echo "[test] missing:$$missing; run 'make provision-test' (installs them) or 'make test-ci'" >&2; exit 1; fi

check-rules: ## promtool check + test of the Prometheus alert and recording rules (deploy/prometheus)
	@$(WITH_IMAGES) bash deploy/check-rules.sh

lint: ## ruff + mypy --strict on the package; the image's requirements match uv.lock
	@uv run --extra ops ruff check . && uv run --extra ops ruff format --check . && uv run --extra ops mypy
	@uv export --quiet --frozen --no-dev --no-emit-project --no-hashes | grep -v '^ *#' \
	  | diff -q - <(grep -v '^ *#' deploy/app/requirements.txt) >/dev/null \
	  || { echo "[lint] deploy/app/requirements.txt does not match uv.lock: run 'make requirements'" >&2; exit 1; }

requirements: ## regenerate the image's deploy/app/requirements.txt from uv.lock
	@uv export --quiet --frozen --no-dev --no-emit-project --no-hashes -o deploy/app/requirements.txt
	@echo "[requirements] deploy/app/requirements.txt written from uv.lock"

unit: ## fast tests: unit + contract on the memory backplane (no Docker, no browser)
	@uv run --extra ops pytest -p no:cacheprovider --ignore=tests/bench -m "not redis and not e2e and not faults and not browser and not cluster" $(PYTEST_ARGS)

e2e: provision images certs ## end-to-end tests against a real compose stack
	@$(PYTEST) -m e2e

cluster: provision images certs ## the Swarm tests alone: a real 3-node swarm on this machine (about 6 min)
	@$(PYTEST) -m cluster tests/cluster

# Swarm (README, "Running on several machines"). swarm-up deploys on the swarm of the engine
# docker talks to: run it on a manager, or with DOCKER_HOST=ssh://manager (or tcp://...).
swarm-up: images certs env ## deploy the stack on the current engine's swarm (docker stack deploy; WWWS_SCALER=1 for the autoscaler)
	@$(WITH_IMAGES) bash deploy/swarm/deploy.sh

swarm-down: ## remove the swarm stack (its secrets and configs go with it)
	@docker stack rm $${WWWS_STACK:-wwws}

swarm-ps: ## the swarm stack's tasks: which node runs what
	@docker stack ps --filter desired-state=running $${WWWS_STACK:-wwws}

local-swarm-up: images ## a 3-node swarm of Docker engines in containers on this machine, to try swarm-up (prints DOCKER_HOST)
	@$(WITH_IMAGES) bash deploy/swarm/local-cluster.sh up $${NODES:-3}

local-swarm-down: ## remove the local swarm's nodes
	@bash deploy/swarm/local-cluster.sh down

token: ## print a token for U (make token U=alice), signed with .env's WWWS_TOKEN_SECRET
	@uv run --quiet python -m tools.token $(or $(U),$(USER_ID),alice)

# Benchmarks (docs/benchmarks.md): not part of `make test`. BENCH_ARGS passes options,
# e.g. make bench BENCH_ARGS="--targets wwws-direct,naive-direct --scenarios fanout".
provision-bench: ## provision for the bench: what `provision` does, plus redis-server, Node.js and npm
	@WWWS_WITH_BENCH=1 bash deploy/provision.sh

bench: provision-bench certs ## measure wwws vs the naive floor and its peers in one run (<20 min); results in bench/results/latest
	@uv run --quiet --group bench python -m bench $(BENCH_ARGS)

bench-redis: ## how long Redis takes to come back after a restart, compose.yaml's persistence vs plain AOF (about 1 min)
	@$(WITH_IMAGES) uv run --extra ops python -m bench.redis_recovery $(ARGS)

bench-smoke: ## the bench harness at tiny scale (about two minutes): a check, not a measurement
	@uv run --quiet --group bench --extra ops pytest -p no:cacheprovider tests/bench $(PYTEST_ARGS)
