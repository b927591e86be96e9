package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestExampleConfigLoads(t *testing.T) {
	cfg, err := Load("../../config.example.yml")
	require.NoError(t, err)
	require.Equal(t, DriverSQLite, cfg.Storage.Driver)
	require.Equal(t, "data/alertfan.db", cfg.Storage.Path)
	require.EqualValues(t, 4<<20, cfg.Intake.MaxBodyBytes)
	require.Len(t, cfg.Receivers, 5)
	require.Equal(t, "oncall-and-ticket", cfg.Receivers[3].Name)
	pd := cfg.Receivers[3].PagerdutyConfigs[0]
	require.EqualValues(t, "DEM0R0UT1NGKEY000000000000000001", pd.RoutingKey, "routing_key_file is read relative to the config file")
	require.EqualValues(t, "AMPAGERDUTYKEY000000000000000001", cfg.Intake.PagerDuty.RoutingKeys["alertmanager"])
	require.Equal(t, "alert", pd.Mode)
	require.Equal(t, 120, pd.RateLimitPerMinute)
	require.True(t, pd.SendResolved)
	require.Contains(t, pd.Details, "num_firing", "Alertmanager's default details apply")
	require.Equal(t, "error", pd.SeverityFallback)
	require.True(t, pd.Explicit("severity"))
	require.False(t, pd.Explicit("description"), "defaults fit the input")
	bl := cfg.Receivers[3].BacklogConfigs[0]
	require.Equal(t, "close", bl.OnResolved)
	require.Equal(t, time.Hour, time.Duration(bl.ReopenWithin))
}

const minimal = `
route:
  receiver: r
receivers:
  - name: r
`

func TestDefaults(t *testing.T) {
	cfg, err := Parse([]byte(minimal), ".")
	require.NoError(t, err)
	require.Equal(t, DefaultStorage, cfg.Storage)
	require.Equal(t, DefaultIntake.MaxBodyBytes, cfg.Intake.MaxBodyBytes)
	require.Equal(t, DefaultDelivery, cfg.Delivery)
}

func TestSecretFilesAndRedaction(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "key"), []byte("R0UT1NGKEYFROMFILE00000000000001\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "token"), []byte("s3cret-token\n"), 0o600))
	file := filepath.Join(dir, "c.yml")
	require.NoError(t, os.WriteFile(file, []byte(`
intake:
  bearer_token_file: token
route:
  receiver: r
receivers:
  - name: r
    pagerduty_configs:
      - routing_key_file: key
`), 0o600))
	cfg, err := Load(file)
	require.NoError(t, err)
	require.EqualValues(t, "R0UT1NGKEYFROMFILE00000000000001", cfg.Receivers[0].PagerdutyConfigs[0].RoutingKey)
	require.EqualValues(t, "s3cret-token", cfg.Intake.BearerToken)
	s := cfg.String()
	require.NotContains(t, s, "R0UT1NGKEYFROMFILE")
	require.NotContains(t, s, "s3cret-token")
	require.Contains(t, s, "<secret>")
}

