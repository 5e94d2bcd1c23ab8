{{/* Names and labels. */}}
{{- define "vfq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vfq.fullname" -}}
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

{{- define "vfq.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "vfq.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "vfq.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vfq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The server pods (the helm test pod shares name and instance but not this component). */}}
{{- define "vfq.serverSelectorLabels" -}}
{{ include "vfq.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "vfq.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vfq.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@sha256:... when a digest is pinned. */}}
{{- define "vfq.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end }}
{{- end }}

{{/* The in-cluster gRPC address of the Service. */}}
{{- define "vfq.grpcAddress" -}}
{{- printf "%s.%s.svc:8001" (include "vfq.fullname" .) .Release.Namespace }}
{{- end }}

{{/* "true" when TensorRT plans are built at start-up: gpu target, ONNX repository on image or PVC. */}}
{{- define "vfq.buildPlans" -}}
{{- if and (eq .Values.target "gpu") .Values.planBuild.enabled (ne .Values.modelRepository.source "objectStore") }}true{{ end }}
{{- end }}

{{/* Where the repository to build plans from (or to serve, without a plan build) is. */}}
{{- define "vfq.sourceRepository" -}}
{{- $source := .Values.modelRepository.source }}
{{- if eq $source "objectStore" }}
{{- .Values.modelRepository.objectStore.url }}
{{- else if eq $source "pvc" }}
{{- "/models" }}
{{- else if eq .Values.target "cpu" }}
{{- "/opt/vfq/model_repository_cpu" }}
{{- else }}
{{- "/opt/vfq/model_repository" }}
{{- end }}
{{- end }}

{{/* The repository Triton serves. */}}
{{- define "vfq.servedRepository" -}}
{{- if include "vfq.buildPlans" . }}
{{- "/plan-cache/model_repository" }}
{{- else }}
{{- include "vfq.sourceRepository" . }}
{{- end }}
{{- end }}

{{/* The protocols that need the admin key, and the flag value that restricts them. */}}
{{- define "vfq.restrictedProtocols" -}}
{{- printf "model-repository,model-config,shared-memory,statistics,trace,logging:%s=$(VFQ_ADMIN_KEY)" .Values.server.adminKey.header }}
{{- end }}

{{/* The model-level health check, run inside the server's container (vfq-health, gRPC on loopback). */}}
{{- define "vfq.healthCommand" -}}
- vfq-health
- --url
- 127.0.0.1:8001
- --model
- vertebra_pipeline
- --timeout
- "3"
{{- range splitList " " (include "vfq.tlsClientFlags" .) | compact }}
- {{ . }}
{{- end }}
{{- end }}

{{/* The TLS options of vfq-health and vfq analyze (vfq.client.tls), space-separated; empty without
TLS. With mutual TLS the client presents the server's own pair, read from the mounted Secret. */}}
{{- define "vfq.tlsClientFlags" -}}
{{- if .Values.tls.enabled -}}
--ssl --root-certificates /etc/vfq/grpc-tls/ca.crt --ssl-target-name {{ printf "%s.%s.svc" (include "vfq.fullname" .) .Release.Namespace }}
{{- if .Values.tls.mutual }} --private-key /etc/vfq/grpc-tls/tls.key --certificate-chain /etc/vfq/grpc-tls/tls.crt{{ end }}
{{- end -}}
{{- end }}

{{/* A Kubernetes LabelSelector from values (matchLabels / matchExpressions). */}}
{{- define "vfq.labelSelector" -}}
{{- if .matchLabels }}
matchLabels:
  {{- toYaml .matchLabels | nindent 2 }}
{{- end }}
{{- if .matchExpressions }}
matchExpressions:
  {{- toYaml .matchExpressions | nindent 2 }}
{{- end }}
{{- if not (or .matchLabels .matchExpressions) }}
{}
{{- end }}
{{- end }}

{{/* Cross-field rules the schema cannot state; each failure says what to change. */}}
{{- define "vfq.validate" -}}
{{- $v := .Values }}
{{- if and (eq $v.modelRepository.source "pvc") (not $v.modelRepository.pvc.claimName) }}
{{- fail "modelRepository.source is pvc: set modelRepository.pvc.claimName to an existing PersistentVolumeClaim" }}
{{- end }}
{{- if and (eq $v.modelRepository.source "objectStore") (not $v.modelRepository.objectStore.url) }}
{{- fail "modelRepository.source is objectStore: set modelRepository.objectStore.url (s3://... or gs://...)" }}
{{- end }}
{{- if and $v.tls.enabled (not $v.tls.secretName) }}
{{- fail "tls.enabled: set tls.secretName to an existing Secret with tls.crt, tls.key and ca.crt" }}
{{- end }}
{{- if and $v.tls.enabled $v.server.http.enabled }}
{{- fail "tls.enabled with server.http.enabled: Triton's HTTP endpoint has no TLS, so it would serve inference in plaintext beside TLS gRPC; turn one off" }}
{{- end }}
{{- if and (eq (toString $v.rollingUpdate.maxSurge) "0") (eq (toString $v.rollingUpdate.maxUnavailable) "0") }}
{{- fail "rollingUpdate: maxSurge and maxUnavailable cannot both be 0" }}
{{- end }}
{{- if and $v.tls.mutual (not $v.tls.enabled) }}
{{- fail "tls.mutual needs tls.enabled" }}
{{- end }}
{{- if and (eq $v.server.trace.mode "opentelemetry") (ne $v.server.trace.level "OFF") (not $v.server.trace.opentelemetryUrl) }}
{{- fail "server.trace.mode is opentelemetry: set server.trace.opentelemetryUrl" }}
{{- end }}
{{- if lt (mul $v.probes.startup.periodSeconds $v.probes.startup.failureThreshold) 1200 }}
{{- fail (printf "probes.startup allows %d s (periodSeconds x failureThreshold); loading the repository needs at least 1200" (mul $v.probes.startup.periodSeconds $v.probes.startup.failureThreshold)) }}
{{- end }}
{{- if and $v.autoscaling.enabled (lt (int $v.autoscaling.maxReplicas) (int $v.autoscaling.minReplicas)) }}
{{- fail "autoscaling.maxReplicas must not be below autoscaling.minReplicas" }}
{{- end }}
{{- $managed := list "--model-repository" "--model-store" "--model-control-mode" "--strict-readiness" "--exit-timeout-secs" "--allow-http" "--allow-grpc" "--allow-metrics" "--allow-gpu-metrics" "--grpc-port" "--http-port" "--metrics-port" "--grpc-restricted-protocol" "--http-restricted-api" "--grpc-use-ssl" "--grpc-use-ssl-mutual" "--grpc-server-cert" "--grpc-server-key" "--grpc-root-cert" "--trace-config" "--trace-level" "--trace-rate" "--trace-file" "--log-verbose" "--load-model" }}
{{- range $arg := $v.server.extraArgs }}
{{- $flag := regexReplaceAll "=.*$" $arg "" }}
{{- if has $flag $managed }}
{{- fail (printf "server.extraArgs: %s is set by the chart; use its own value instead" $flag) }}
{{- end }}
{{- end }}
{{- end }}

{{/* CPU and memory from values; the GPU from gpu.count on the gpu target only. */}}
{{- define "vfq.containerResources" -}}
{{- $limits := deepCopy (default dict .Values.resources.limits) }}
{{- if eq .Values.target "gpu" }}
{{- $_ := set $limits "nvidia.com/gpu" (int .Values.gpu.count) }}
{{- end }}
{{- with .Values.resources.requests }}
requests:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $limits }}
limits:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The same locked-down context for every container of the chart. */}}
{{- define "vfq.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}
