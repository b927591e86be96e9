package pagerduty

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"unicode/utf8"

	"github.com/prometheus/alertmanager/template"
)

// renderDetail is Alertmanager's template.DeepCopyWithTemplate with one
// shortcut. Alertmanager renders each string and parses the result as YAML,
// so that a detail rendering to a list or an object is sent as one; the
// default details render the alerts with toJson, and that YAML parse was
// the largest cost of a delivery after the template clone. A result that is
// a JSON object or array of strings, booleans and nulls decodes to the
// same value as YAML would give, so it is decoded as JSON; everything else
// (numbers, which YAML 1.1 reads differently, duplicate keys, runes YAML
// does not print, plain text) goes through Alertmanager's own code.
func renderDetail(value any, render func(string) (string, error)) (any, error) {
	if value == nil {
		return nil, nil
	}
	v := reflect.ValueOf(value)
	switch v.Kind() {
	case reflect.String:
		s, err := render(v.String())
		if err != nil {
			return s, err
		}
		if j, ok := jsonDetail(s); ok {
			return j, nil
		}
		// The text is rendered already: Alertmanager parses it as it is.
		return template.DeepCopyWithTemplate(s, func(t string) (string, error) { return t, nil })
	case reflect.Array, reflect.Slice:
		out := make([]any, v.Len())
		for i := range out {
			var err error
			if out[i], err = renderDetail(v.Index(i).Interface(), render); err != nil {
				return nil, err
			}
		}
		return out, nil
	case reflect.Map:
		out := make(map[string]any, v.Len())
		for _, k := range v.MapKeys() {
			key, ok := k.Interface().(string)
			if !ok {
				continue
			}
			key, err := render(key)
			if err != nil {
				return nil, err
			}
			if out[key], err = renderDetail(v.MapIndex(k).Interface(), render); err != nil {
				return nil, err
			}
		}
		return out, nil
	default:
		return value, nil
	}
}

var errNotPlain = errors.New("not a plain JSON document")

// jsonDetail decodes s when it is a JSON object or array whose leaves are
// strings, booleans and nulls, without duplicate keys, and every rune is
// one YAML accepts; false otherwise.
func jsonDetail(s string) (any, bool) {
	if len(s) == 0 || (s[0] != '{' && s[0] != '[') || !yamlPrintable(s) {
		return nil, false
	}
	d := json.NewDecoder(bytes.NewReader([]byte(s)))
	d.UseNumber()
	v, err := plainValue(d)
	if err != nil {
		return nil, false
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, false
	}
	return v, true
}

func plainValue(d *json.Decoder) (any, error) {
	t, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch t := t.(type) {
	case json.Delim:
		switch t {
		case '{':
			m := map[string]any{}
			for d.More() {
				k, err := d.Token()
				if err != nil {
					return nil, err
				}
				key, _ := k.(string)
				if _, dup := m[key]; dup {
					return nil, errNotPlain
				}
				if m[key], err = plainValue(d); err != nil {
					return nil, err
				}
			}
			_, err := d.Token() // '}'
			return m, err
		case '[':
			l := []any{}
			for d.More() {
				v, err := plainValue(d)
				if err != nil {
					return nil, err
				}
				l = append(l, v)
			}
			_, err := d.Token() // ']'
			return l, err
		}
		return nil, errNotPlain
	case string, bool, nil:
		return t, nil
	default: // json.Number
		return nil, errNotPlain
	}
}

// yamlPrintable reports whether every rune of s is one YAML 1.1 (and
// yaml.v2) accepts in a document.
func yamlPrintable(s string) bool {
	for _, r := range s {
		if !yamlRune(r) {
			return false
		}
	}
	return true
}

// yamlRune is one rune of yamlPrintable.
func yamlRune(r rune) bool {
	switch {
	case r == utf8.RuneError:
		return false
	case r == 0x0A, r >= 0x20 && r <= 0x7E, r == 0x85, r >= 0xA0 && r <= 0xD7FF,
		r >= 0xE000 && r <= 0xFFFD && r != 0xFEFF, r >= 0x10000 && r <= 0x10FFFF:
		return true
	}
	return false
}
