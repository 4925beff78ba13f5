{{/*
Names and labels shared by every template. Kept here so a rename touches one place.
*/}}

{{- define "cpt-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or just <release> when the release name already contains the chart name
(`helm install cpt-operator ...` gives "cpt-operator", not "cpt-operator-cpt-operator").
*/}}
{{- define "cpt-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "cpt-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: immutable on a Deployment, so they never include the version. */}}
{{- define "cpt-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cpt-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Standard labels (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/). */}}
{{- define "cpt-operator.labels" -}}
helm.sh/chart: {{ include "cpt-operator.chart" . }}
{{ include "cpt-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: cpt-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "cpt-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cpt-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}: a digest wins (immutable), else the tag, else appVersion,
so the operator, learner and rollout images of one chart release always match.
Usage: include "cpt-operator.image" (dict "image" .Values.image "root" .)
*/}}
{{- define "cpt-operator.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/*
Namespaces the operator watches and gets a Role in: watchNamespaces, else the release namespace. Empty only in
the cluster-wide opt-in (clusterWide: true), where one ClusterRole grants the same rules everywhere.
Emitted as JSON so callers get a real list back (fromJsonArray).
*/}}
{{- define "cpt-operator.watchedNamespaces" -}}
{{- if .Values.clusterWide }}
{{- if .Values.watchNamespaces }}
{{- fail "clusterWide: true watches every namespace; leave watchNamespaces empty (or set clusterWide: false)" }}
{{- end }}
{{- toJson (list) }}
{{- else }}
{{- toJson (default (list .Release.Namespace) .Values.watchNamespaces) }}
{{- end }}
{{- end }}
