{{- /*
The trust model's wiring (docs/security.md): the allocation key Secret mounted into the extender and
every device plugin, and the exact identities the webhook and the admission policy trust.
*/ -}}

{{- define "dynamig.allocationKey.secretName" -}}
{{- .Values.allocationKey.existingSecret | default (printf "%s-allocation-key" (include "dynamig.fullname" .)) -}}
{{- end }}

{{- define "dynamig.allocationKey.mountPath" -}}/etc/dynamig/allocation-key{{- end }}

{{- define "dynamig.allocationKey.file" -}}
{{ include "dynamig.allocationKey.mountPath" . }}/{{ .Values.allocationKey.secretKey }}
{{- end }}

{{/* The users Kubernetes authenticates each component's ServiceAccount as. */}}
{{- define "dynamig.extender.user" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "dynamig.scheduler.serviceAccountName" . }}
{{- end }}
{{- define "dynamig.devicePlugin.user" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "dynamig.devicePlugin.serviceAccountName" . }}
{{- end }}

{{/* Extender command-line arguments (one list item per line). */}}
{{- define "dynamig.trust.extenderArgs" -}}
- --allocation-key-file
- {{ include "dynamig.allocationKey.file" . | quote }}
- --trusted-user
- {{ include "dynamig.extender.user" . | quote }}
- --node-agent-user
- {{ include "dynamig.devicePlugin.user" . | quote }}
{{- end }}

{{- define "dynamig.trust.pluginArgs" -}}
- --allocation-key-file
- {{ include "dynamig.allocationKey.file" . | quote }}
{{- end }}

{{- define "dynamig.trust.volumeMount" -}}
- name: allocation-key
  mountPath: {{ include "dynamig.allocationKey.mountPath" . }}
  readOnly: true
{{- end }}

{{- define "dynamig.trust.volume" -}}
- name: allocation-key
  secret:
    secretName: {{ include "dynamig.allocationKey.secretName" . }}
    # readable by the extender's non-root user; only the containers that mount it see it
    defaultMode: 0444
    items:
      - key: {{ .Values.allocationKey.secretKey }}
        path: {{ .Values.allocationKey.secretKey }}
{{- end }}

{{/* Render the ValidatingAdmissionPolicies? auto: when the cluster (or helm template
--kube-version) is at least 1.30, where admissionregistration.k8s.io/v1 has them. */}}
{{- define "dynamig.admissionPolicy.enabled" -}}
{{- $v := .Values.admissionPolicy.enabled | toString -}}
{{- if eq $v "true" -}}true
{{- else if and (eq $v "auto") (semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version) -}}true
{{- end -}}
{{- end }}
