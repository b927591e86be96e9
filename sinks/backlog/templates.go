package backlog

// DefaultTemplates are loaded after Alertmanager's defaults; a user's
// template files may redefine them. The data is Data: Alertmanager's
// template.Data (one alert in alert mode, the group in group mode) plus the
// project's TextFormattingRule and, in group mode, how many alerts the
// message left out (Truncated). Every value that comes from an alert goes
// through backlogEscape or backlogCell, so newlines, "|", "*", "#" or HTML
// in labels and annotations cannot break the layout in either notation.
const DefaultTemplates = `
{{ define "backlog.default.summary" }}{{ with .CommonLabels.severity }}[{{ . | toUpper }}] {{ end }}{{ .CommonLabels.alertname }}{{ with .CommonLabels.instance }} on {{ . }}{{ end }}{{ with .CommonAnnotations.summary }}: {{ . }}{{ end }}{{ if gt (len .Alerts) 1 }} ({{ len .Alerts.Firing }} firing){{ end }}{{ end }}

{{ define "backlog.default.description" }}{{ if .Markdown }}{{ template "backlog.default.description.markdown" . }}{{ else }}{{ template "backlog.default.description.backlog" . }}{{ end }}{{ end }}

{{ define "backlog.default.description.markdown" }}{{ if or (gt (len .Alerts) 1) .Truncated }}**{{ len .Alerts.Firing }} firing, {{ len .Alerts.Resolved }} resolved{{ with .Truncated }}, {{ . }} not listed (max_alerts){{ end }}**

{{ end }}{{ range .Alerts }}## {{ backlogEscape (or .Labels.alertname "alert") }}

* **Status:** {{ .Status }}
* **Severity:** {{ backlogEscape (or .Labels.severity "none") }}
* **Started:** {{ .StartsAt.UTC.Format "2006-01-02 15:04:05 UTC" }}
{{ if eq .Status "resolved" }}* **Ended:** {{ .EndsAt.UTC.Format "2006-01-02 15:04:05 UTC" }}
{{ end }}{{ if .GeneratorURL }}* **Source:** <{{ backlogURL .GeneratorURL }}>
{{ end }}{{ with .Annotations.summary }}
**Summary:** {{ backlogEscape . }}
{{ end }}{{ with .Annotations.description }}
{{ backlogEscape . }}
{{ end }}
### Labels

| Label | Value |
|---|---|
{{ range .Labels.SortedPairs }}| {{ backlogCell .Name }} | {{ backlogCell .Value }} |
{{ end }}{{ if .Annotations }}
### Annotations

| Annotation | Value |
|---|---|
{{ range .Annotations.SortedPairs }}| {{ backlogCell .Name }} | {{ backlogCell .Value }} |
{{ end }}{{ end }}
{{ end }}{{ end }}

{{ define "backlog.default.description.backlog" }}{{ if or (gt (len .Alerts) 1) .Truncated }}''{{ len .Alerts.Firing }} firing, {{ len .Alerts.Resolved }} resolved{{ with .Truncated }}, {{ . }} not listed (max_alerts){{ end }}''

{{ end }}{{ range .Alerts }}** {{ backlogEscape (or .Labels.alertname "alert") }}

- ''Status:'' {{ .Status }}
- ''Severity:'' {{ backlogEscape (or .Labels.severity "none") }}
- ''Started:'' {{ .StartsAt.UTC.Format "2006-01-02 15:04:05 UTC" }}
{{ if eq .Status "resolved" }}- ''Ended:'' {{ .EndsAt.UTC.Format "2006-01-02 15:04:05 UTC" }}
{{ end }}{{ if .GeneratorURL }}- ''Source:'' {{ backlogURL .GeneratorURL }}
{{ end }}{{ with .Annotations.summary }}
''Summary:'' {{ backlogEscape . }}
{{ end }}{{ with .Annotations.description }}
{{ backlogEscape . }}
{{ end }}
*** Labels

|Label|Value|h
{{ range .Labels.SortedPairs }}|{{ backlogCell .Name }}|{{ backlogCell .Value }}|
{{ end }}{{ if .Annotations }}
*** Annotations

|Annotation|Value|h
{{ range .Annotations.SortedPairs }}|{{ backlogCell .Name }}|{{ backlogCell .Value }}|
{{ end }}{{ end }}
{{ end }}{{ end }}

{{ define "backlog.default.repeat" }}Still firing at {{ .Now.Format "2006-01-02 15:04:05 UTC" }}.{{ end }}

{{ define "backlog.default.acknowledged" }}Acknowledged by the sender at {{ .Now.Format "2006-01-02 15:04:05 UTC" }}.{{ end }}

{{ define "backlog.default.resolved" }}Resolved at {{ .ResolvedAt.Format "2006-01-02 15:04:05 UTC" }}.{{ end }}

{{ define "backlog.default.refire" }}Firing again at {{ .FiringSince.Format "2006-01-02 15:04:05 UTC" }}.{{ end }}
`
