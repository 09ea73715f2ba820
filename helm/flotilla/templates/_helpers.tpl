{{/* The release's full name, at most 63 characters. */}}
{{- define "flotilla.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "flotilla.selectorLabels" -}}
app.kubernetes.io/name: flotilla-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "flotilla.labels" -}}
{{ include "flotilla.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "flotilla.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "flotilla.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The rules the reconciler needs, exactly the calls it makes:
- RaftClusters: watched (list, watch) and read by name (a Topic's
  cluster); status written by server-side apply.
- Topics: watched; their finalizer added and removed by JSON patch; status
  written by server-side apply.
- The objects it owns: applied server-side (create for the first apply,
  patch after); StatefulSets also read and watched.
- Pods and data volumes: listed; deleted one at a time (a rolling update's
  pod, a removed member's volume).
- Events: published, and patched when they repeat.
*/}}
{{- define "flotilla.reconcilerRules" -}}
- apiGroups: ["flotilla.dev"]
  resources: ["raftclusters"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["flotilla.dev"]
  resources: ["topics"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["flotilla.dev"]
  resources: ["raftclusters/status", "topics/status"]
  verbs: ["patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["pods", "persistentvolumeclaims"]
  verbs: ["list", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
