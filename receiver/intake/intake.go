// Package intake owns turning what senders post — Alertmanager webhooks,
// PagerDuty Events API v2 events, Mackerel webhooks — into the alert model
// that routing and sinks consume. Decoders never panic and never accept half
// a body: they either return every alert or an error naming the bad field.
package intake

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/common/model"

	"github.com/alertfan/alertfan/sinks"
)

// Inputs, as used in metrics and in sinks.Source.Input.
const (
	InputAlertmanager = "alertmanager"
	InputPagerDuty    = "pagerduty"
	InputMackerel     = "mackerel"
)

// FieldError is a validation error about one field of a body.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// Errors is every problem found in one body.
type Errors []*FieldError

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Byte caps of the fields that become an alert's identity and have no cap
// of their own (a fingerprint has 64 characters, a dedup_key PagerDuty's
// 255). PostgreSQL refuses a B-tree index entry over 2,704 bytes
// (https://www.postgresql.org/docs/current/btree.html#BTREE-IMPLEMENTATION),
// and these are indexed with the target id beside them. An Alertmanager
// groupKey has none: the store indexes a bounded form of it
// (queue.StoreKey).
const (
	// MaxIDBytes caps a Mackerel alert or alert group id.
	MaxIDBytes = 255
)

// checkKeyText refuses, in a field that becomes an alert's identity or a
// delivery's key (a fingerprint, a group key, a dedup key, a Mackerel id),
// a NUL (U+0000) and, when maxBytes > 0, more than maxBytes bytes. Those
// are stored as indexed text, and PostgreSQL refuses both NUL in text and
// an index entry over 2,704 bytes: the write, and with it the request,
// would fail with a 503 at every retry instead of a 400 naming the field.
// JSON allows NUL (\u0000); no sender uses it.
func checkKeyText(field, s string, maxBytes int) Errors {
	var errs Errors
	if strings.IndexByte(s, 0) >= 0 {
		errs = append(errs, fieldErr(field, "must not contain NUL (U+0000)"))
	}
	if maxBytes > 0 && len(s) > maxBytes {
		errs = append(errs, fieldErr(field, "longer than %d bytes", maxBytes))
	}
	return errs
}

// decodeJSON decodes strictly enough to name the field a type error is in,
// and refuses trailing data so that two concatenated bodies are not taken
// as one.
func decodeJSON(body []byte, v any) error {
	if len(body) == 0 {
		return fieldErr("", "empty body")
	}
	if !utf8.Valid(body) {
		return fieldErr("", "body is not valid UTF-8")
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			// encoding/json names the field without array indexes or
			// map keys (alerts.labels); the sender needs which one.
			if p := valuePathOf(body, te.Field, te.Value); p != "" {
				te.Field = p
			}
		}
		return jsonError(err)
	}
	if dec.More() {
		return fieldErr("", "unexpected data after the JSON object")
	}
	return nil
}

// JSONStep is one key or value WalkJSON visits.
type JSONStep struct {
	// Path is the value's, as alerts[0].labels.instance; for a key, the
	// path of the value it names.
	Path string
	// Parent is the path of the object a key belongs to.
	Parent string
	Key    bool
	Token  json.Token
	// Raw is the token's bytes in the body, with the separators before it.
	Raw []byte
}

// WalkJSON visits every key and value of body in order (closing
// delimiters excepted) until visit returns false or the JSON ends or
// breaks.
func WalkJSON(body []byte, visit func(JSONStep) bool) {
	type frame struct {
		obj     bool
		key     string
		idx     int
		wantKey bool
	}
	var stack []*frame
	// pathOf is the path of the value the innermost of frames is at.
	pathOf := func(frames []*frame) string {
		var b strings.Builder
		for _, f := range frames {
			if f.obj {
				if b.Len() > 0 {
					b.WriteByte('.')
				}
				b.WriteString(f.key)
			} else {
				fmt.Fprintf(&b, "[%d]", f.idx)
			}
		}
		return b.String()
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	for {
		start := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return
		}
		raw := body[start:dec.InputOffset()]
		var t *frame
		if len(stack) > 0 {
			t = stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && stack[len(stack)-1].obj {
				stack[len(stack)-1].wantKey = true
			}
			continue
		}
		if k, ok := tok.(string); ok && t != nil && t.obj && t.wantKey {
			t.key, t.wantKey = k, false
			if !visit(JSONStep{Path: pathOf(stack), Parent: pathOf(stack[:len(stack)-1]), Key: true, Token: tok, Raw: raw}) {
				return
			}
			continue
		}
		if t != nil && !t.obj {
			t.idx++
		}
		if !visit(JSONStep{Path: pathOf(stack), Token: tok, Raw: raw}) {
			return
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{obj: true, wantKey: true})
		case json.Delim('['):
			stack = append(stack, &frame{idx: -1})
		default:
			if t != nil && t.obj {
				t.wantKey = true
			}
		}
	}
}

