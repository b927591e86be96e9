package queue

// ackCommitter group-commits delivery outcomes (acks) on a lane of their
// own on PostgreSQL: at once, on a connection of their own. A call that
// reached its target but whose ack is not committed yet is made again
// after a kill -9; in the shared group commit an ack waited behind
// intake's queued batches (each inserting River jobs), so a crash repeated
// every call answered in the last batch or two.
//
// SQLite has one writer connection, so a lane of their own bought acks
// nothing there: an ack batch waited for the connection all the same, and
// intake's batches waited for the ack batches' commits (each its own
// fsync), 3 to 18 ms an intake batch while a queue drained (BENCHMARKS.md,
// "One writer's lanes"). There, intake's committer takes the acks waiting
// into the batch it gathers (commitLoop's also): an ack waits at most for
// the batch under way, as before, and shares its fsync.
func (s *Store) ackCommitter() { s.commitLoop(s.acks, nil) }
