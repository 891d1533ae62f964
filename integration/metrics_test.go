package integration

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricsOf scrapes n's /metrics and returns each sample as
// "name{label=value,...}" -> value, for the labels other than cluster and
// member.
func metricsOf(t *testing.T, n *cluster.Node) (map[string]float64, error) {
	code, body, err := n.API(ctxT(t, 5*time.Second), "/metrics")
	if err != nil || code != 200 {
		return nil, fmt.Errorf("GET /metrics: %d %v", code, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.Metric {
			if strings.HasPrefix(name, "cifha_") {
				labels := map[string]string{}
				for _, l := range m.Label {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["cluster"] != n.ClusterName() || labels["member"] != n.Name {
					return nil, fmt.Errorf("%s: labels %v, want cluster=%q member=%q", name, labels, n.ClusterName(), n.Name)
				}
			}
			key := name
			for _, l := range m.Label {
				if l.GetName() != "cluster" && l.GetName() != "member" {
					key += fmt.Sprintf("{%s=%s}", l.GetName(), l.GetValue())
				}
			}
			switch {
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Histogram != nil:
				out[key+"_count"] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out, nil
}

// wantMetrics checks the given samples on n.
func wantMetrics(t *testing.T, n *cluster.Node, want map[string]float64) error {
	got, err := metricsOf(t, n)
	if err != nil {
		return err
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			return fmt.Errorf("%s: %s = %v (present %v), want %v", n.Name, k, g, ok, v)
		}
	}
	return nil
}
