// Package route owns the route tree: which receivers an alert's labels
// reach. It matches like Alertmanager's dispatcher (depth-first, first match
// wins unless `continue`), with Alertmanager's own matcher parser so that
// matchers can be pasted from an Alertmanager config.
package route

import (
	"errors"
	"fmt"

	"github.com/prometheus/alertmanager/featurecontrol"
	"github.com/prometheus/alertmanager/matcher/compat"
	"github.com/prometheus/alertmanager/pkg/labels"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"
)

// Alertmanager's default since v0.27 is the UTF-8 parser that falls back to
// the classic one; the package's own default is classic, so pick the mode an
// Alertmanager user's pasted matchers were written for.
func init() {
	compat.InitFromFlags(promslog.NewNopLogger(), featurecontrol.NoopFlags{})
}

// Config is one node of the route tree as written in YAML.
type Config struct {
	Receiver string    `yaml:"receiver,omitempty"`
	Matchers []string  `yaml:"matchers,omitempty"`
	Continue bool      `yaml:"continue,omitempty"`
	Routes   []*Config `yaml:"routes,omitempty"`
}

// Route is a compiled node.
type Route struct {
	Receiver string
	Matchers labels.Matchers
	Continue bool
	Routes   []*Route
	// Path names the node in errors and tools: "route.routes[1].routes[0]".
	Path string
}

// New compiles a tree. The root must name a receiver and has no matchers;
// children inherit their parent's receiver when they name none.
func New(c *Config) (*Route, error) {
	if c == nil {
		return nil, errors.New("route: missing")
	}
	if c.Receiver == "" {
		return nil, errors.New("route: the root route must name a receiver")
	}
	if len(c.Matchers) > 0 {
		return nil, errors.New("route: the root route must not have matchers (it matches every alert)")
	}
	if c.Continue {
		return nil, errors.New("route: the root route cannot have continue set")
	}
	return compile(c, "", "route")
}

func compile(c *Config, parentReceiver, path string) (*Route, error) {
	if c == nil {
		return nil, fmt.Errorf("%s: empty route", path)
	}
	r := &Route{Receiver: c.Receiver, Continue: c.Continue, Path: path}
	if r.Receiver == "" {
		r.Receiver = parentReceiver
	}
	for i, s := range c.Matchers {
		ms, err := compat.Matchers(s, "config")
		if err != nil {
			return nil, fmt.Errorf("%s.matchers[%d]: %q: %w", path, i, s, err)
		}
		r.Matchers = append(r.Matchers, ms...)
	}
	for i, child := range c.Routes {
		cr, err := compile(child, r.Receiver, fmt.Sprintf("%s.routes[%d]", path, i))
		if err != nil {
			return nil, err
		}
		r.Routes = append(r.Routes, cr)
	}
	return r, nil
}

// Match returns the receivers the label set reaches, in tree order and
// without repeats.
func (r *Route) Match(lset map[string]string) []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range r.Matches(lset) {
		if !seen[n.Receiver] {
			seen[n.Receiver] = true
			out = append(out, n.Receiver)
		}
	}
	return out
}

// Matches returns the nodes the label set ends at, in tree order (several
// with continue), each with its Path; Match is their receivers.
func (r *Route) Matches(lset map[string]string) []*Route {
	return r.match(LabelSet(lset))
}

// LabelSet is lset as Alertmanager's matchers take it.
func LabelSet(lset map[string]string) model.LabelSet {
	ls := make(model.LabelSet, len(lset))
	for k, v := range lset {
		ls[model.LabelName(k)] = model.LabelValue(v)
	}
	return ls
}

func (r *Route) match(ls model.LabelSet) []*Route {
	if !r.Matchers.Matches(ls) {
		return nil
	}
	var all []*Route
	for _, child := range r.Routes {
		m := child.match(ls)
		all = append(all, m...)
		if len(m) > 0 && !child.Continue {
			break
		}
	}
	if len(all) == 0 {
		all = append(all, r)
	}
	return all
}

// Walk calls fn for every node, parents first.
func (r *Route) Walk(fn func(*Route)) {
	fn(r)
	for _, c := range r.Routes {
		c.Walk(fn)
	}
}

// GuardedBy reports whether every route that names receiver requires,
// itself or through a parent, a matcher on one of the labels: a receiver
// meant only for alerts that carry a label alertfan derives from
// authentication. The root's receiver is never guarded.
func (r *Route) GuardedBy(receiver string, labels ...string) bool {
	found, open := false, false
	var walk func(n *Route, guarded bool)
	walk = func(n *Route, guarded bool) {
		for _, m := range n.Matchers {
			for _, l := range labels {
				if m.Name == l {
					guarded = true
				}
			}
		}
		if n.Receiver == receiver {
			found = true
			if !guarded {
				open = true
			}
		}
		for _, c := range n.Routes {
			walk(c, guarded)
		}
	}
	walk(r, false)
	return found && !open
}
