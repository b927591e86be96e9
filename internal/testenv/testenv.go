// Package testenv gives tests the outside parts they need — a fresh
// PostgreSQL database, a binary on PATH — and decides what happens when a
// part is missing: skip with a message, or fail when ALERTFAN_REQUIRE_ALL=1
// (CI), so that CI never passes by skipping.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"os/exec"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// RequireAll reports whether missing parts are failures.
func RequireAll() bool { return os.Getenv("ALERTFAN_REQUIRE_ALL") == "1" }

// Missing skips the test, or fails it under ALERTFAN_REQUIRE_ALL=1.
func Missing(t testing.TB, what string) {
	t.Helper()
	if RequireAll() {
		t.Fatalf("%s (ALERTFAN_REQUIRE_ALL=1, so this is a failure, not a skip)", what)
	}
	t.Skipf("%s; skipping", what)
}

// Binary returns the path of a binary on PATH or at one of the fallbacks.
func Binary(t testing.TB, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	Missing(t, "none of "+joinNames(names)+" is installed")
	return ""
}

func joinNames(ns []string) string {
	s := ""
	for i, n := range ns {
		if i > 0 {
			s += ", "
		}
		s += n
	}
	return s
}

// PostgresDSN creates a database of its own for the test and returns its
// DSN; the database is dropped when the test ends.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv("ALERTFAN_TEST_POSTGRES_DSN")
	if base == "" {
		Missing(t, "ALERTFAN_TEST_POSTGRES_DSN is not set")
		return ""
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("open postgres: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		admin.Close()
		Missing(t, "PostgreSQL at ALERTFAN_TEST_POSTGRES_DSN does not answer: "+err.Error())
		return ""
	}
	b := make([]byte, 6)
	rand.Read(b) //nolint:errcheck
	name := "alertfan_t_" + hex.EncodeToString(b)
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		admin.Close()
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`) //nolint:errcheck
		admin.Close()
	})
	return withDatabase(t, base, name)
}

func withDatabase(t testing.TB, dsn, db string) string {
	u, err := url.Parse(dsn)
	if err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + db
		return u.String()
	}
	// key=value form
	return dsn + " dbname=" + db
}
