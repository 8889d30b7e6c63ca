{{- define "tails-server.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tails-server.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "tails-server.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Where tails files live: s3 (the pod keeps an emptyDir), emptyDir, once (a ReadWriteOnce volume) or shared. */}}
{{- define "tails-server.volume" -}}
{{- if .Values.s3.url -}}s3
{{- else if not .Values.persistence.enabled -}}emptyDir
{{- else if or (has "ReadWriteOnce" .Values.persistence.accessModes) (has "ReadWriteOncePod" .Values.persistence.accessModes) -}}once
{{- else -}}shared
{{- end -}}
{{- end -}}
