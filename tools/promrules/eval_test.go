package main

// `make promrules` also builds this file's test binary as promql-eval: Prometheus's own PromQL engine running a
// promqltest script (load series, then `eval instant at T EXPR` with the result expected), so alert
// expressions can be checked against series shaped as kubepay exports them, without promtool's rules engine
// (whose imports bring the cloud SDKs).
//
// Usage: PROMQL_SCRIPT=FILE promql-eval -test.run TestScript ; exit 0 when every eval matches.

import (
	"os"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/promqltest"
)

func TestScript(t *testing.T) {
	path := os.Getenv("PROMQL_SCRIPT")
	if path == "" {
		t.Fatal("PROMQL_SCRIPT names no script")
	}
	script, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Prometheus's default lookback: a series stops counting 5 minutes after its last sample.
	engine := promqltest.NewTestEngine(t, false, 5*time.Minute, promqltest.DefaultMaxSamplesPerQuery)
	promqltest.RunTest(t, string(script), engine)
}
