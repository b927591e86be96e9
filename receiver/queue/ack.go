package queue

// ackCommitter group-commits delivery outcomes (acks) on a lane of their
// own. A call that reached its target but whose ack is not committed yet is
// made again after a kill -9; in the shared group commit an ack waited
// behind intake's batches (each inserting River jobs), so a crash repeated
// every call answered in the last batch or two. Here acks batch only with
// acks: on PostgreSQL on a connection of their own, at once; on SQLite the
// ack batch waits for the one writer connection beside intake's committer
// and River's own queries, and database/sql hands a released connection
// to one of its waiters chosen at random (Go 1.23 and later), so an ack
// waits for a few of those, milliseconds, not for a queue of intake
// batches.
func (s *Store) ackCommitter() { s.commitLoop(s.acks) }
