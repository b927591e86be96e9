package sinks

import (
	tmplhtml "html/template"
	"runtime"
	"strings"
	"sync"
	tmpltext "text/template"
	"weak"

	"github.com/prometheus/alertmanager/template"
)

// Alertmanager's Template.ExecuteTextString clones the whole template set
// (every default and user template) and parses the text again on every
// call. A PagerDuty event renders about ten texts, so that clone was a
// third of a delivery's CPU. FromGlobs below keeps a handle on the set's
// text templates; ExecuteText then parses each text once and executes the
// parsed copy, which text/template allows concurrently.

// maxCachedTexts bounds the parsed texts kept per template set. Texts come
// from the configuration, so the bound is only a guard.
const maxCachedTexts = 4096

type textCache struct {
	set   *tmpltext.Template
	once  sync.Once
	slow  bool // some template calls routeLabels, which is bound per render
	mu    sync.Mutex
	texts map[string]parsedText
}

// shipped is Alertmanager's own template set (template/default.tmpl), as
// FromGlobs loads it before any user file.
var shipped = sync.OnceValue(func() *tmpltext.Template {
	var set *tmpltext.Template
	if _, err := template.FromGlobs(nil, func(text *tmpltext.Template, _ *tmplhtml.Template) { set = text }); err != nil {
		return nil
	}
	return set
})

// Shipped reports whether t came from FromGlobs and each named template in
// it is still the one Alertmanager ships: no user template file redefined
// it. A sink may then render it with Go code that gives the same output,
// as long as FromGlobs' options added functions of their own names only
// (alertfan's one, backlog.TemplateFuncs, does): an option may also
// replace text/template's builtins (len, urlquery …), which the parse
// trees do not show. With no names, it reports whether t came from
// FromGlobs.
func Shipped(t *template.Template, names ...string) bool {
	v, ok := textCaches.Load(weak.Make(t))
	if !ok || shipped() == nil {
		return false
	}
	set := v.(*textCache).set
	for _, name := range names {
		mine, theirs := set.Lookup(name), shipped().Lookup(name)
		if mine == nil || theirs == nil || mine.Tree == nil || theirs.Tree == nil ||
			mine.Tree.Root.String() != theirs.Tree.Root.String() {
			return false
		}
	}
	return true
}

type parsedText struct {
	t   *tmpltext.Template
	err error
}

// textCaches maps a template set to its cache; an entry goes when its set
// is collected (a reload builds a new set).
var textCaches sync.Map // weak.Pointer[template.Template] → *textCache

// FromGlobs is template.FromGlobs, with the set registered for ExecuteText.
func FromGlobs(paths []string, options ...template.Option) (*template.Template, error) {
	var set *tmpltext.Template
	// Parse and ParseGlob return their receiver, so the text template an
	// option sees is the set for good.
	opts := append(append([]template.Option(nil), options...), func(text *tmpltext.Template, _ *tmplhtml.Template) { set = text })
	t, err := template.FromGlobs(paths, opts...)
	if err != nil {
		return nil, err
	}
	key := weak.Make(t)
	textCaches.Store(key, &textCache{set: set, texts: map[string]parsedText{}})
	runtime.AddCleanup(t, func(k weak.Pointer[template.Template]) { textCaches.Delete(k) }, key)
	return t, nil
}

// ExecuteText renders text like t.ExecuteTextString — same functions,
// missingkey=zero, same output and errors — but parses each text only once
// when t came from FromGlobs and no template uses routeLabels (whose
// resolver Alertmanager binds per render); otherwise it calls
// t.ExecuteTextString. t must not be changed after its first render.
func ExecuteText(t *template.Template, text string, data any) (string, error) {
	if text == "" {
		return "", nil
	}
	v, ok := textCaches.Load(weak.Make(t))
	if !ok || strings.Contains(text, "routeLabels") {
		return t.ExecuteTextString(text, data)
	}
	c := v.(*textCache)
	c.once.Do(func() { c.slow = usesRouteLabels(c.set) })
	if c.slow {
		return t.ExecuteTextString(text, data)
	}
	p, ok := c.parsed(text)
	if !ok {
		return t.ExecuteTextString(text, data)
	}
	if p.err != nil {
		return "", p.err
	}
	var b strings.Builder
	err := p.t.Execute(&b, data)
	return b.String(), err
}

// parsed returns text parsed into a clone of the set, as Alertmanager
// parses it; false when the cache is full.
func (c *textCache) parsed(text string) (parsedText, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.texts[text]; ok {
		return p, true
	}
	if len(c.texts) >= maxCachedTexts {
		return parsedText{}, false
	}
	var p parsedText
	clone, err := c.set.Clone()
	if err == nil {
		clone, err = clone.New("").Option("missingkey=zero").Parse(text)
	}
	p.t, p.err = clone, err
	c.texts[text] = p
	return p, true
}

func usesRouteLabels(set *tmpltext.Template) bool {
	for _, t := range set.Templates() {
		if t.Tree != nil && t.Tree.Root != nil && strings.Contains(t.Tree.Root.String(), "routeLabels") {
			return true
		}
	}
	return false
}
