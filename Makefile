# Tool versions are pinned here; `make tools` installs them into .bin/.
BUF_VERSION            := v1.75.0
PROTOC_GEN_GO_VERSION  := v1.36.12
PROTOC_GEN_GRPC_VERSION:= v1.6.2
STATICCHECK_VERSION    := v0.8.2

BIN := $(CURDIR)/.bin
GO  ?= go
TEST_TIMEOUT ?= 15m

.PHONY: all build test integ bench verify proto tools demo scenario clean

all: build

build:
	$(GO) build -o $(BIN)/labfed ./cmd/labfed

## test: unit, cluster and multi-process tests with the race detector.
test:
	$(GO) test -race -timeout $(TEST_TIMEOUT) -count=1 ./...

## integ: the longer fault-injection runs.
integ:
	LABFED_INTEG=1 $(GO) test -race -timeout 60m -count=1 ./...

## bench: benchmarks; compare runs with benchstat.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s -count 5 ./... | tee bench.txt

demo: build
	$(BIN)/labfed demo --dir $${DEMO_DIR:-$(CURDIR)/.demo}

scenario: build
	$(BIN)/labfed demo --dir $${DEMO_DIR:-$(CURDIR)/.demo} --scenario

tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/staticcheck

$(BIN)/buf:
	GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GRPC_VERSION)
$(BIN)/staticcheck:
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

## proto: regenerate the committed Go code from proto/.
proto: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc
	$(BIN)/buf lint
	$(BIN)/buf generate

## verify: formatting, vet, staticcheck, module tidiness, generated code.
verify: tools
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(BIN)/staticcheck ./...
	@cp go.mod /tmp/labfed-go.mod.bak; cp go.sum /tmp/labfed-go.sum.bak; \
	  $(GO) mod tidy; \
	  if ! git diff --quiet -- go.mod go.sum; then echo "go mod tidy changed go.mod/go.sum; run it and commit"; cp /tmp/labfed-go.mod.bak go.mod; cp /tmp/labfed-go.sum.bak go.sum; exit 1; fi
	@$(MAKE) --no-print-directory proto
	@if ! git diff --quiet -- proto; then echo "generated code in proto/ is stale; run make proto and commit"; git diff --stat -- proto; exit 1; fi

clean:
	rm -rf $(BIN) .demo bench.txt
