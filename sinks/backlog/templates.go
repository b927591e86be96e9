package backlog

// DefaultTemplates are loaded after Alertmanager's defaults; a user's
// template files may redefine them. The data is Alertmanager's template.Data
// holding the one alert. Output is Backlog markdown.
const DefaultTemplates = `
{{ define "backlog.default.summary" }}{{ with .CommonLabels.severity }}[{{ . | toUpper }}] {{ end }}{{ .CommonLabels.alertname }}{{ with .CommonLabels.instance }} on {{ . }}{{ end }}{{ with .CommonAnnotations.summary }}: {{ . }}{{ end }}{{ end }}

{{ define "backlog.default.description" }}{{ range .Alerts }}## {{ .Labels.alertname }}

* **Status:** {{ .Status }}
* **Severity:** {{ or .Labels.severity "none" }}
* **Started:** {{ .StartsAt.UTC.Format "2006-01-02 15:04:05 UTC" }}
{{ if .GeneratorURL }}* **Source:** [{{ .GeneratorURL }}]({{ .GeneratorURL }})
{{ end }}{{ with .Annotations.summary }}
**Summary:** {{ . }}
{{ end }}{{ with .Annotations.description }}
{{ . }}
{{ end }}
### Labels

| Label | Value |
|---|---|
{{ range .Labels.SortedPairs }}| {{ .Name }} | {{ .Value }} |
{{ end }}{{ if .Annotations }}
### Annotations

| Annotation | Value |
|---|---|
{{ range .Annotations.SortedPairs }}| {{ .Name }} | {{ .Value }} |
{{ end }}{{ end }}{{ end }}{{ end }}
`
