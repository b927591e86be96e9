package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/alertmanager/matcher/compat"
	"github.com/prometheus/alertmanager/pkg/labels"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/alertfan/alertfan/receiver/config"
	"github.com/alertfan/alertfan/receiver/route"
	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/backlog"
)

// RoutesTestOptions are `alertfan routes test`'s inputs.
type RoutesTestOptions struct {
	ConfigFile string
	// Labels are name=value (value optionally double-quoted), as amtool's.
	Labels []string
	// Annotations are name=value; only --render shows their effect.
	Annotations []string
	// Status is firing (default) or resolved.
	Status string
	// AlertsFile is a preview body instead of Labels: an Alertmanager
	// webhook JSON or {"labels","annotations","status"}; "-" is stdin.
	AlertsFile string
	// Verify is a comma-separated receiver list; the set reached must
	// equal it, else ErrReceiversMismatch.
	Verify string
	Tree   bool
	Render bool
	// Online resolves Backlog names through the API (read-only).
	Online bool
	// Now is when the alerts start; zero is time.Now().
	Now time.Time
}

// UsageError is bad command-line input: `alertfan` exits 2 on it, as on a
// flag it does not know.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usage(format string, args ...any) error {
	return &UsageError{fmt.Errorf(format, args...)}
}

// ErrReceiversMismatch is returned when --verify.receivers differs from the
// receivers reached (exit 1, as amtool).
var ErrReceiversMismatch = errors.New("expected receivers did not match resolved receivers")

// RoutesTest prints, for each alert, the receivers it reaches as a comma
// list (like `amtool config routes test`), with --tree the route tree with
// its path marked, with --render each target's payload. It sends nothing.
// Errors: *UsageError for bad input, ErrReceiversMismatch, else the config's.
func RoutesTest(ctx context.Context, o RoutesTestOptions, w io.Writer) error {
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	src, alerts, err := routesTestAlerts(o, now)
	if err != nil {
		return err
	}
	cfg, err := config.Load(o.ConfigFile)
	if err != nil {
		return err
	}
	rt, err := buildRuntime(ctx, cfg, deps{
		limiters: sinks.NewLimiters(), logger: slog.New(slog.DiscardHandler),
		bmetrics: backlog.NewMetrics(prometheus.NewRegistry()), offline: !o.Online,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", o.ConfigFile, err)
	}
	var want []string
	if o.Verify != "" {
		for _, r := range strings.Split(o.Verify, ",") {
			if r = strings.TrimSpace(r); r != "" {
				want = append(want, r)
			}
		}
	}
	mismatch := false
	for _, a := range alerts {
		if o.Tree {
			fmt.Fprintln(w, "Routing tree (* on the path the labels take, ← where they end):")
			printTree(w, rt.router, a.Labels)
			fmt.Fprintln(w)
		}
		recv := rt.router.Match(a.Labels)
		line := strings.Join(recv, ",")
		if len(alerts) > 1 {
			line = formatLabels(a.Labels) + " " + line
		}
		fmt.Fprintln(w, line)
		if o.Verify != "" && !sameSet(want, recv) {
			mismatch = true
		}
	}
	if o.Render {
		for _, it := range rt.preview(ctx, src, alerts, now, o.Online) {
			fmt.Fprintln(w)
			printItem(w, it)
		}
	}
	if mismatch {
		fmt.Fprintln(w, "WARNING: Expected receivers did not match resolved receivers.")
		return ErrReceiversMismatch
	}
	return nil
}

// routesTestAlerts reads the alerts to test from the labels or the file.
func routesTestAlerts(o RoutesTestOptions, now time.Time) (sinks.Source, []sinks.Alert, error) {
	if o.AlertsFile != "" {
		if len(o.Labels) > 0 || len(o.Annotations) > 0 || o.Status != "" {
			return sinks.Source{}, nil, usage("give labels (and --annotation, --status) or --alerts.file, not both")
		}
		var b []byte
		var err error
		if o.AlertsFile == "-" {
			b, err = io.ReadAll(os.Stdin)
		} else {
			b, err = os.ReadFile(o.AlertsFile)
		}
		if err != nil {
			return sinks.Source{}, nil, usage("--alerts.file: %w", err)
		}
		src, alerts, err := decodePreview(b, now)
		if err != nil {
			return sinks.Source{}, nil, usage("--alerts.file %s: %w", o.AlertsFile, err)
		}
		return src, alerts, nil
	}
	if len(o.Labels) == 0 {
		return sinks.Source{}, nil, usage("no labels: give them as name=value (or --alerts.file)")
	}
	ls := map[string]string{}
	for _, l := range o.Labels {
		m, err := compat.Matcher(l, "cli")
		if err != nil {
			return sinks.Source{}, nil, usage("label %q: %w; want name=value", l, err)
		}
		if m.Type != labels.MatchEqual {
			return sinks.Source{}, nil, usage("label %q: want name=value (labels are not matchers)", l)
		}
		ls[m.Name] = m.Value
	}
	ann := map[string]string{}
	for _, s := range o.Annotations {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return sinks.Source{}, nil, usage("--annotation %q: want name=value", s)
		}
		if uq, err := strconv.Unquote(v); err == nil && strings.HasPrefix(v, `"`) {
			v = uq
		}
		ann[k] = v
	}
	src, alerts, err := synthesize(ls, ann, o.Status, now, "--")
	if err != nil {
		return sinks.Source{}, nil, usage("%w", err)
	}
	return src, alerts, nil
}

