package queue

// ackCommitter group-commits delivery outcomes (acks) on a lane of their
// own. A call that reached its target but whose ack is not committed yet is
// made again after a kill -9; in the shared group commit an ack waited
// behind intake's batches (each inserting River jobs), so a crash repeated
// every call answered in the last batch or two. Here acks batch only with
// acks: on PostgreSQL on a connection of their own, at once; on SQLite the
// one writer connection goes to the waiting ack batch as soon as the
// current batch commits (database/sql hands a released connection to the
// first waiter), so an ack waits for at most one other batch.
func (s *Store) ackCommitter() { s.commitLoop(s.acks) }
