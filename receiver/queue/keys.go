package queue

import (
	"crypto/sha256"
	"encoding/hex"
	"unicode/utf8"
)

// MaxKeyBytes is the longest key, in bytes, that the store keeps as it is.
// A work item's key is indexed with its target id beside it (the state's
// primary key, the Backlog issue record's, dead letters, history), and
// PostgreSQL refuses a B-tree index entry over 2,704 bytes
// (https://www.postgresql.org/docs/current/btree.html#BTREE-IMPLEMENTATION):
// the write, and with it every request sharing the commit, would fail.
// Alert identities are far shorter; an Alertmanager group key is not
// (group_by: ['...'] puts every label in it).
const MaxKeyBytes = 2048

// keyPrefixBytes is how much of a longer key its stored form keeps, so
// that the status page and the logs still show which group it is.
const keyPrefixBytes = 1024

// StoreKey is the form in which the store keeps and indexes a work item's
// key (an alert identity, or an Alertmanager group key in group mode): the
// key itself when it has at most MaxKeyBytes bytes — so every key stored
// before longer ones were accepted keeps its state, issue and history —
// else its first 1,024 bytes or fewer (cut where a UTF-8 character
// starts), "…sha256:" and the hex sha256 of the whole key, at most 1,098
// bytes. Two long keys share a stored form only if they share their
// sha256.
//
// Only the store's keys take this form: the payload keeps the whole key,
// so what a destination is sent is made from it (PagerDuty group mode's
// dedup_key is the hex sha256 of the whole group key, as Alertmanager's).
func StoreKey(key string) string {
	if len(key) <= MaxKeyBytes {
		return key
	}
	cut := keyPrefixBytes
	for cut > 0 && !utf8.RuneStart(key[cut]) {
		cut--
	}
	sum := sha256.Sum256([]byte(key))
	return key[:cut] + "…sha256:" + hex.EncodeToString(sum[:])
}
