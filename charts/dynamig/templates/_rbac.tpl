{{- /*
The Kubernetes permissions of each component, in one place: exactly the verbs that the code uses.
tests/test_chart.py compares the rendered Roles and ClusterRoles with its EXPECTED_RBAC constant;
change both together, and only when the code's API calls change.

The extender and kube-scheduler are two containers of one pod, so they share the scheduler
ServiceAccount: it is bound to both sets of rules.
*/ -}}

{{/* extender, cluster-wide: planning reads pods and nodes, writes allocation annotations, binds; the
webhook reads a pod's namespace for the dynamig.io/webhook=ignore label. */}}
{{- define "dynamig.rbac.extender.clusterRules" -}}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: [""]
  resources: ["pods/binding"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
{{- end }}

{{/* extender, release namespace: its own leader-election Lease. */}}
{{- define "dynamig.rbac.extender.namespaceRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}

{{/* kube-scheduler, release namespace: its leader-election Lease (the standard system:kube-scheduler
ClusterRole only covers the Lease named kube-scheduler). Create cannot be limited by name. */}}
{{- define "dynamig.rbac.kubeScheduler.namespaceRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "dynamig.scheduler.leaseName" . | quote }}]
  verbs: ["get", "update"]
{{- end }}

{{/* kube-scheduler: the standard roles it is bound to (everything else it needs is in them). */}}
{{- define "dynamig.rbac.kubeScheduler.clusterRoles" -}}
- system:kube-scheduler
- system:volume-scheduler
{{- end }}

{{/* kube-scheduler: reads the extension-apiserver-authentication ConfigMap in kube-system for
request authentication, through this standard Role there. */}}
{{- define "dynamig.rbac.kubeScheduler.authReaderRole" -}}
extension-apiserver-authentication-reader
{{- end }}

{{/* device plugin, cluster-wide: finds the pod being allocated and patches its allocation state;
publishes its GPUs in a node annotation and releases the node lock; tells a pod why it got no device
(an Event). RBAC cannot name "my node": the patches are narrowed to the plugin's own node and the
pods bound to it, and to its own annotation keys, by the ValidatingAdmissionPolicies
(admission-policy.yaml) and the webhook (docs/security.md). */}}
{{- define "dynamig.rbac.devicePlugin.clusterRules" -}}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
