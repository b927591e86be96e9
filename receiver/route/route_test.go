package route

import (
	"testing"

	"github.com/stretchr/testify/require"
	yaml "go.yaml.in/yaml/v2"
)

const tree = `
receiver: default
routes:
  - matchers: ['severity="critical"']
    receiver: oncall
    routes:
      - matchers: ['team="db"']
        receiver: db-oncall
        continue: true
      - matchers: ['team=~"db|storage"']
        receiver: storage-oncall
  - matchers: ['team="db"', 'severity=~"warning|info"']
    receiver: db-tickets
    continue: true
  - matchers: ['team="db"']
    receiver: db-chat
  - matchers: ['service!="", env!~"dev|test"']
    receiver: prod-services
  - matchers: ['{"utf8.label"="yes"}']
    receiver: utf8
`

func TestMatch(t *testing.T) {
	var c Config
	require.NoError(t, yaml.UnmarshalStrict([]byte(tree), &c))
	r, err := New(&c)
	require.NoError(t, err)
	cases := []struct {
		name   string
		labels map[string]string
		want   []string
	}{
		{"no match falls to root", map[string]string{"alertname": "X"}, []string{"default"}},
		{"critical", map[string]string{"severity": "critical"}, []string{"oncall"}},
		{"critical db: continue then next sibling", map[string]string{"severity": "critical", "team": "db"}, []string{"db-oncall", "storage-oncall"}},
		{"critical storage: regex", map[string]string{"severity": "critical", "team": "storage"}, []string{"storage-oncall"}},
		{"db warning continues to sibling", map[string]string{"severity": "warning", "team": "db"}, []string{"db-tickets", "db-chat"}},
		{"db error skips the regex route", map[string]string{"severity": "error", "team": "db"}, []string{"db-chat"}},
		{"regex is anchored", map[string]string{"severity": "warningX", "team": "db"}, []string{"db-chat"}},
		{"negative matchers", map[string]string{"service": "api", "env": "prod"}, []string{"prod-services"}},
		{"negative regex excludes", map[string]string{"service": "api", "env": "dev"}, []string{"default"}},
		{"utf-8 label name", map[string]string{"utf8.label": "yes"}, []string{"utf8"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, r.Match(tc.labels))
		})
	}
}

func TestChildInheritsReceiver(t *testing.T) {
	r, err := New(&Config{Receiver: "root", Routes: []*Config{{Matchers: []string{`a="1"`}}}})
	require.NoError(t, err)
	require.Equal(t, []string{"root"}, r.Match(map[string]string{"a": "1"}))
}

func TestErrors(t *testing.T) {
	_, err := New(&Config{Receiver: "r", Routes: []*Config{{Receiver: "x", Matchers: []string{`a=~"("`}}}})
	require.ErrorContains(t, err, "route.routes[0].matchers[0]")
	_, err = New(&Config{})
	require.ErrorContains(t, err, "must name a receiver")
	_, err = New(nil)
	require.Error(t, err)
}

func TestGuardedBy(t *testing.T) {
	r, err := New(&Config{Receiver: "default", Routes: []*Config{
		{Matchers: []string{`routing_key_name="alertmanager"`}, Receiver: "relay", Routes: []*Config{{Matchers: []string{`severity="critical"`}, Receiver: "page"}}},
		{Matchers: []string{`team="db"`}, Receiver: "page"},
		{Matchers: []string{`team="db"`}, Receiver: "tickets"},
	}})
	require.NoError(t, err)
	require.True(t, r.GuardedBy("relay", "routing_key_name"), "only under routing_key_name")
	require.False(t, r.GuardedBy("page", "routing_key_name"), "also reachable without it")
	require.False(t, r.GuardedBy("tickets", "routing_key_name"))
	require.False(t, r.GuardedBy("default", "routing_key_name"), "the root is open")
	require.False(t, r.GuardedBy("nowhere", "routing_key_name"), "a receiver no route names is not guarded")
}