// sameSet compares receiver lists as sets: --verify.receivers names the
// receivers, not the order the tree reaches them in.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// printTree prints the whole route tree as amtool's `config routes`, with
// every node the labels pass through marked "*" and the nodes whose
// receivers they reach marked "←".
func printTree(w io.Writer, root *route.Route, lset map[string]string) {
	onPath, final := matchedNodes(root, lset)
	var walk func(r *route.Route, prefix string, last bool)
	walk = func(r *route.Route, prefix string, last bool) {
		branch, next := "├── ", "│   "
		if last {
			branch, next = "└── ", "    "
		}
		mark := "  "
		if onPath[r] {
			mark = "* "
		}
		slug := "default-route"
		if len(r.Matchers) > 0 {
			slug = r.Matchers.String()
		}
		if r.Continue {
			slug += "  continue: true"
		}
		slug += "  receiver: " + r.Receiver
		if final[r] {
			slug += "  ←"
		}
		fmt.Fprintln(w, prefix+branch+mark+slug)
		for i, c := range r.Routes {
			walk(c, prefix+next, i == len(r.Routes)-1)
		}
	}
	walk(root, "", true)
}

// matchedNodes marks the nodes the labels end at (route.Matches: whose
// receivers they reach) and every node on the way to one of them.
func matchedNodes(root *route.Route, lset map[string]string) (onPath, final map[*route.Route]bool) {
	onPath, final = map[*route.Route]bool{}, map[*route.Route]bool{}
	for _, n := range root.Matches(lset) {
		final[n] = true
	}
	var mark func(r *route.Route) bool
	mark = func(r *route.Route) bool {
		on := final[r]
		for _, c := range r.Routes {
			if mark(c) {
				on = true
			}
		}
		onPath[r] = on
		return on
	}
	mark(root)
	return onPath, final
}

// printItem prints one target's payload: PagerDuty's body byte for byte
// as POSTed (routing key as <secret>), Backlog's form one field a line,
// values Go-quoted so that line breaks and spaces show.
func printItem(w io.Writer, it PreviewItem) {
	head := fmt.Sprintf("%s (%s)", it.Target, it.Kind)
	if it.NamesResolved != nil && !*it.NamesResolved {
		head += " names not resolved; --online shows Backlog's ids"
	}
	fmt.Fprintln(w, head)
	switch {
	case it.Error != "":
		fmt.Fprintln(w, "ERROR:", it.Error)
		return
	case it.Skip != "":
		fmt.Fprintln(w, "no call:", it.Skip)
		return
	}
	fmt.Fprintln(w, it.Method, redactURL(it.URL))
	switch p := it.Payload.(type) {
	case json.RawMessage:
		fmt.Fprintln(w, string(p))
	case url.Values:
		for _, k := range formKeys(p) {
			for _, v := range p[k] {
				fmt.Fprintf(w, "%s=%s\n", k, strconv.Quote(v))
			}
		}
	}
}

// formKeys orders a form for reading: the fields of the head
// first, the description, then the rest (custom fields) by name.
func formKeys(f url.Values) []string {
	first := []string{"projectId", "issueTypeId", "priorityId", "assigneeId", "summary", "description"}
	var keys, rest []string
	for _, k := range first {
		if _, ok := f[k]; ok {
			keys = append(keys, k)
		}
	}
	for k := range f {
		if !slices.Contains(first, k) {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	return append(keys, rest...)
}
