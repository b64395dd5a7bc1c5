// promrules checks Prometheus rule files as `promtool check rules` does (group structure, PromQL expressions,
// label and annotation templates; duplicate rules are a warning), using Prometheus's own rulefmt package.
// Built instead of promtool itself, whose cold build (every service-discovery plugin, the Kubernetes client
// and cloud SDKs) takes about 16 minutes on two cores; this one needs a small part of Prometheus.
//
// Unlike promtool, an error about a rule's expression is followed by the expression itself.
//
// Usage: promrules check FILE... ; exit 0 when every file is valid, 1 otherwise (the errors on stderr).
package main

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

func main() {
	if len(os.Args) < 3 || os.Args[1] != "check" {
		fmt.Fprintln(os.Stderr, "usage: promrules check FILE...")
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{}) // promtool's defaults: no experimental functions
	failed := false
	for _, file := range os.Args[2:] {
		fmt.Println("Checking", file)
		groups, errs := rulefmt.ParseFile(file, false, model.UTF8Validation, p, nil)
		if errs != nil {
			failed = true
			fmt.Fprintln(os.Stderr, "  FAILED:")
			for _, err := range errs {
				fmt.Fprintln(os.Stderr, err.Error()+expression(file, err))
			}
			fmt.Println()
			continue
		}
		n := 0
		for _, g := range groups.Groups {
			n += len(g.Rules)
		}
		for _, d := range duplicates(groups.Groups) {
			fmt.Fprintf(os.Stderr, "  WARNING: duplicate rule %s (might cause inconsistency while recording expressions)\n", d)
		}
		fmt.Printf("  SUCCESS: %d rules found\n\n", n)
	}
	if failed {
		os.Exit(1)
	}
}

// duplicates: rules with the same alert or record name and the same labels (the group's, then the rule's).
func duplicates(groups []rulefmt.RuleGroup) []string {
	seen := map[string]int{}
	var found []string
	for _, g := range groups {
		for _, r := range g.Rules {
			labels := maps.Clone(g.Labels)
			if labels == nil {
				labels = map[string]string{}
			}
			maps.Copy(labels, r.Labels)
			parts := []string{r.Alert + r.Record}
			for _, name := range slices.Sorted(maps.Keys(labels)) {
				parts = append(parts, fmt.Sprintf("%s=%q", name, labels[name]))
			}
			key := strings.Join(parts, " ")
			if seen[key]++; seen[key] == 2 {
				found = append(found, key)
			}
		}
	}
	return found
}

// expression: for an error about a rule's PromQL, "\n  expr: " and that rule's expression as the file has it.
func expression(file string, err error) string {
	var ruleErr *rulefmt.Error
	if !errors.As(err, &ruleErr) || !strings.Contains(err.Error(), "expression") {
		return ""
	}
	content, readErr := os.ReadFile(file)
	var groups rulefmt.RuleGroups
	if readErr != nil || yaml.Unmarshal(content, &groups) != nil {
		return ""
	}
	for _, g := range groups.Groups {
		if g.Name == ruleErr.Group && ruleErr.Rule >= 1 && ruleErr.Rule <= len(g.Rules) {
			return "\n  expr: " + g.Rules[ruleErr.Rule-1].Expr
		}
	}
	return ""
}
