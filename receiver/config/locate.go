package config

import (
	"bytes"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v2"
	yaml3 "go.yaml.in/yaml/v3"
)

// unmarshalerType is yaml.v2's Unmarshaler: the types that validate
// themselves (durations, secrets, every config section with defaults).
var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// locate finds where in the file a value that fails its own validation
// stands. yaml.v2 gives the line of a syntax or type error, but an error
// that an UnmarshalYAML returns (a duration "7days", a mode that does not
// exist) comes without one, and often without the key it belongs to
// ("not a valid duration string: \"10\"", with twenty duration keys in a
// config). locate reads the file as nodes (yaml.v3 keeps their lines),
// walks them beside the Config type, and decodes each value whose type
// validates itself on its own, deepest first: the first that fails with
// the same message is the one. It returns its line (1-based) and its path
// ("delivery.max_backoff", "receivers[1].backlog_configs[0].reopen_within"),
// or 0 and "" when no single value fails that way (a rule across values,
// such as a route naming a receiver that does not exist).
func locate(b []byte, err error) (int, string) {
	var root yaml3.Node
	if yaml3.Unmarshal(b, &root) != nil || len(root.Content) == 0 {
		return 0, ""
	}
	msg := err.Error()
	var line int
	var where string
	var walk func(n *yaml3.Node, t reflect.Type, path string) bool
	walk = func(n *yaml3.Node, t reflect.Type, path string) bool {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch {
		case n.Kind == yaml3.MappingNode && t.Kind() == reflect.Struct:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i].Value
				if ft, ok := yamlField(t, k); ok && walk(n.Content[i+1], ft, joinPath(path, k)) {
					return true
				}
			}
		case n.Kind == yaml3.MappingNode && t.Kind() == reflect.Map:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if walk(n.Content[i+1], t.Elem(), joinPath(path, n.Content[i].Value)) {
					return true
				}
			}
		case n.Kind == yaml3.SequenceNode && t.Kind() == reflect.Slice:
			for i, c := range n.Content {
				if walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)) {
					return true
				}
			}
		}
		if path == "" || !reflect.PointerTo(t).Implements(unmarshalerType) {
			return false
		}
		out, err := yaml3.Marshal(n)
		if err != nil {
			return false
		}
		if err := yaml.UnmarshalStrict(out, reflect.New(t).Interface()); err != nil && strings.Contains(msg, err.Error()) {
			line, where = n.Line, path
			// A section's check names the key it refuses first
			// ("mode: …"): the key's own line, not the section's first.
			if k, _, ok := strings.Cut(err.Error(), ": "); ok && n.Kind == yaml3.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == k {
						line = n.Content[i].Line
					}
				}
			}
			return true
		}
		return false
	}
	walk(root.Content[0], reflect.TypeOf(Config{}), "")
	if line == 0 {
		// A check across values names the one it refuses by its path
		// ("route.routes[0].matchers[0]: …"): find that path's line.
		if m := leadingPath.FindString(msg); m != "" {
			line = lineOf(root.Content[0], strings.TrimSuffix(m, ": "))
		}
	}
	return line, where
}

// leadingPath matches an error that starts with a YAML path and ": ".
var leadingPath = regexp.MustCompile(`^[a-z_]+(?:\.[a-z_]+|\[\d+\])*: `)

// pathSegment is one step of a path: a key, or an index in brackets.
var pathSegment = regexp.MustCompile(`[a-z_]+|\[\d+\]`)

// lineOf is the line of the node at path ("route.routes[0].matchers[0]")
// below n, or 0 when there is none.
func lineOf(n *yaml3.Node, path string) int {
	for _, seg := range pathSegment.FindAllString(path, -1) {
		var next *yaml3.Node
		switch {
		case strings.HasPrefix(seg, "[") && n.Kind == yaml3.SequenceNode:
			if i, err := strconv.Atoi(strings.Trim(seg, "[]")); err == nil && i < len(n.Content) {
				next = n.Content[i]
			}
		case n.Kind == yaml3.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == seg {
					next = n.Content[i+1]
				}
			}
		}
		if next == nil {
			return 0
		}
		n = next
	}
	return n.Line
}

// hasLine reports whether a YAML error already gives a line ("line 3: …").
var hasLine = regexp.MustCompile(`\bline \d+: `)

// yamlField is the type of the struct field a YAML key names (its yaml
// tag's name, or the lowercased field name as yaml.v2 takes it), looking
// into inlined structs.
func yamlField(t reflect.Type, key string) (reflect.Type, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			if ft, ok := yamlField(f.Type, key); ok {
				return ft, true
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		if name == key {
			return f.Type, true
		}
	}
	return nil, false
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// secondDocument is the line where a second YAML document starts in b, or
// 0: yaml.v2 reads the first and silently drops the rest.
func secondDocument(b []byte) int {
	dec := yaml3.NewDecoder(bytes.NewReader(b))
	var first, second yaml3.Node
	if dec.Decode(&first) != nil || dec.Decode(&second) != nil {
		return 0
	}
	return second.Line
}
