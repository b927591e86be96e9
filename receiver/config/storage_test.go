package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPostgresStorageChecks: the DSN is validated when the config loads
// (so check-config catches it), the error names the field and never holds
// the password; the pool size is settable and checked.
func TestPostgresStorageChecks(t *testing.T) {
	dir := t.TempDir()
	tail := "route:\n  receiver: r\nreceivers:\n  - name: r\n"
	cases := []struct {
		name, storage, dsnFile, err string
	}{
		{"url", "  dsn: postgres://alertfan:pw-1@db:5432/alertfan?sslmode=disable\n", "", ""},
		{"key=value", "  dsn: host=db user=alertfan password=pw-1 dbname=alertfan\n", "", ""},
		{"pool size", "  dsn: postgres://db/alertfan\n  max_connections: 12\n", "", ""},
		{"bad port", "  dsn: postgres://alertfan:pw-1@db:notaport/alertfan\n", "", "storage.dsn: not a valid PostgreSQL connection string"},
		{"bad scheme in file", "  dsn_file: dsn\n", "mysql://alertfan:pw-1@db/x%zz", "storage.dsn_file: not a valid PostgreSQL connection string"},
		{"pool too small", "  dsn: postgres://db/alertfan\n  max_connections: 2\n", "", "storage.max_connections: must be 0 (default) or at least 4"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.dsnFile != "" {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "dsn"), []byte(c.dsnFile), 0o600))
			}
			cfg, err := Parse([]byte("storage:\n  driver: postgres\n"+c.storage+tail), dir)
			if c.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, c.err)
			require.NotContains(t, err.Error(), "pw-1", "the password never appears in an error")
			_ = cfg
		})
	}
	_, err := Parse([]byte("storage:\n  driver: sqlite\n  path: x.db\n  max_connections: 8\n"+tail), dir)
	require.ErrorContains(t, err, "storage.max_connections: only for driver postgres")
}
