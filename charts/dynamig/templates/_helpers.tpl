{{/* Chart name. */}}
{{- define "dynamig.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name prefix of every resource (truncated so that suffixes fit in 63 characters). */}}
{{- define "dynamig.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "dynamig.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "dynamig.labels" -}}
helm.sh/chart: {{ include "dynamig.chart" . }}
{{ include "dynamig.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels (add app.kubernetes.io/component per workload). */}}
{{- define "dynamig.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dynamig.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Resource names. */}}
{{- define "dynamig.scheduler.fullname" -}}{{ include "dynamig.fullname" . }}-scheduler{{- end }}
{{- define "dynamig.extender.serviceName" -}}{{ include "dynamig.fullname" . }}-extender{{- end }}
{{- define "dynamig.metrics.serviceName" -}}{{ include "dynamig.fullname" . }}-metrics{{- end }}
{{- define "dynamig.devicePlugin.fullname" -}}{{ include "dynamig.fullname" . }}-device-plugin{{- end }}
{{- define "dynamig.deviceConfig.name" -}}{{ include "dynamig.fullname" . }}-device-config{{- end }}
{{- define "dynamig.nodeConfig.name" -}}{{ include "dynamig.fullname" . }}-nodeconfig{{- end }}
{{- define "dynamig.schedulerConfig.name" -}}{{ include "dynamig.fullname" . }}-scheduler-config{{- end }}
{{- define "dynamig.tls.secretName" -}}{{ include "dynamig.fullname" . }}-tls{{- end }}
{{- define "dynamig.webhook.name" -}}{{ include "dynamig.fullname" . }}-webhook{{- end }}

{{- define "dynamig.scheduler.serviceAccountName" -}}
{{- default (include "dynamig.scheduler.fullname" .) .Values.serviceAccount.scheduler.name }}
{{- end }}

{{- define "dynamig.devicePlugin.serviceAccountName" -}}
{{- default (include "dynamig.devicePlugin.fullname" .) .Values.serviceAccount.devicePlugin.name }}
{{- end }}

{{- define "dynamig.scheduler.leaseName" -}}
{{- default .Values.schedulerName .Values.scheduler.leaseName }}
{{- end }}

{{/* The dynamig image. */}}
{{- define "dynamig.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* kube-scheduler image; the tag defaults to the cluster's version vX.Y.Z (build suffixes dropped). */}}
{{- define "dynamig.kubeScheduler.image" -}}
{{- $img := .Values.scheduler.kubeScheduler.image }}
{{- $tag := $img.tag }}
{{- if not $tag }}
{{- $tag = regexFind "^v[0-9]+\\.[0-9]+\\.[0-9]+" .Capabilities.KubeVersion.Version }}
{{- end }}
{{- if not $tag }}
{{- fail (printf "cannot derive a kube-scheduler tag from the cluster version %q: set scheduler.kubeScheduler.image.tag" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- printf "%s:%s" $img.repository $tag }}
{{- end }}

{{/* TLS is on whenever the webhook is (the API server only calls webhooks over HTTPS). */}}
{{- define "dynamig.tls.enabled" -}}
{{- if .Values.webhook.enabled }}true{{ end }}
{{- end }}

{{/* DNS names of the extender Service, for its serving certificate. */}}
{{- define "dynamig.extender.dnsNames" -}}
{{- $svc := include "dynamig.extender.serviceName" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{/*
HAMi's chart value names, so that a HAMi values file keeps working (docs/migrating-from-hami.md).
resourceName, resourceMem, resourceMemPercentage, resourceCores and resourcePriority are aliases of
resourceNames.*: when set they win. The resolved names as JSON: include ... | fromJson.
*/}}
{{- define "dynamig.resourceNames" -}}
{{- $r := .Values.resourceNames -}}
{{- $out := dict "priority" (.Values.resourcePriority | default "nvidia.com/priority") -}}
{{- range $hami, $key := dict "resourceName" "gpu" "resourceMem" "gpumem" "resourceMemPercentage" "gpumemPercentage" "resourceCores" "gpucores" -}}
{{- $_ := set $out $key ((index $.Values $hami) | default (index $r $key)) -}}
{{- end -}}
{{- toJson $out -}}
{{- end }}

{{/*
HAMi values dynamig has no equivalent for under that name: fail with the key to use instead (the
schema lets them through so that this message, not a bare schema error, is what the user reads).
*/}}
{{- define "dynamig.hamiValues" -}}
{{- $dp := .Values.devicePlugin -}}
{{- if hasKey $dp "nvidianodeSelector" -}}
{{- fail "devicePlugin.nvidianodeSelector is HAMi's name: set devicePlugin.nodeSelector instead" -}}
{{- end -}}
{{- if and (hasKey $dp "deviceMemoryScaling") (ne (toString $dp.deviceMemoryScaling) "1") -}}
{{- fail "devicePlugin.deviceMemoryScaling: dynamig scales memory per node: set nodeConfig[].devicememoryscaling (HAMi's nodeconfig key) instead" -}}
{{- end -}}
{{- if and (hasKey $dp "deviceCoreScaling") (ne (toString $dp.deviceCoreScaling) "1") -}}
{{- fail "devicePlugin.deviceCoreScaling is not supported by dynamig (a GPU's cores are 100%); remove it or set 1" -}}
{{- end -}}
{{- $ks := .Values.scheduler.kubeScheduler -}}
{{- if hasKey $ks "imageTag" -}}
{{- fail "scheduler.kubeScheduler.imageTag is HAMi's name: set scheduler.kubeScheduler.image.tag instead" -}}
{{- end -}}
{{- with .Values.scheduler.defaultSchedulerPolicy -}}
{{- if or (ne (.nodeSchedulerPolicy | default "binpack") "binpack") (ne (.gpuSchedulerPolicy | default "spread") "spread") -}}
{{- fail "scheduler.defaultSchedulerPolicy: dynamig's defaults are HAMi's (node binpack, GPU spread) and fixed; choose per pod with the annotations hami.io/node-scheduler-policy and hami.io/gpu-scheduler-policy" -}}
{{- end -}}
{{- end -}}
{{- end }}