func TestBadConfigs(t *testing.T) {
	pd := func(extra string) string {
		return `
route:
  receiver: r
receivers:
  - name: r
    pagerduty_configs:
      - routing_key: 0123456789abcdef0123456789abcdef
` + extra
	}
	cases := []struct {
		name, yaml, want string
	}{
		{"empty", ``, "empty configuration"},
		{"intake key not 32 characters", "intake:\n  pagerduty:\n    routing_keys:\n      team-db: team-db-key\n" + pd(""), "intake.pagerduty.routing_keys.team-db: routing keys are 32 characters (as PagerDuty's), this one has 11"},
		{"one intake key under two names", "intake:\n  pagerduty:\n    routing_keys:\n      team-db: R0UT1NGKEY0000000000000000000001\n      team-web: R0UT1NGKEY0000000000000000000001\n" + pd(""), `intake.pagerduty.routing_keys: "team-db" and "team-web" hold the same routing key`},
		{"unknown top-level key", minimal + "bogus: 1\n", "field bogus not found"},
		{"unknown key with line", "route:\n  receiver: r\n  recever: x\nreceivers:\n  - name: r\n", "line 3: field recever not found"},
		{"unknown pagerduty key", pd("        routng_key: x\n"), "field routng_key not found"},
		{"no route", "receivers:\n  - name: r\n", "route: missing"},
		{"root without receiver", "route: {}\nreceivers:\n  - name: r\n", "root route must name a receiver"},
		{"root with matchers", "route:\n  receiver: r\n  matchers: ['a=\"b\"']\nreceivers:\n  - name: r\n", "must not have matchers"},
		{"unknown receiver", "route:\n  receiver: r\n  routes:\n    - receiver: nope\nreceivers:\n  - name: r\n", `route.routes[0]: receiver "nope" does not exist (receivers: r)`},
		{"bad matcher", "route:\n  receiver: r\n  routes:\n    - receiver: r\n      matchers: ['sev=~\"(\"']\nreceivers:\n  - name: r\n", "route.routes[0].matchers[0]"},
		{"duplicate receiver", "route:\n  receiver: r\nreceivers:\n  - name: r\n  - name: r\n", `"r" is defined twice`},
		{"receiver without name", "route:\n  receiver: r\nreceivers:\n  - {}\n", "has no name"},
		{"bad storage driver", minimal + "storage:\n  driver: mysql\n", `storage.driver: "mysql" is not one of`},
		{"postgres without dsn", minimal + "storage:\n  driver: postgres\n", "storage.dsn or storage.dsn_file: required"},
		{"sqlite with dsn", minimal + "storage:\n  driver: sqlite\n  dsn: postgres://x\n", "only for driver postgres"},
		{"zero body limit", minimal + "intake:\n  max_body_bytes: -1\n", "intake.max_body_bytes: must be > 0"},
		{"rescue shorter than timeout", minimal + "delivery:\n  job_timeout: 1m\n  rescue_after: 30s\n", "delivery.rescue_after"},
		{"pd without key", "route:\n  receiver: r\nreceivers:\n  - name: r\n    pagerduty_configs:\n      - url: http://x\n", "routing_key or routing_key_file is required"},
		{"pd both keys", pd("        routing_key_file: k\n"), "at most one of routing_key and routing_key_file"},
		{"pd bad mode", pd("        mode: incident\n"), `mode: "incident" is not one of`},
		{"pd bad url", pd("        url: ftp://x\n"), `url: "ftp://x" is not an absolute http(s) URL`},
		{"pd bad rate", pd("        rate_limit_per_minute: 0\n"), "rate_limit_per_minute: must be > 0"},
		{"pd incident_link relative", pd("        incident_link: /incidents?q={dedup_key}\n"), `incident_link: "/incidents?q={dedup_key}" is not an absolute http(s) URL`},
		{"pd incident_link without placeholder", pd("        incident_link: https://acme.pagerduty.com/incidents\n"), "incident_link: \"https://acme.pagerduty.com/incidents\" has no {dedup_key} placeholder"},
		{"pd wrong type", pd("        rate_limit_per_minute: many\n"), "cannot unmarshal"},
		{"pd missing key file", "route:\n  receiver: r\nreceivers:\n  - name: r\n    pagerduty_configs:\n      - routing_key_file: /nonexistent/key\n", `receivers "r": pagerduty_configs[0].routing_key_file`},
		{"backlog no project", "route:\n  receiver: r\nreceivers:\n  - name: r\n    backlog_configs:\n      - api_url: https://x.backlog.com\n        api_key: k\n        issue_type: Bug\n", "project: required"},
		{"backlog bad on_resolved", "route:\n  receiver: r\nreceivers:\n  - name: r\n    backlog_configs:\n      - api_url: https://x.backlog.com\n        api_key: k\n        project: OPS\n        issue_type: Bug\n        on_resolved: delete\n", `on_resolved: "delete" is not one of`},
		{"backlog url with path", "route:\n  receiver: r\nreceivers:\n  - name: r\n    backlog_configs:\n      - api_url: https://x.backlog.com/api/v2\n        api_key: k\n        project: OPS\n        issue_type: Bug\n", "without a path"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), t.TempDir())
			require.Error(t, err)
			require.Contains(t, err.Error(), c.want)
		})
	}
}

func TestErrorsNameTheFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yml")
	require.NoError(t, os.WriteFile(file, []byte("route:\n  receiver: r\n  nope: 1\nreceivers:\n  - name: r\n"), 0o600))
	_, err := Load(file)
	require.Error(t, err)
	require.True(t, strings.HasPrefix(err.Error(), file+": "), err.Error())
	require.Contains(t, err.Error(), "line 3")
}

func TestSecretNeverInErrors(t *testing.T) {
	_, err := Parse([]byte(`
route:
  receiver: r
receivers:
  - name: r
    pagerduty_configs:
      - routing_key: SUPERSECRETKEY000000000000000000
        mode: nope
`), ".")
	require.Error(t, err)
	require.NotContains(t, err.Error(), "SUPERSECRETKEY")
}

// A routing key PagerDuty refuses for every event is refused at load,
// inline or from routing_key_file (naming the file), and never quoted.
func TestSecretFileByteOrderMark(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "key"), []byte("\ufeff0123456789abcdef0123456789abcdef\r\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bom"), []byte("\ufeff\n"), 0o600))
	c, err := Parse([]byte("route:\n  receiver: r\nreceivers:\n  - name: r\n    pagerduty_configs:\n      - routing_key_file: key\n"), dir)
	require.NoError(t, err)
	require.EqualValues(t, "0123456789abcdef0123456789abcdef", c.Receivers[0].PagerdutyConfigs[0].RoutingKey)
	_, err = Parse([]byte("intake:\n  bearer_token_file: bom\nroute:\n  receiver: r\nreceivers:\n  - name: r\n"), dir)
	require.ErrorContains(t, err, "intake.bearer_token_file: file bom is empty")
}

