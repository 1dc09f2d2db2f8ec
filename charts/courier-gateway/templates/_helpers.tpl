{{/* The chart name, or nameOverride. */}}
{{- define "courier-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<name>, or the release name alone when it already contains the chart name. */}}
{{- define "courier-gateway.fullname" -}}
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

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "courier-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object the chart creates. */}}
{{- define "courier-gateway.labels" -}}
helm.sh/chart: {{ include "courier-gateway.chart" . }}
{{ include "courier-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels of the release. Workloads add app.kubernetes.io/component: the gateway pods the
operator creates carry the same name label with instance=<gateway name>, so a selector without a
component could match them when the gateway is named like the release.
*/}}
{{- define "courier-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "courier-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's service account. */}}
{{- define "courier-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-operator" (include "courier-gateway.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The courier-gateway image: repository@digest when image.digest is set (the digest pins it, the tag
is ignored), else repository:tag (tag defaults to the appVersion).
*/}}
{{- define "courier-gateway.image" -}}
{{- $registry := (.Values.global).imageRegistry }}
{{- $repository := ternary (printf "%s/%s" $registry .Values.image.repository) .Values.image.repository (not (empty $registry)) }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* imagePullSecrets, then global.imagePullSecrets (an umbrella chart's), as a YAML list. */}}
{{- define "courier-gateway.imagePullSecrets" -}}
{{- $secrets := concat (.Values.imagePullSecrets | default list) ((.Values.global).imagePullSecrets | default list) }}
{{- toYaml (uniq $secrets) }}
{{- end }}

{{/*
Annotations of the custom resources the chart creates (the CourierGateway, the kopf peering):
on the first install their CRDs are created by the same release, and Helm maps every object of a
release before it applies any, so these are created by a post-install hook instead, carrying
Helm's ownership metadata: the next `helm upgrade` adopts them as ordinary release objects.
*/}}
{{- define "courier-gateway.customResourceAnnotations" -}}
{{- if and .Release.IsInstall .Values.crds.install }}
helm.sh/hook: post-install
helm.sh/hook-weight: "-5"
meta.helm.sh/release-name: {{ .Release.Name }}
meta.helm.sh/release-namespace: {{ .Release.Namespace }}
{{- end }}
{{- end }}

{{/* The CourierGateway created by the chart: its name and image. */}}
{{- define "courier-gateway.gatewayName" -}}
{{- default (include "courier-gateway.fullname" .) .Values.gateway.name }}
{{- end }}

{{- define "courier-gateway.gatewayImage" -}}
{{- default (include "courier-gateway.image" .) .Values.gateway.image }}
{{- end }}

{{/*
The Secret and key holding the Redis URL: the existing Secret, else the one the chart writes for
the in-cluster Redis. Fails when the gateway is enabled with neither (or both), except in sentinel
mode, where the URL is optional (credentials, database and TLS only): nothing is rendered then.
*/}}
{{- define "courier-gateway.redisSecretRef" -}}
{{- if and .Values.redis.existingSecret .Values.redis.inCluster.enabled }}
{{- fail "redis: set either redis.existingSecret or redis.inCluster.enabled, not both" }}
{{- else if .Values.redis.existingSecret }}
name: {{ .Values.redis.existingSecret }}
key: {{ .Values.redis.existingSecretKey }}
{{- else if .Values.redis.inCluster.enabled }}
name: {{ include "courier-gateway.fullname" . }}-redis
key: url
{{- else if ne .Values.gateway.redis.mode "sentinel" }}
{{- fail "gateway.enabled needs a Redis: set redis.existingSecret or redis.inCluster.enabled (or gateway.redis.mode sentinel with gateway.redis.sentinels)" }}
{{- end }}
{{- end }}

{{- define "courier-gateway.mongoSecretRef" -}}
{{- if and .Values.mongo.existingSecret .Values.mongo.inCluster.enabled }}
{{- fail "mongo: set either mongo.existingSecret or mongo.inCluster.enabled, not both" }}
{{- else if .Values.mongo.existingSecret }}
name: {{ .Values.mongo.existingSecret }}
key: {{ .Values.mongo.existingSecretKey }}
{{- else if .Values.mongo.inCluster.enabled }}
name: {{ include "courier-gateway.fullname" . }}-mongo
key: uri
{{- else }}
{{- fail "gateway.enabled needs a MongoDB: set mongo.existingSecret or mongo.inCluster.enabled" }}
{{- end }}
{{- end }}

{{/* Labels of the gateway pods, as the operator sets them (name, component; any instance). */}}
{{- define "courier-gateway.gatewayPodName" -}}
app.kubernetes.io/name: courier-gateway
{{- end }}

{{/*
The operator's permissions: the one place they are written (ClusterRole or per-namespace Roles).
Keep them equal to what the operator's code uses (tests/delivery checks the list).
*/}}
{{- define "courier-gateway.operatorRules" -}}
# Equal to PERMISSIONS in operator/courier_operator/rbac.py (a test keeps them equal).
# The custom resources it reconciles, and their status.
- apiGroups: [gateway.courier.dev]
  resources: [couriergateways, replayrequests]
  verbs: [get, list, watch, patch]
- apiGroups: [gateway.courier.dev]
  resources: [couriergateways/status, replayrequests/status]
  verbs: [patch]
# kopf peering: one replica at a time handles resources.
- apiGroups: [kopf.dev]
  resources: [kopfpeerings, clusterkopfpeerings]
  verbs: [get, list, watch, patch]
# What it creates and owns for each gateway and replay: written by server-side apply (a patch,
# which also creates).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, patch]
- apiGroups: [""]
  resources: [services, configmaps, secrets]
  verbs: [get, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, patch, delete]
# kopf posts Events about the resources it handles.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/*
What the pre-delete cleanup Job may do: equal to CLEANUP_PERMISSIONS in
operator/courier_operator/rbac.py (a test keeps them equal).
*/}}
{{- define "courier-gateway.cleanupRules" -}}
- apiGroups: [gateway.courier.dev]
  resources: [couriergateways]
  verbs: [get, delete]
{{- end }}

{{/*
The monitors' namespaceSelector: monitoring.namespaceSelector, else where the operator works
(every namespace, or operator.watchNamespaces).
*/}}
{{- define "courier-gateway.monitorNamespaces" -}}
{{- if .Values.monitoring.namespaceSelector }}
{{- toYaml .Values.monitoring.namespaceSelector }}
{{- else if .Values.operator.watchNamespaces }}
matchNames: {{ toJson .Values.operator.watchNamespaces }}
{{- else }}
any: true
{{- end }}
{{- end }}

{{/*
The ConfigMap of custom adapters: the one named in values, else the chart's own when files are
given, else nothing.
*/}}
{{- define "courier-gateway.adaptersConfigMap" -}}
{{- $adapters := .Values.gateway.adapters | default dict -}}
{{- if $adapters.configMapName -}}
{{- $adapters.configMapName -}}
{{- else if $adapters.files -}}
{{- printf "%s-adapters" (include "courier-gateway.gatewayName" .) -}}
{{- end -}}
{{- end }}
