{{/* Names */}}
{{- define "kubepay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubepay.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>", e.g. include "kubepay.componentName" (list $ "controller") */}}
{{- define "kubepay.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "kubepay.fullname" $root | trunc 50 | trimSuffix "-") (index . 1) -}}
{{- end -}}

{{- define "kubepay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: include "kubepay.labels" (list $ "controller") */}}
{{- define "kubepay.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "kubepay.chart" $root }}
{{ include "kubepay.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: kubepay
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "kubepay.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "kubepay.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "kubepay.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* ServiceAccount name: include "kubepay.serviceAccountName" (list $ "controller") */}}
{{- define "kubepay.serviceAccountName" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $sa := (index $root.Values $component).serviceAccount -}}
{{- if $sa.create -}}
{{- default (include "kubepay.componentName" .) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the credentials: the user's existingSecret or the one this chart creates. */}}
{{- define "kubepay.secretName" -}}
{{- default (include "kubepay.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{- define "kubepay.peeringEnabled" -}}
{{- if or .Values.controller.peering.enabled (gt (int .Values.controller.replicas) 1) -}}true{{- end -}}
{{- end -}}

{{- define "kubepay.peeringName" -}}
{{- default (include "kubepay.fullname" .) .Values.controller.peering.name -}}
{{- end -}}

{{/*
Required values: rendering stops with one message naming the value and how to set it.
Included by every workload template.
*/}}
{{- define "kubepay.validate" -}}
{{- if not .Values.kafka.brokers -}}
{{- fail "kubepay: kafka.brokers is required (bootstrap servers, e.g. --set kafka.brokers=kafka.example.svc:9092)" -}}
{{- end -}}
{{- if not .Values.existingSecret -}}
{{- if not .Values.stripe.secretKey -}}
{{- fail "kubepay: stripe.secretKey is required (sk_test_... or sk_live_...), or set existingSecret to a Secret holding STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET and DATABASE_URL" -}}
{{- end -}}
{{- if not .Values.stripe.webhookSecret -}}
{{- fail "kubepay: stripe.webhookSecret is required (the endpoint's whsec_... signing secret; `stripe listen` prints one), or set existingSecret" -}}
{{- end -}}
{{- if and (not .Values.database.url) (not .Values.database.host) -}}
{{- fail "kubepay: database.url (postgresql://user:password@host:5432/db) or database.host is required, or set existingSecret to a Secret holding DATABASE_URL" -}}
{{- end -}}
{{- if and .Values.api.enabled (eq .Values.api.auth.mode "token") (not .Values.api.token) -}}
{{- fail "kubepay: api.token is required when api.enabled is true and api.auth.mode is token (or set existingSecret to a Secret holding KUBEPAY_API_TOKEN, or choose api.auth.mode serviceaccount)" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.api.enabled (eq .Values.api.auth.mode "none") (not .Values.api.auth.allowedClientLabels) -}}
{{- fail "kubepay: api.auth.allowedClientLabels must name at least one label when api.auth.mode is none (the NetworkPolicy admits only pods with these labels)" -}}
{{- end -}}
{{- if and .Values.admission.certManager.enabled (not .Values.admission.enabled) -}}
{{- fail "kubepay: admission.certManager.enabled needs admission.enabled" -}}
{{- end -}}
{{- end -}}

{{/*
Database settings: include "kubepay.databaseEnv" (dict "root" $ "secret" NAME "optional" BOOL)
DATABASE_URL wins over the POSTGRES_* variables (kubepay's configuration rule).
*/}}
{{- define "kubepay.databaseEnv" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- if or $v.existingSecret $v.database.url }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ $v.secretKeys.databaseUrl }}
      {{- if $v.existingSecret }}
      optional: true
      {{- end }}
{{- end }}
{{- if $v.database.host }}
- name: POSTGRES_HOST
  value: {{ $v.database.host | quote }}
- name: POSTGRES_PORT
  value: {{ $v.database.port | quote }}
- name: POSTGRES_USER
  value: {{ $v.database.user | quote }}
- name: POSTGRES_DB
  value: {{ $v.database.name | quote }}
{{- if or $v.existingSecret $v.database.password }}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ $v.secretKeys.postgresPassword }}
      {{- if $v.existingSecret }}
      optional: true
      {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Settings every kubepay process reads. */}}
{{- define "kubepay.commonEnv" -}}
- name: SRV_ENV
  value: {{ .Values.environment | quote }}
- name: KUBEPAY_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: KUBEPAY_MIGRATE_ON_START
  value: {{ .Values.migrateOnStart | quote }}
- name: KUBEPAY_MIGRATIONS_DIR
  value: /app/migrations
{{- end -}}

{{/*
Per-component extensions, one mechanism for the Deployments and the migration Job; COMPONENT is the values key
(controller, receiver, api, migration) and VALUES its values.
*/}}

{{/* Pod template metadata: include "kubepay.podMetadata" (dict "root" $ "component" COMPONENT "values" VALUES
"container" NAME "checksum" BOOL). The chart's labels and annotations win over podLabels and podAnnotations, so
these can never change the Deployment's selector. */}}
{{- define "kubepay.podMetadata" -}}
{{- $labels := include "kubepay.labels" (list .root .component) | fromYaml -}}
{{- $annotations := dict "kubectl.kubernetes.io/default-container" .container -}}
{{- if .checksum -}}
{{- $annotations = merge $annotations (include "kubepay.secretChecksum" .root | fromYaml | default dict) -}}
{{- end -}}
labels:
  {{- toYaml (merge $labels (.values.podLabels | default dict)) | nindent 2 }}
annotations:
  {{- toYaml (merge $annotations (.values.podAnnotations | default dict)) | nindent 2 }}
{{- end -}}

{{/* Container env entries: the global extraEnv, then the component's: include "kubepay.extraEnv" (list $ VALUES) */}}
{{- define "kubepay.extraEnv" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- $own := $c.extraEnv | default list -}}
{{- $names := list -}}
{{- range $own }}{{ $names = append $names .name }}{{ end -}}
{{- $merged := list -}}
{{- range ($root.Values.extraEnv | default list) }}
{{- if not (has .name $names) }}{{ $merged = append $merged . }}{{ end }}
{{- end }}
{{- /* A name in both: the component's wins (a duplicate would be refused by a server-side apply, Helm 4's way). */ -}}
{{- with concat $merged $own }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The container's envFrom, only when the component sets extraEnvFrom: include "kubepay.envFrom" VALUES */}}
{{- define "kubepay.envFrom" -}}
{{- with .extraEnvFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* List entries appended after the chart's own (extraVolumes, extraVolumeMounts): include "kubepay.extraItems" LIST */}}
{{- define "kubepay.extraItems" -}}
{{- with . }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod-level scheduling and security, shared by the Deployments and the Job. */}}
{{- define "kubepay.podCommon" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
A CRD file rendered as a release object: include "kubepay.crd" (list $ BYTES COMPONENT KEEP). Its own labels
stay, the chart's are added; KEEP adds helm.sh/resource-policy: keep, so `helm uninstall` leaves the CRD (and
every object of its kind) in place.
*/}}
{{- define "kubepay.crd" -}}
{{- $root := index . 0 -}}
{{- $crd := index . 1 | toString | fromYaml -}}
{{- $labels := merge (include "kubepay.labels" (list $root (index . 2)) | fromYaml) ($crd.metadata.labels | default dict) -}}
{{- $_ := set $crd.metadata "labels" $labels -}}
{{- if index . 3 -}}
{{- $_ := set $crd.metadata "annotations" (merge (dict "helm.sh/resource-policy" "keep") ($crd.metadata.annotations | default dict)) -}}
{{- end -}}
{{ toYaml $crd }}
{{- end -}}

{{/* Checksum of the chart-made Secret, so pods restart when credentials change. */}}
{{- define "kubepay.secretChecksum" -}}
{{- if not .Values.existingSecret -}}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end -}}
{{- end -}}

{{/* The NetworkPolicy rule that lets networkPolicy.metricsFrom (empty: anyone) scrape a pod's `metrics` port. */}}
{{- define "kubepay.metricsIngress" -}}
- ports:
    - port: metrics
      protocol: TCP
  {{- with .Values.networkPolicy.metricsFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