// A token list line that would be a token nobody meant (NUL padding, a
// comment) is refused at load, by its line, never quoted.
func TestIntakeTokenListOddLines(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ content, want string }{
		{"TOKSECRETpad1\n\x00\x00\x00\x00\n", "intake.bearer_token_file: tokens: line 2: a token must not contain control characters"},
		{"# rotated 2026-12-01\nTOKSECRETnew\n", `intake.bearer_token_file: tokens: line 1 starts with "#"`},
		{"TOKSECRET\x07bell\n", "line 1: a token must not contain control characters"},
	} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "tokens"), []byte(c.content), 0o600))
		_, err := Parse([]byte("intake:\n  bearer_token_file: tokens\nroute:\n  receiver: r\nreceivers:\n  - name: r\n"), dir)
		require.ErrorContains(t, err, c.want)
		require.NotContains(t, err.Error(), "TOKSECRET")
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokens"), []byte("TOKSECRETold\r\n\r\n  TOKSECRETnew\t\n"), 0o600))
	_, err := Parse([]byte("intake:\n  bearer_token_file: tokens\nroute:\n  receiver: r\nreceivers:\n  - name: r\n"), dir)
	require.NoError(t, err, "CRLF, blank lines and surrounding blanks are fine")
}

func TestRoutingKeyPagerDutyRefusesIsAConfigError(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "key"), []byte("e+23rschqsESqk9Q6_-g\n"), 0o600))
	file := filepath.Join(dir, "alertfan.yml")
	for _, c := range []struct{ key, want string }{
		{"routing_key_file: key", `receivers "r": pagerduty_configs[0].routing_key_file: key: PagerDuty routing keys are 32 characters, this one has 20`},
		{"routing_key: 'e+23rschqsESqk9Q6_-g0123456789ab'", `routing_key: PagerDuty routing keys hold only letters and digits, this one has '+' at position 2`},
	} {
		require.NoError(t, os.WriteFile(file, []byte("route:\n  receiver: r\nreceivers:\n  - name: r\n    pagerduty_configs:\n      - "+c.key+"\n"), 0o600))
		_, err := Load(file)
		require.ErrorContains(t, err, c.want)
		require.ErrorContains(t, err, "routing_key")
		require.NotContains(t, err.Error(), "e+23rschq")
	}
}

// A connection string pgx cannot parse is never quoted: pgx redacts the
// password only as far as its own patterns reach (a backslash-escaped
// space or a missing quote defeat them).
func TestDSNErrorNeverQuotesTheString(t *testing.T) {
	for _, dsn := range []string{
		`host=127.0.0.1 user=postgres password=Sup3r\ SecretPW dbname=x sslmode=bogus`,
		`host=127.0.0.1 user=postgres password='Sup3r SecretPW sslmode=disable`,
		`postgres://postgres:Sup3rSecretPW@127.0.0.1:5432/x?sslmode=bogus`,
	} {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "dsn"), []byte(dsn), 0o600))
		_, err := Parse([]byte("storage:\n  driver: postgres\n  dsn_file: dsn\nroute:\n  receiver: r\nreceivers:\n  - name: r\n"), dir)
		require.ErrorContains(t, err, "storage.dsn_file: not a valid PostgreSQL connection string")
		require.NotContains(t, err.Error(), "SecretPW", dsn)
		require.NotContains(t, err.Error(), "Sup3r", dsn)
	}
}

// A value its own validation refuses (a duration, a mode, a severity) is
// named with its line and path, which yaml.v2 does not give: a config has
// twenty duration keys.
func TestValidationErrorsNameTheLine(t *testing.T) {
	base := "route:\n  receiver: r\nreceivers:\n  - name: r\n    pagerduty_configs:\n      - routing_key: 0123456789abcdef0123456789abcdef\n"
	cases := []struct {
		name, yaml, want string
	}{
		{"delivery duration", "delivery:\n  max_backoff: 5parsecs\n" + base, `line 2: delivery.max_backoff: `},
		{"retention duration", "storage:\n  retention:\n    history: 7days\n" + base, `line 3: storage.retention.history: `},
		{"receiver duration", base + "        timeout: 10\n", `line 7: receivers[0].pagerduty_configs[0].timeout: not a valid duration string: "10"`},
		{"backlog duration", base + "    backlog_configs:\n      - api_url: https://x.backlog.com\n        api_key: k\n        project: OPS\n        issue_type: Bug\n        reopen_within: 1hour\n", `line 12: receivers[0].backlog_configs[0].reopen_within: `},
		{"pagerduty mode, on its own line", base + "        send_resolved: true\n        mode: nope\n", `line 8: receivers[0].pagerduty_configs[0]: mode: "nope"`},
		{"a value that says line", base + "        severity: 'pipeline broken'\n", `line 7: receivers[0].pagerduty_configs[0]: severity: "pipeline broken"`},
		{"a second document", base + "---\ndelivery:\n  min_backoff: 1s\n", `line 7: a second YAML document`},
		{"a matcher", "route:\n  receiver: r\n  routes:\n    - receiver: r\n      matchers: ['a=~\"(\"']\nreceivers:\n  - name: r\n", `line 5: route.routes[0].matchers[0]: `},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "alertfan.yml")
			require.NoError(t, os.WriteFile(file, []byte(c.yaml), 0o600))
			_, err := Load(file)
			require.ErrorContains(t, err, file+": "+c.want)
		})
	}
}
