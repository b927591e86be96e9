package queue

import (
	"context"
	"database/sql"
	"fmt"
)

// hotStatements are the group commit's per-item statements. On SQLite
// they are prepared once on the writer connection and reused by every
// batch: modernc parses a statement on each prepare, and preparing them
// per transaction was ~7% of intake's CPU. (pgx keeps its own statement
// cache per connection, so PostgreSQL prepares per batch as before.)
var hotStatements = []string{sqlUpsertState, sqlMarkPending, sqlGetAlertSQLite, sqlUpsertAlertSQLite, sqlInsertAlertSQLite, sqlKeyTargets, sqlAck, sqlInsertHistory, sqlAlertRowid}

// prepareHot prepares hotStatements on the SQLite writer. It must run
// before the committer starts: the writer is the pool's only connection,
// and a prepare on the pool would wait for a transaction holding it.
func (s *Store) prepareHot(ctx context.Context) error {
	if s.dialect != dialectSQLite {
		return nil
	}
	s.prepared = make(map[string]*sql.Stmt, len(hotStatements))
	for _, q := range hotStatements {
		st, err := s.db.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("queue: prepare: %w", err)
		}
		s.prepared[q] = st
	}
	return nil
}

// txStmt returns q prepared for tx: the statement prepared once on the
// writer when q is one of them (database/sql reuses it on the same
// connection, and prepares it again on a new one), else prepared in tx.
func (b *batch) txStmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := b.s.prepared[q]; ok {
		return b.tx.StmtContext(ctx, st), nil
	}
	return b.tx.PrepareContext(ctx, b.s.rebind(q))
}