var arrayIndex = regexp.MustCompile(`\[\d+\]`)

// valuePathOf is the path, as alerts[17].labels.replicas, of the first
// JSON value of body that encoding/json names field (alerts.labels: no
// array indexes, no map keys) and whose kind is kind (an
// UnmarshalTypeError's Value: "number", "object", …); "" when none is.
// The error's Offset is no help: within a type's own UnmarshalJSON it
// counts from that value's start. A map element named by its key
// (alerts.labels.replicas) is what the error means when there is one;
// the value at field itself only when there is none (labels that are an
// array).
func valuePathOf(body []byte, field, kind string) string {
	kindOf := func(tok json.Token) string {
		switch tok.(type) {
		case json.Delim:
			if tok == json.Delim('{') {
				return "object"
			}
			return "array"
		case string:
			return "string"
		case float64, json.Number:
			return "number"
		case bool:
			return "bool"
		}
		return "null"
	}
	exact, found := "", ""
	WalkJSON(body, func(st JSONStep) bool {
		if st.Key || kindOf(st.Token) != kind {
			return true
		}
		bare := arrayIndex.ReplaceAllString(st.Path, "")
		switch {
		case strings.HasPrefix(bare, field+".") && !strings.Contains(bare[len(field)+1:], "."):
			found = st.Path
			return false
		case bare == field && exact == "":
			exact = st.Path
		}
		return true
	})
	if found != "" {
		return found
	}
	return exact
}

func jsonError(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "(root)"
		}
		return fieldErr(field, "must be %s, got JSON %s", goTypeName(te.Type.String()), te.Value)
	case errors.As(err, &se):
		return fieldErr("", "invalid JSON at byte %d: %s", se.Offset, se.Error())
	case errors.Is(err, errUnexpectedEOF()):
		return fieldErr("", "truncated JSON")
	default:
		return fieldErr("", "invalid JSON: %s", err.Error())
	}
}

func errUnexpectedEOF() error {
	var v any
	return json.Unmarshal([]byte("{"), &v)
}

func goTypeName(t string) string {
	switch {
	case t == "intake.mackerelRole":
		return "a role object or a role name"
	case strings.HasPrefix(t, "intake."), strings.HasPrefix(t, "sinks."):
		return "an object"
	case strings.HasPrefix(t, "map["):
		return "an object"
	case strings.HasPrefix(t, "[]"):
		return "an array"
	case t == "string":
		return "a string"
	case strings.HasPrefix(t, "uint"):
		return "a whole number, 0 or more"
	case strings.HasPrefix(t, "int"):
		return "a whole number"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "bool":
		return "a boolean"
	case strings.HasPrefix(t, "time."):
		return "an RFC 3339 time string"
	default:
		return "an object"
	}
}

// checkLabels validates label names and values the way Alertmanager does
// (UTF-8 names are allowed since Alertmanager 0.27).
func checkLabels(field string, ls map[string]string, required bool) Errors {
	var errs Errors
	if required && len(ls) == 0 {
		errs = append(errs, fieldErr(field, "at least one label is required"))
	}
	for _, k := range slices.Sorted(maps.Keys(ls)) {
		if !model.UTF8Validation.IsValidLabelName(k) || k == "" {
			errs = append(errs, fieldErr(field, "invalid label name %q", sinks.Abbreviate(k, 64)))
			continue
		}
		if !utf8.ValidString(ls[k]) {
			errs = append(errs, fieldErr(field+"."+k, "value is not valid UTF-8"))
		}
	}
	return errs
}
