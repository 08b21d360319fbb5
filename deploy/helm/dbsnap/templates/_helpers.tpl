{{/* The release's full name, cut to the 52 characters a CronJob's name may have. */}}
{{- define "dbsnap.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dbsnap.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "dbsnap.serviceAccountName" -}}
{{- default (include "dbsnap.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "dbsnap.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The app's namespace: its own, else the release's. */}}
{{- define "dbsnap.appNamespace" -}}
{{- default .Release.Namespace .Values.app.namespace -}}
{{- end -}}

{{/* Whether the jobs go through jump pods. */}}
{{- define "dbsnap.jump" -}}
{{- if and .Values.app.workload (eq .Values.app.via "jump") -}}true{{- end -}}
{{- end -}}

{{/* Whether the jobs talk to the Kubernetes API at all. */}}
{{- define "dbsnap.usesCluster" -}}
{{- if .Values.app.workload -}}true{{- end -}}
{{- end -}}

{{/* dbsnap.toml: the target, the repository, encryption, retention. */}}
{{- define "dbsnap.config" -}}
{{- if and .Values.app.workload .Values.databases -}}
{{- fail "set app.workload (databases found in the app) or databases (connection strings), not both" -}}
{{- end -}}
{{- if and .Values.app.workload .Values.drill.enabled .Values.drill.server -}}
{{- fail "drill.server applies to databases on an external server; with app.workload the scratch databases go on the app's own servers (leave drill.server empty)" -}}
{{- end -}}
{{- if not (has .Values.app.via (list "direct" "jump")) -}}
{{- fail (printf "app.via is %q: direct or jump" .Values.app.via) -}}
{{- end -}}
# Rendered by the dbsnap chart; see docs/guide/config.md.
repo = {{ .Values.repository.url | toJson }}

[targets.{{ .Values.target | toJson }}]
{{- with .Values.databases }}
databases = {{ toJson . }}
{{- end }}
checks = {{ toJson (.Values.checks | default list) }}
{{- if .Values.create.scale }}
consistency = "quiesce"
{{- end }}
{{- with .Values.app.workload }}

[targets.{{ $.Values.target | toJson }}.k8s]
workload = {{ toJson . }}
namespace = {{ include "dbsnap.appNamespace" $ | toJson }}
{{- if include "dbsnap.jump" $ }}
image = {{ default (include "dbsnap.image" $) $.Values.app.jumpImage | toJson }}
{{- end }}
{{- with $.Values.app.container }}
container = {{ toJson . }}
{{- end }}
{{- with $.Values.create.scale }}
scale = {{ toJson . }}
{{- end }}
{{- end }}
{{- with .Values.encryption.recipients }}

[encryption]
recipients = {{ toJson . }}
{{- end }}

[prune]
{{- range $rule := list "last" "hourly" "daily" "weekly" "monthly" "yearly" }}
{{- with (index $.Values.prune.keep $rule) }}
keep_{{ $rule }} = {{ . }}
{{- end }}
{{- end }}
{{- with .Values.prune.keep.within }}
keep_within = {{ toJson . }}
{{- end }}
{{- end -}}

{{/* The dbsnap command line of one job. */}}
{{- define "dbsnap.args" -}}
{{- $job := .job -}}
{{- $v := .root.Values -}}
{{- $args := list "--config" "/etc/dbsnap/dbsnap.toml" $job "--target" $v.target -}}
{{- if and $v.app.workload (ne $job "prune") -}}
{{- $args = concat $args (list "--via" $v.app.via) -}}
{{- end -}}
{{- if eq $job "create" -}}
{{- $args = append $args "--no-progress" -}}
{{- if $v.create.objects -}}
{{- $args = append $args "--k8s-objects" -}}
{{- if $v.create.includeSecrets -}}
{{- $args = append $args "--include-secrets" -}}
{{- end -}}
{{- end -}}
{{- else if eq $job "prune" -}}
{{- $args = append $args "--yes" -}}
{{- else if eq $job "drill" -}}
{{- $args = append $args "--no-progress" -}}
{{- with $v.drill.server -}}
{{- $args = concat $args (list "--server" .) -}}
{{- end -}}
{{- end -}}
{{- toJson $args -}}
{{- end -}}
